"""Pose AP / AR of generated images: COCO keypoint evaluation of detected poses against the conditioning poses.

The conditioning poses (rescaled to the generated image size) are the ground truth; a pose detector's output on
the generated images is the result set. Everything goes through pycocotools' ``COCOeval`` with ``iouType
"keypoints"`` (OKS matching with the COCO-17 sigmas, thresholds .50:.05:.95, ``maxDets [20]``, area ranges
all / medium (32²-96²) / large (> 96²)), over the whole evaluated set at once.

Ground truth (spec §6.3, with fixes):

* one annotation per person with at least one visible joint (score > 0); keypoints ``[x, y, 2]`` for visible joints
  and ``[0, 0, 0]`` otherwise; ``num_keypoints`` = number of visible joints; ``iscrowd`` 0;
* ``bbox`` = tight box around the **visible** joints and ``area`` = bbox w * h. The original took min/max over all
  17 joints including the ``(-1, -1)`` placeholders of missing ones, which pulled the box to the corner and
  inflated the area (and so every OKS and the medium/large split);
* every person is used (the original read only the first 3 pose slots of a batch item);
* images without any ground-truth person are part of the image set, so detections on them count as false positives.

Detections: ``keypoints`` = the detector's ``(x, y, joint score)``, ``score`` = person score, no score filter (as
the original). Their ``bbox``/``area`` (used only to ignore unmatched detections outside an area range) come from
the joints with a positive score; pycocotools' ``loadRes`` would also count missing joints parked at (0, 0).

Evaluating the whole set at once replaces the original's per-batch COCO evaluation (10 images at a time, one CSV
row per batch), whose averages are not the AP of the set.

References:
    HumanSD (IDEA-Research/HumanSD, c5db29d), utils/metrics/pose_metrics.py; spec §6.3 of
        shared/spec/humansd-reference.md.
    COCO keypoint evaluation, https://cocodataset.org/#keypoints-eval; pycocotools ``COCOeval``.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ldm.pose.keypoints import COCO_KEYPOINT_NAMES, COCO_OKS_SIGMAS, Person

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_DETS",
    "PoseSample",
    "STAT_SUFFIXES",
    "build_coco",
    "coco_from_dataset",
    "gt_annotation",
    "gt_persons",
    "pose_ap",
    "run_coco_eval",
    "silenced",
]

MAX_DETS = 20
# Order of COCOeval.stats for keypoints (``_summarizeKps``); metric names are prefix + suffix, e.g. "AP(M)".
STAT_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("AP", ""),
    ("AP", "50"),
    ("AP", "75"),
    ("AP", "(M)"),
    ("AP", "(L)"),
    ("AR", ""),
    ("AR", "50"),
    ("AR", "75"),
    ("AR", "(M)"),
    ("AR", "(L)"),
)
_PERSON_CATEGORY = {"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINT_NAMES), "skeleton": []}


@dataclass
class PoseSample:
    """Ground truth and detections of one generated image.

    Args:
        width: generated image width in pixels.
        height: generated image height in pixels.
        gt: the conditioning persons in the generated image's pixel coordinates (any visibility; persons without a
            visible joint are dropped when the COCO set is built).
        detections: the detector's persons on the generated image.
    """

    width: int
    height: int
    gt: list[Person] = field(default_factory=list)
    detections: list[Person] = field(default_factory=list)


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Capture pycocotools' prints and pass them to the debug log."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    if buffer.getvalue().strip():
        logger.debug("pycocotools: %s", buffer.getvalue().strip())


def gt_persons(persons: Sequence[Person]) -> list[Person]:
    """The persons that count as ground truth: at least one visible joint (score > 0)."""
    return [p for p in persons if p.visible.any()]


def _box(keypoints: np.ndarray, mask: np.ndarray) -> list[float]:
    """[x, y, w, h] around the masked joints (all joints when none is masked in)."""
    pts = keypoints[mask] if mask.any() else keypoints
    x0, y0 = float(pts[:, 0].min()), float(pts[:, 1].min())
    return [x0, y0, float(pts[:, 0].max()) - x0, float(pts[:, 1].max()) - y0]


def gt_annotation(person: Person, image_id: int, ann_id: int) -> dict:
    """COCO ground-truth annotation of one person: visible joints with v = 2, box and area from those joints."""
    vis = person.visible
    kpts = np.zeros((len(vis), 3), dtype=np.float64)
    kpts[vis, :2] = person.keypoints[vis, :2]
    kpts[vis, 2] = 2.0
    bbox = _box(person.keypoints, vis)  # visible joints only (the original included the (-1, -1) placeholders)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "keypoints": kpts.reshape(-1).tolist(),
        "num_keypoints": int(vis.sum()),
        "iscrowd": 0,
        "bbox": bbox,
        "area": bbox[2] * bbox[3],
    }


def _dt_annotation(person: Person, image_id: int, ann_id: int) -> dict:
    bbox = _box(person.keypoints, person.keypoints[:, 2] > 0)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "keypoints": person.keypoints.astype(np.float64).reshape(-1).tolist(),
        "score": float(person.score),
        "bbox": bbox,
        "area": bbox[2] * bbox[3],
        "iscrowd": 0,
    }


def coco_from_dataset(dataset: dict) -> COCO:
    """A pycocotools ``COCO`` over an in-memory dataset dict (``images``, ``annotations``, ``categories``)."""
    coco = COCO()
    coco.dataset = dataset
    with silenced():
        coco.createIndex()
    return coco


def build_coco(samples: Sequence[PoseSample]) -> tuple[COCO, COCO]:
    """Ground-truth and result COCO objects for a set of images (image id = index in ``samples``).

    Args:
        samples: one entry per generated image, including images without ground-truth persons.

    Returns:
        (ground truth, detections). Built in memory (pycocotools' ``loadRes`` cannot take an empty result list).
    """
    images = [{"id": i, "width": int(s.width), "height": int(s.height)} for i, s in enumerate(samples)]
    gts, dts = [], []
    for i, sample in enumerate(samples):
        for person in gt_persons(sample.gt):
            gts.append(gt_annotation(person, i, len(gts) + 1))  # annotation ids are unique and start at 1
        for person in sample.detections:
            dts.append(_dt_annotation(person, i, len(dts) + 1))
    categories = [dict(_PERSON_CATEGORY)]
    gt = coco_from_dataset({"images": images, "annotations": gts, "categories": categories})
    dt = coco_from_dataset({"images": list(images), "annotations": dts, "categories": categories})
    return gt, dt


def run_coco_eval(
    evaluator: COCOeval,
    prefix: str = "",
    *,
    sigmas: Sequence[float] = COCO_OKS_SIGMAS,
    max_dets: int = MAX_DETS,
    area_range: tuple[float, float] | None = None,
) -> dict[str, float | None]:
    """Configure (OKS sigmas, maxDets, all images), run and summarise a keypoint ``COCOeval``.

    Args:
        evaluator: a ``COCOeval`` (or subclass) built with ``iouType="keypoints"``.
        prefix: text put before each metric name ("C" turns "AP" into "CAP").
        sigmas: per-joint OKS sigmas (COCO-17 by default).
        max_dets: detections scored per image, highest score first (COCO: 20).
        area_range: ``(lo, hi)`` object areas (px²) the summary covers instead of all (COCOeval's rule: ground
            truth outside the range is ignored, unmatched detections outside it are not counted). The AP(M) /
            AP(L) figures are then None.

    Returns:
        ``{"AP": ..., "AP50": ..., ..., "AR(L)": ...}``; a figure is None where COCOeval reports -1 (no ground
        truth in that area range).
    """
    params = evaluator.params
    params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
    params.maxDets = [int(max_dets)]
    params.imgIds = sorted(evaluator.cocoGt.getImgIds())
    if area_range is not None:
        lo, hi = (float(v) for v in area_range)
        if not 0 <= lo < hi:
            raise ValueError(f"area_range must be (lo, hi) with 0 <= lo < hi; got {area_range}.")
        params.areaRng, params.areaRngLbl = [[lo, hi]], ["all"]  # summarize() reads the range labelled "all"
    with silenced():
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {
        f"{prefix}{kind}{suffix}": (None if value < 0 else float(value))
        for (kind, suffix), value in zip(STAT_SUFFIXES, evaluator.stats, strict=True)
    }


def pose_ap(samples: Sequence[PoseSample]) -> dict[str, float | None]:
    """COCO keypoint AP/AR (OKS) of the detections against the ground truth, over all samples at once.

    Args:
        samples: the evaluated images.

    Returns:
        ``AP, AP50, AP75, AP(M), AP(L), AR, AR50, AR75, AR(M), AR(L)`` in [0, 1] (None without any ground truth
        in the relevant area range).
    """
    if not samples:
        raise ValueError("pose_ap needs at least one image.")
    gt, dt = build_coco(samples)
    return run_coco_eval(COCOeval(gt, dt, iouType="keypoints"))
