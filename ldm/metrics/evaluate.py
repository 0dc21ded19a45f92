"""Evaluate a set of generated images: pose AP/AR, CAP, PCE, FID/KID and CLIPSIM, overall and per scenario.

One pass over the images: each generated image is read once, the detector, the feature network and CLIP see it
on its own; reference images are read once each. Then every figure is computed over the whole set at once and
again for each scenario (Human-Art folder) from the same detections and features. Outputs (``write_outputs``):
``metrics.json``, ``metrics.md``, ``metrics.csv`` (each figure with the number of images behind it) and
``detections.json`` (reusable with ``detections=``).

Ground-truth poses: the pose file is read in the pixel frame of its reference image (the image's size from its
header; without the reference image, the size stored in / inferred from the pose file) and rescaled to the
generated image's size, x and y separately, as the batch runner did when it generated the image. Generated images
of another size than the pose frame are therefore handled; a generated image whose pose cannot be read still
counts for FID/KID and CLIPSIM but not for the pose figures ("pose_images" vs "images" in the counts).

References:
    HumanSD (IDEA-Research/HumanSD, c5db29d), scripts/pose2img_metrics.py, utils/metrics/*; spec §6.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ldm.metrics.cap import cap
from ldm.metrics.clip_score import ClipScorer
from ldm.metrics.fid import extract_features, frechet_distance, kernel_distance
from ldm.metrics.inputs import EvalItem, EvalSet
from ldm.metrics.pce import pce
from ldm.metrics.pose_ap import PoseSample, gt_persons, pose_ap
from ldm.metrics.pose_errors import pose_error_metrics
from ldm.metrics.report import csv_table, run_markdown
from ldm.pose.convert import rescale_pose
from ldm.pose.estimator import PoseDetector
from ldm.pose.image import to_rgb_uint8
from ldm.pose.io import load_pose
from ldm.pose.keypoints import Person

logger = logging.getLogger(__name__)

__all__ = [
    "METRIC_GROUPS",
    "EvalOptions",
    "EvalResult",
    "GroupResult",
    "evaluate",
    "read_detections",
    "write_outputs",
]

METRIC_GROUPS = ("pose", "quality", "text")
_MAX_LISTED = 10


@dataclass
class EvalOptions:
    """What to compute and how.

    Args:
        metrics: metric groups, a subset of :data:`METRIC_GROUPS`.
        cap_original_bug: reproduce the original CAP's y-coordinate bug (figures are labelled).
        kid_subset_size: KID subset size (clamped to the smaller set per group; the original used 1000).
        kid_subsets: KID subsets.
        batch_size: images per feature / CLIP forward pass.
        progress: show a progress bar.
        pce_min_scores: extra PCE figures that count only detections scoring at least this much, reported as
            ``PCE@<score>`` next to the original ``PCE`` (see ldm/metrics/pce.py).
        pose_errors: add the keypoint error diagnosis of the pose group (``joints inversion``, ``AP fixed
            inversion``, ...; ldm/metrics/pose_errors.py).
    """

    metrics: Sequence[str] = METRIC_GROUPS
    cap_original_bug: bool = False
    kid_subset_size: int = 1000
    kid_subsets: int = 100
    batch_size: int = 16
    progress: bool = False
    pce_min_scores: Sequence[float] = ()
    pose_errors: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(METRIC_GROUPS))
        if unknown or not self.metrics:
            raise ValueError(f"metrics must be a non-empty subset of {list(METRIC_GROUPS)}; got {list(self.metrics)}.")
        if self.kid_subset_size < 2 or self.kid_subsets < 1 or self.batch_size < 1:
            raise ValueError("kid_subset_size must be >= 2, kid_subsets >= 1 and batch_size >= 1.")
        bad = [s for s in self.pce_min_scores if not 0.0 < s <= 1.0]
        if bad:
            raise ValueError(f"pce_min_scores must lie in (0, 1]; got {bad}.")


@dataclass
class GroupResult:
    """Figures of one group of images (the whole set or one scenario).

    Args:
        counts: images, pose_images, gt_persons, detected_persons, reference_images, clip_pairs,
            kid_subset_size (only those that apply).
        metrics: metric name -> value (None where it cannot be computed, e.g. FID of a single image).
    """

    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)


@dataclass
class EvalResult:
    """Everything an evaluation produced.

    Args:
        overall: the whole set.
        scenarios: per-scenario groups.
        meta: provenance (source, networks, options, missing images, notes).
        detections: detected persons per image id (for reuse).
    """

    overall: GroupResult
    scenarios: dict[str, GroupResult]
    meta: dict[str, Any]
    detections: dict[str, list[Person]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` content."""
        return {
            "meta": self.meta,
            "overall": {"counts": self.overall.counts, "metrics": self.overall.metrics},
            "scenarios": {k: {"counts": v.counts, "metrics": v.metrics} for k, v in self.scenarios.items()},
        }


@dataclass
class _Scanned:
    """Per-image data gathered in the single pass."""

    item: EvalItem
    sample: PoseSample | None = None
    feature_row: int | None = None
    clip_score: float | None = None


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:  # header only
        return im.size


def _load_gt(item: EvalItem, width: int, height: int) -> list[Person]:
    """Conditioning persons in the generated image's pixels (rescaled from the reference image's frame)."""
    if item.pose_path is None:
        raise ValueError("no pose file is listed for it")
    if item.reference_image is not None and item.reference_image.is_file():
        ref_w, ref_h = _image_size(item.reference_image)
        pose = load_pose(item.pose_path, width=ref_w, height=ref_h)
    else:
        pose = load_pose(item.pose_path)  # size stored in the file or inferred from the joints
    if (pose.width, pose.height) != (width, height):
        pose = rescale_pose(pose, width, height)
    return pose.persons


def read_detections(path: str | Path) -> dict[str, list[Person]]:
    """Read a ``detections.json`` written by :func:`write_outputs` ({image_id: [{keypoints, score}]})."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} must map image ids to lists of persons.")
    return {k: [Person(np.asarray(p["keypoints"]), score=p["score"]) for p in v] for k, v in data.items()}


class _Scanner:
    """The single pass over generated and reference images."""

    def __init__(
        self,
        eval_set: EvalSet,
        detector: PoseDetector | None,
        detections: Mapping[str, list[Person]] | None,
        features: torch.nn.Module | None,
        clip: ClipScorer | None,
        options: EvalOptions,
    ) -> None:
        self.eval_set, self.options = eval_set, options
        self.detector, self.detections, self.features, self.clip = detector, detections, features, clip
        self.problems: dict[str, list[str]] = {"unreadable_images": [], "pose_errors": [], "missing_reference": []}
        self.fake: list[torch.Tensor] = []
        self.found: dict[str, list[Person]] = {}

    def _pose(self, item: EvalItem, image: np.ndarray) -> PoseSample | None:
        height, width = image.shape[:2]
        try:
            gt = _load_gt(item, width, height)
        except (OSError, ValueError) as err:
            self.problems["pose_errors"].append(f"{item.image_id}: {err}")
            return None
        if self.detections is not None:
            dets = list(self.detections.get(item.image_id, []))
        else:
            try:
                dets = self.detector.detect(image)
            except (RuntimeError, ValueError) as err:  # one failing image must not end a long evaluation
                self.problems["pose_errors"].append(f"{item.image_id}: detector failed: {err}")
                return None
        self.found[item.image_id] = dets
        return PoseSample(width=width, height=height, gt=gt, detections=dets)

    def _flush(self, batch: list[tuple[_Scanned, np.ndarray]], groups: Sequence[str]) -> None:
        if not batch:
            return
        images = [image for _, image in batch]
        if "quality" in groups:
            start = sum(len(f) for f in self.fake)
            self.fake.append(extract_features(self.features, images, batch_size=self.options.batch_size))
            for n, (scanned, _) in enumerate(batch):
                scanned.feature_row = start + n
        if "text" in groups:
            scores = self.clip.scores(images, [s.item.prompt for s, _ in batch])
            for (scanned, _), score in zip(batch, scores, strict=True):
                scanned.clip_score = float(score)
        batch.clear()

    def scan(self, groups: Sequence[str]) -> list[_Scanned]:
        scanned, batch = [], []
        items = tqdm(self.eval_set.items, desc="metrics", unit="img", disable=not self.options.progress)
        for item in items:
            try:
                image = to_rgb_uint8(item.image_path)
            except (OSError, ValueError) as err:
                self.problems["unreadable_images"].append(f"{item.image_id}: {err}")
                continue
            entry = _Scanned(item)
            if "pose" in groups:
                entry.sample = self._pose(item, image)
            scanned.append(entry)
            batch.append((entry, image))
            if len(batch) >= self.options.batch_size:
                self._flush(batch, groups)
        self._flush(batch, groups)
        return scanned

    def reference_features(self, scanned: list[_Scanned]) -> tuple[torch.Tensor, dict[Path, int]]:
        """Features of each distinct reference image of the readable items."""
        paths, rows = [], {}
        for ref in dict.fromkeys(s.item.reference_image for s in scanned):
            if ref is None or not ref.is_file():
                self.problems["missing_reference"].append(str(ref) if ref else "(entries without a reference image)")
                continue
            paths.append(ref)

        def images():
            for path in paths:
                try:
                    image = to_rgb_uint8(path)
                except (OSError, ValueError) as err:
                    self.problems["missing_reference"].append(f"{path}: {err}")
                    continue
                rows[path] = len(rows)
                yield image

        feats = extract_features(self.features, images(), batch_size=self.options.batch_size)
        return feats, rows


def _pose_metrics(samples: list[PoseSample], options: EvalOptions) -> dict[str, float | None]:
    out: dict[str, float | None] = dict(pose_ap(samples))
    suffix = " (original y bug)" if options.cap_original_bug else ""
    out.update({f"{k}{suffix}": v for k, v in cap(samples, original_bug=options.cap_original_bug).items()})
    out["PCE"] = pce(samples)
    for score in options.pce_min_scores:
        out[pce_name(score)] = pce(samples, min_score=score)
    if options.pose_errors:
        out.update(pose_error_metrics(samples))
    return out


def pce_name(min_score: float) -> str:
    """Metric name of the PCE that counts detections scoring >= `min_score` (e.g. ``PCE@0.2``)."""
    return f"PCE@{min_score:g}"


def _quality_metrics(
    real: torch.Tensor, fake: torch.Tensor, label_suffix: str, options: EvalOptions
) -> tuple[dict, int]:
    if len(real) < 2 or len(fake) < 2:
        return {f"FID{label_suffix}": None, f"KID{label_suffix}": None, f"KID std{label_suffix}": None}, 0
    kid = kernel_distance(real, fake, subset_size=options.kid_subset_size, subsets=options.kid_subsets)
    metrics = {
        f"FID{label_suffix}": frechet_distance(real, fake),
        f"KID{label_suffix}": kid.mean,
        f"KID std{label_suffix}": kid.std,
    }
    return metrics, kid.subset_size


def _group(
    entries: list[_Scanned],
    groups: Sequence[str],
    options: EvalOptions,
    fake: torch.Tensor | None,
    real: tuple[torch.Tensor, dict[Path, int]] | None,
    label_suffix: str,
) -> GroupResult:
    result = GroupResult(counts={"images": len(entries)})
    if "pose" in groups:
        samples = [e.sample for e in entries if e.sample is not None]
        result.counts.update(
            pose_images=len(samples),
            gt_persons=sum(len(gt_persons(s.gt)) for s in samples),
            detected_persons=sum(len(s.detections) for s in samples),
        )
        if samples:
            result.metrics.update(_pose_metrics(samples, options))
    if "quality" in groups and fake is not None and real is not None:
        real_feats, rows = real
        ref_rows = sorted({rows[e.item.reference_image] for e in entries if e.item.reference_image in rows})
        fake_rows = [e.feature_row for e in entries if e.feature_row is not None]
        metrics, subset = _quality_metrics(real_feats[ref_rows], fake[fake_rows], label_suffix, options)
        result.metrics.update(metrics)
        result.counts.update(reference_images=len(ref_rows), kid_subset_size=subset)
    if "text" in groups:
        scores = [e.clip_score for e in entries if e.clip_score is not None]
        result.counts["clip_pairs"] = len(scores)
        result.metrics["CLIPSIM"] = float(np.mean(scores)) if scores else None
    return result


def _label_suffix(features: Any) -> str:
    label = getattr(features, "label", "custom features")
    return "" if label == "Inception-v3" else f" ({label})"


def _check_resources(groups, detector, detections, features, clip) -> None:
    if "pose" in groups and detector is None and detections is None:
        raise ValueError("Pose metrics need a detector or precomputed detections.")
    if "quality" in groups and features is None:
        raise ValueError("Quality metrics (FID/KID) need a feature network (ldm.metrics.features).")
    if "text" in groups and clip is None:
        raise ValueError("CLIPSIM needs a ClipScorer (ldm.metrics.clip_score).")


def evaluate(
    eval_set: EvalSet,
    *,
    detector: PoseDetector | None = None,
    detections: Mapping[str, list[Person]] | None = None,
    features: torch.nn.Module | None = None,
    clip: ClipScorer | None = None,
    options: EvalOptions | None = None,
) -> EvalResult:
    """Compute the requested metric groups over the whole set and per scenario.

    Args:
        eval_set: images to evaluate (see :mod:`ldm.metrics.inputs`).
        detector: pose detector for the pose figures (``detect(image) -> list[Person]``).
        detections: precomputed detections by image id, used instead of ``detector`` (images without an entry
            have no detection).
        features: feature network for FID/KID (``ldm.metrics.features``), taking uint8 batches.
        clip: CLIP scorer for CLIPSIM.
        options: what to compute.

    Returns:
        The :class:`EvalResult`.

    Raises:
        ValueError: a requested group lacks its network, or no generated image could be read.
    """
    options = options or EvalOptions()
    groups = tuple(g for g in METRIC_GROUPS if g in options.metrics)
    _check_resources(groups, detector, detections, features, clip)
    if not eval_set.items:
        raise ValueError(f"No generated images to evaluate in {eval_set.source} ({len(eval_set.missing)} missing).")
    scanner = _Scanner(eval_set, detector, detections, features, clip, options)
    scanned = scanner.scan(groups)
    if not scanned:
        raise ValueError(f"None of the {len(eval_set.items)} generated images could be read: {scanner.problems}.")
    fake = real = None
    if "quality" in groups:
        fake = torch.cat(scanner.fake) if scanner.fake else None
        real = scanner.reference_features(scanned)
    suffix = _label_suffix(features) if features is not None else ""
    overall = _group(scanned, groups, options, fake, real, suffix)
    by_scenario: dict[str, list[_Scanned]] = {}
    for entry in scanned:
        by_scenario.setdefault(entry.item.scenario, []).append(entry)
    scenarios = {name: _group(e, groups, options, fake, real, suffix) for name, e in sorted(by_scenario.items())}
    meta = _meta(eval_set, scanner.problems, groups, options, detector, detections, features, clip)
    return EvalResult(overall, scenarios, meta, detections=scanner.found)


def _describe_detector(detector: Any, detections: Mapping | None) -> str | None:
    if detections is not None:
        return "precomputed detections"
    return type(detector).__name__ if detector is not None else None


def _meta(eval_set, problems, groups, options, detector, detections, features, clip) -> dict[str, Any]:
    for name, entries in (("missing images", eval_set.missing), *problems.items()):
        if entries:
            logger.warning("%d %s (skipped), e.g. %s", len(entries), name.replace("_", " "), "; ".join(entries[:3]))
    for note in eval_set.notes:
        logger.warning("%s", note)
    return {
        "source": eval_set.source,
        "metric_groups": list(groups),
        "detector": _describe_detector(detector, detections),
        "feature_network": getattr(features, "label", None) if features is not None else None,
        "feature_dims": int(features.num_features) if features is not None else None,
        "clip_model": clip.name if clip is not None else None,
        "cap_original_bug": options.cap_original_bug,
        "kid_subset_size_requested": options.kid_subset_size,
        "kid_subsets": options.kid_subsets,
        "listed_images": len(eval_set.items) + len(eval_set.missing),
        "missing_images": len(eval_set.missing),
        "missing_images_first": eval_set.missing[:_MAX_LISTED],
        **{k: len(v) for k, v in problems.items()},
        **{f"{k}_first": v[:_MAX_LISTED] for k, v in problems.items() if v},
        "notes": list(eval_set.notes),
    }


def write_outputs(result: EvalResult, outdir: str | Path, *, title: str = "Evaluation") -> dict[str, Path]:
    """Write ``metrics.json``, ``metrics.md``, ``metrics.csv`` and (with pose figures) ``detections.json``.

    Args:
        result: an evaluation result.
        outdir: output folder (created).
        title: Markdown heading.

    Returns:
        {"json", "markdown", "csv"[, "detections"]: path}.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    data = result.to_dict()
    paths = {"json": outdir / "metrics.json", "markdown": outdir / "metrics.md", "csv": outdir / "metrics.csv"}
    paths["json"].write_text(json.dumps(data, indent=1), encoding="utf-8")
    paths["markdown"].write_text(run_markdown(data, title=title), encoding="utf-8")
    paths["csv"].write_text(csv_table(data), encoding="utf-8")
    if result.detections:
        dets = {
            k: [{"keypoints": p.keypoints.round(3).tolist(), "score": round(p.score, 5)} for p in v]
            for k, v in result.detections.items()
        }
        paths["detections"] = outdir / "detections.json"
        paths["detections"].write_text(json.dumps(dets), encoding="utf-8")
    logger.info("Wrote %s.", ", ".join(str(p) for p in paths.values()))
    return paths
