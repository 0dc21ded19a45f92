"""Keypoint error diagnosis for multi-person pose estimation: what keeps COCO keypoint AP down.

Follows the taxonomy of Ronchi & Perona (ICCV 2017, "Benchmarking and Error Diagnosis in Multi-Instance Pose
Estimation", Sec. 3.1). Every detection that COCOeval matches to a ground-truth person at a low OKS (0.1) has each
of that person's labelled joints put in one class by its keypoint similarity
``ks = exp(-d² / (2 · area · (2σ)²))`` (the per-joint term of OKS) against every joint of every person in the image,
and against the left/right-mirrored labels of each person:

* **good**: closest to the right joint of the matched person, ``ks >= good_ks`` (0.85);
* **jitter**: closest to the right joint, ``jitter_ks <= ks < good_ks`` (a small localisation error);
* **inversion**: closest to the matched person's mirrored joint (left and right confused), ``ks >= jitter_ks``;
* **swap**: closest to a joint of another person (a grouping error), ``ks >= jitter_ks``;
* **miss**: ``ks < jitter_ks`` against everything (a large localisation error).

Each class is then corrected in the detections and AP recomputed, which says how much AP each error type costs:
a jitter joint moves to the distance where ``ks = good_ks``, a miss to the distance where ``ks = jitter_ks``, an
inversion or swap keeps its localisation error but measured from the right joint (same ks), always along the
original error direction. Corrections are applied one type alone and cumulatively in the order miss, swap,
inversion, jitter (as the original analysis); AP is COCO's primary figure (OKS 0.50:0.05:0.95), not the single
OKS threshold of the original tool.

References:
    M. R. Ronchi and P. Perona, ICCV 2017; the coco-analyze tool (github.com/matteorr/coco-analyze), whose class
        definitions this module follows; its code is not used.
    COCO keypoint evaluation, https://cocodataset.org/#keypoints-eval.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ldm.metrics.pose_ap import MAX_DETS, PoseSample, build_coco, run_coco_eval, silenced
from ldm.pose.keypoints import COCO_FLIP_INDEX, COCO_KEYPOINT_NAMES, COCO_OKS_SIGMAS

__all__ = ["ERROR_METRIC_NAMES", "ERROR_TYPES", "KeypointErrorReport", "analyze_keypoint_errors", "pose_error_metrics"]

# Correction order of the cumulative study (as in the original analysis).
ERROR_TYPES: tuple[str, ...] = ("miss", "swap", "inversion", "jitter")
_CLASSES = ("good", *ERROR_TYPES)
# Flat metric names of :func:`pose_error_metrics` (share of labelled joints per class, AP with a type corrected).
ERROR_METRIC_NAMES: tuple[str, ...] = (
    *(f"joints {name}" for name in ("good", "jitter", "inversion", "swap", "miss")),
    *(f"AP fixed {name}" for name in ERROR_TYPES),
    "AP fixed all",
)


@dataclass(frozen=True)
class KeypointErrorReport:
    """Result of :func:`analyze_keypoint_errors`.

    Attributes:
        counts: labelled joints of matched persons per class (``good``, ``jitter``, ``inversion``, ``swap``,
            ``miss``).
        counts_by_joint: the same per keypoint index (one list of counts per class).
        ap: COCO keypoint AP of the detections as they are.
        ap_fixed_alone: AP with only that error type corrected.
        ap_fixed_cumulative: AP with that type and every type before it in :data:`ERROR_TYPES` corrected.
        matched_detections: detections matched to a person at OKS >= ``match_oks``.
        detections: all detections. persons: ground-truth persons with at least one labelled joint.
        unmatched_persons: persons without a matched detection (false negatives at ``match_oks``).
    """

    counts: dict[str, int]
    counts_by_joint: dict[str, list[int]]
    ap: float
    ap_fixed_alone: dict[str, float]
    ap_fixed_cumulative: dict[str, float]
    matched_detections: int
    detections: int
    persons: int
    unmatched_persons: int
    fractions: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        total = sum(self.counts.values())
        object.__setattr__(self, "fractions", {k: (v / total if total else 0.0) for k, v in self.counts.items()})

    def as_dict(self, digits: int = 4, keypoint_names: Sequence[str] = COCO_KEYPOINT_NAMES) -> dict[str, object]:
        """JSON-ready summary, figures rounded; per-keypoint counts keyed by name (by index if the count differs)."""
        per_joint = len(next(iter(self.counts_by_joint.values()), []))
        names = list(keypoint_names) if len(keypoint_names) == per_joint else [str(i) for i in range(per_joint)]
        r = lambda d: {k: round(v, digits) for k, v in d.items()}  # noqa: E731
        return {
            "ap": round(self.ap, digits),
            "ap_fixed_alone": r(self.ap_fixed_alone),
            "ap_fixed_cumulative": r(self.ap_fixed_cumulative),
            "joint_counts": dict(self.counts),
            "joint_fractions": r(self.fractions),
            "joint_counts_by_keypoint": {k: dict(zip(names, v, strict=True)) for k, v in self.counts_by_joint.items()},
            "detections": self.detections,
            "matched_detections": self.matched_detections,
            "persons": self.persons,
            "unmatched_persons": self.unmatched_persons,
        }


def _keypoints(annotation: dict) -> np.ndarray:
    return np.asarray(annotation["keypoints"], dtype=np.float64).reshape(-1, 3)


def _match(gt: COCO, dt: COCO, oks: float, sigmas: np.ndarray, max_dets: int) -> dict[int, int]:
    """Detection id -> matched ground-truth id, COCOeval's greedy matching at one OKS threshold, all areas."""
    evaluator = COCOeval(gt, dt, iouType="keypoints")
    evaluator.params.kpt_oks_sigmas = sigmas
    evaluator.params.iouThrs = np.array([oks])
    evaluator.params.maxDets = [max_dets]
    evaluator.params.areaRng, evaluator.params.areaRngLbl = [[0.0, 1e10]], ["all"]
    with silenced():
        evaluator.evaluate()
    matches = {}
    for entry in evaluator.evalImgs:
        if entry is None:
            continue
        for dt_id, gt_id in zip(entry["dtIds"], entry["dtMatches"][0], strict=True):
            if gt_id > 0:
                matches[int(dt_id)] = int(gt_id)
    return matches


def _classify(
    detection: np.ndarray,
    target: dict,
    others: Sequence[dict],
    sigmas: np.ndarray,
    flip: np.ndarray,
    good_ks: float,
    jitter_ks: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-joint class index into ``_CLASSES`` (-1: unlabelled) and corrected positions of one matched detection."""
    people = [target, *others]
    n = len(people)
    rows, visible, areas = [], [], []
    for mirrored in (False, True):
        for person in people:
            kpts = _keypoints(person)
            if mirrored:
                kpts = kpts[flip]
            rows.append(kpts[:, :2])
            visible.append(kpts[:, 2] > 0)
            areas.append(float(person["area"]))
    rows_arr, vis_arr = np.stack(rows), np.stack(visible)
    area_arr = np.asarray(areas)[:, None] + np.spacing(1)
    sq = ((rows_arr - detection[None, :, :2]) ** 2).sum(-1)
    ks = np.where(vis_arr, np.exp(-sq / (2 * area_arr * (2 * sigmas[None]) ** 2)), -1.0)
    best, argbest = ks.max(0), ks.argmax(0)

    labelled = vis_arr[0]
    cls = np.full(len(sigmas), -1)
    cls[labelled & (best < jitter_ks)] = _CLASSES.index("miss")
    near = labelled & (best >= jitter_ks)
    cls[near & (argbest == 0) & (best >= good_ks)] = _CLASSES.index("good")
    cls[near & (argbest == 0) & (best < good_ks)] = _CLASSES.index("jitter")
    cls[near & (argbest == n)] = _CLASSES.index("inversion")
    cls[near & (argbest != 0) & (argbest != n)] = _CLASSES.index("swap")

    # Corrected position: the ground truth joint plus a displacement along the original error direction whose
    # length gives the target ks against the matched person: ks = exp(-d² / (2 A (2σ)²)) -> d = 2σ sqrt(-2 A ln ks).
    target_ks = np.where(
        cls == _CLASSES.index("jitter"), good_ks, np.where(cls == _CLASSES.index("miss"), jitter_ks, best)
    )
    target_ks = np.clip(target_ks, 1e-12, 1.0)
    distance = 2 * sigmas * np.sqrt(-2 * float(target["area"]) * np.log(target_ks))
    gt_xy = rows_arr[0]
    offset = detection[:, :2] - gt_xy
    norm = np.linalg.norm(offset, axis=1, keepdims=True)
    direction = np.where(norm > 0, offset / np.maximum(norm, 1e-12), np.array([[1.0, 0.0]]))
    corrected = gt_xy + direction * distance[:, None]
    return cls, corrected


def analyze_keypoint_errors(
    gt: COCO,
    dt: COCO,
    *,
    sigmas: Sequence[float] = COCO_OKS_SIGMAS,
    flip_index: Sequence[int] = COCO_FLIP_INDEX,
    max_dets: int = MAX_DETS,
    match_oks: float = 0.1,
    good_ks: float = 0.85,
    jitter_ks: float = 0.5,
) -> KeypointErrorReport:
    """Classify the keypoint errors of matched detections and measure the AP each error type costs.

    Args:
        gt: ground truth (COCO person keypoints; ``area`` scales the tolerance as in OKS).
        dt: detections (``gt.loadRes(...)``), same images.
        sigmas: per-joint OKS sigmas. flip_index: each joint's left/right counterpart (itself for the nose).
        max_dets: detections per image scored by COCOeval (COCO: 20).
        match_oks: OKS at which detections are matched to persons for the analysis (0.1, as the original).
        good_ks: keypoint similarity above which a joint is good. jitter_ks: below it a joint is a miss.

    Returns:
        :class:`KeypointErrorReport`.

    Raises:
        ValueError: thresholds outside ``0 < jitter_ks < good_ks < 1`` or ``0 < match_oks < 1``, or sigmas and
            flip index of different lengths.
    """
    if not 0 < jitter_ks < good_ks < 1 or not 0 < match_oks < 1:
        raise ValueError(
            f"Need 0 < jitter_ks < good_ks < 1 and 0 < match_oks < 1; got jitter_ks={jitter_ks}, good_ks={good_ks}, "
            f"match_oks={match_oks}."
        )
    sigma_arr = np.asarray(sigmas, dtype=np.float64)
    flip = np.asarray(flip_index, dtype=np.int64)
    if flip.shape != sigma_arr.shape or sorted(flip.tolist()) != list(range(len(flip))):
        raise ValueError(f"flip_index must be a permutation of the {len(sigma_arr)} joints; got {list(flip_index)}.")

    detections = dt.loadAnns(dt.getAnnIds())
    persons = [a for a in gt.loadAnns(gt.getAnnIds()) if a.get("num_keypoints", 1) > 0 and not a.get("iscrowd", 0)]
    matches = _match(gt, dt, match_oks, sigma_arr, max_dets)
    by_joint = {name: np.zeros(len(sigma_arr), dtype=np.int64) for name in _CLASSES}
    classes: dict[int, np.ndarray] = {}
    corrected: dict[int, np.ndarray] = {}
    for det in detections:
        gt_id = matches.get(int(det["id"]))
        if gt_id is None:
            continue
        target = gt.anns[gt_id]
        if target.get("num_keypoints", 1) == 0:
            continue
        others = [a for a in gt.imgToAnns[det["image_id"]] if a["id"] != gt_id and not a.get("iscrowd", 0)]
        cls, fixed = _classify(_keypoints(det), target, others, sigma_arr, flip, good_ks, jitter_ks)
        for index, name in enumerate(_CLASSES):
            by_joint[name] += cls == index
        classes[int(det["id"])], corrected[int(det["id"])] = cls, fixed

    def ap_with(fixed_types: Sequence[str]) -> float:
        fixed_idx = [_CLASSES.index(t) for t in fixed_types]
        results = copy.deepcopy(dt.dataset)
        for ann in results["annotations"]:
            cls = classes.get(int(ann["id"]))
            if cls is None or not fixed_idx:
                continue
            kpts = _keypoints(ann)
            mask = np.isin(cls, fixed_idx)
            kpts[mask, :2] = corrected[int(ann["id"])][mask]
            ann["keypoints"] = kpts.ravel().tolist()
        fixed_dt = COCO()
        fixed_dt.dataset = results
        with silenced():
            fixed_dt.createIndex()
        stats = run_coco_eval(COCOeval(gt, fixed_dt, iouType="keypoints"), sigmas=sigma_arr, max_dets=max_dets)
        return 0.0 if stats["AP"] is None else float(stats["AP"])

    matched_gt = set(matches.values())
    return KeypointErrorReport(
        counts={name: int(v.sum()) for name, v in by_joint.items()},
        counts_by_joint={name: v.tolist() for name, v in by_joint.items()},
        ap=ap_with(()),
        ap_fixed_alone={t: ap_with((t,)) for t in ERROR_TYPES},
        ap_fixed_cumulative={t: ap_with(ERROR_TYPES[: i + 1]) for i, t in enumerate(ERROR_TYPES)},
        matched_detections=len(classes),
        detections=len(detections),
        persons=len(persons),
        unmatched_persons=sum(1 for p in persons if p["id"] not in matched_gt),
    )


def pose_error_metrics(samples: Sequence[PoseSample]) -> dict[str, float | None]:
    """Error diagnosis of generated images' detections against their conditioning poses, as flat metrics.

    Args:
        samples: ground truth and detections per image (as for :func:`ldm.metrics.pose_ap.pose_ap`).

    Returns:
        :data:`ERROR_METRIC_NAMES` -> value: ``joints <class>`` is the share of labelled joints of matched persons
        in that class, ``AP fixed <type>`` the AP with only that type corrected, ``AP fixed all`` with all four.
        All None when nothing was detected or matched.
    """
    gt, dt = build_coco(samples)
    if not dt.getAnnIds():
        return dict.fromkeys(ERROR_METRIC_NAMES)
    report = analyze_keypoint_errors(gt, dt)
    if not sum(report.counts.values()):
        return dict.fromkeys(ERROR_METRIC_NAMES)
    out: dict[str, float | None] = {f"joints {k}": v for k, v in report.fractions.items()}
    out.update({f"AP fixed {k}": v for k, v in report.ap_fixed_alone.items()})
    out["AP fixed all"] = report.ap_fixed_cumulative[ERROR_TYPES[-1]]
    return {name: out[name] for name in ERROR_METRIC_NAMES}
