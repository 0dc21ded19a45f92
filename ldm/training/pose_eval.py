"""COCO keypoint AP of a pose detector: ground truth from a COCO file or from dataset keypoints, pycocotools OKS.

:class:`CocoKeypointEvaluator` collects the detections of one validation pass image by image and scores them with
``pycocotools.cocoeval.COCOeval(iouType="keypoints")`` (OKS with the COCO-17 sigmas, ``maxDets = 20``, AP averaged
over OKS thresholds 0.50:0.05:0.95). Ground truth comes either from a COCO person-keypoints file (e.g. the mannequin
world's ``annotations/validation_coco.json``, images matched by ``file_name``) or, for datasets without one, from
the keypoints the dataset returns (every labelled joint counts as visible; the object area, which scales the OKS
tolerance, is then the area of the joints' bounding box because no segmentation is known).

References:
    COCO keypoint evaluation, https://cocodataset.org/#keypoints-eval (OKS, sigmas, maxDets 20).
    cocodataset/cocoapi PythonAPI/pycocotools/cocoeval.py (the evaluator used).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ldm.metrics.pose_ap import coco_from_dataset, gt_annotation, run_coco_eval, silenced
from ldm.metrics.pose_errors import KeypointErrorReport, analyze_keypoint_errors
from ldm.pose.estimator import PoseDetector
from ldm.pose.keypoints import COCO_OKS_SIGMAS, NUM_KEYPOINTS, Person

logger = logging.getLogger(__name__)

__all__ = ["CocoKeypointEvaluator", "KeypointAP", "collect_detections", "evaluate_detector"]

COCO_MAX_DETS = 20
_STAT_NAMES = ("ap", "ap50", "ap75", "ap_medium", "ap_large", "ar", "ar50", "ar75", "ar_medium", "ar_large")


@dataclass(frozen=True)
class KeypointAP:
    """COCOeval keypoint summary (``COCOeval.stats``; -1 where a size range has no ground truth).

    Attributes:
        ap: AP at OKS 0.50:0.95. ap50, ap75: at one threshold. ap_medium, ap_large: per object size.
        ar, ar50, ar75, ar_medium, ar_large: the matching recalls.
        num_images: images evaluated. num_detections: detections scored.
    """

    ap: float
    ap50: float
    ap75: float
    ap_medium: float
    ap_large: float
    ar: float
    ar50: float
    ar75: float
    ar_medium: float
    ar_large: float
    num_images: int = 0
    num_detections: int = 0

    def as_dict(self) -> dict[str, float]:
        """The ten COCO statistics by name."""
        return {name: getattr(self, name) for name in _STAT_NAMES}


class CocoKeypointEvaluator:
    """Accumulate detections per image, then compute COCO keypoint AP with pycocotools.

    Args:
        annotations: COCO person-keypoints JSON whose ``images[*].file_name`` are the keys passed to :meth:`add`
            (the dataset-relative image paths); None builds the ground truth from the keypoints given to
            :meth:`add`.
        sigmas: per-joint OKS sigmas (COCO-17 by default).
        max_dets: detections per image that are scored, highest score first (COCO: 20).

    Raises:
        FileNotFoundError: ``annotations`` does not exist. ValueError: it is not a COCO keypoints file.
    """

    def __init__(
        self,
        annotations: str | Path | None = None,
        *,
        sigmas: Sequence[float] = COCO_OKS_SIGMAS,
        max_dets: int = COCO_MAX_DETS,
    ) -> None:
        if len(sigmas) != NUM_KEYPOINTS or max_dets < 1:
            raise ValueError(f"Need {NUM_KEYPOINTS} OKS sigmas and max_dets >= 1; got {len(sigmas)} and {max_dets}.")
        self.sigmas = np.asarray(sigmas, dtype=np.float64)
        self.max_dets = int(max_dets)
        self.annotations = Path(annotations) if annotations is not None else None
        self._file_gt = self._read_annotations(self.annotations) if self.annotations is not None else None
        self._by_name = {im["file_name"]: im for im in self._file_gt["images"]} if self._file_gt else {}
        self.reset()

    @staticmethod
    def _read_annotations(path: Path) -> dict:
        if not path.is_file():
            raise FileNotFoundError(f"COCO keypoint annotations not found: {path}")
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
            raise ValueError(f"{path} is not a COCO file: it needs 'images', 'annotations' and 'categories'.")
        return data

    @property
    def images(self) -> list[dict]:
        """The annotation file's image entries (``id``, ``file_name``, ``width``, ``height``); [] without a file."""
        return list(self._file_gt["images"]) if self._file_gt is not None else []

    def reset(self) -> None:
        """Forget all added images (call at the start of every validation pass)."""
        self._images: list[dict] = []
        self._gt_annotations: list[dict] = []
        self._detections: list[dict] = []

    def __len__(self) -> int:
        return len(self._images)

    def add(
        self, key: str, persons: Sequence[Person], *, width: int, height: int, keypoints: np.ndarray | None = None
    ) -> None:
        """Record one image's detections (and its ground truth when no annotation file is used).

        Args:
            key: the image's dataset-relative path (``BatchKey.PATH``), the ``file_name`` in the annotation file.
            persons: detections in the image's pixel coordinates (``PoseEstimator.detect``).
            width: image width. height: image height (checked against the annotation file when there is one).
            keypoints: (P, K, 3) ground truth (x, y, score), score 0 = not labelled; required without a file.

        Raises:
            ValueError: unknown key or size mismatch with the annotation file, or missing ground truth.
        """
        if self._file_gt is not None:
            image = self._by_name.get(key)
            if image is None:
                raise ValueError(f"Image {key!r} is not in {self.annotations}; the evaluator needs its file_name.")
            if (image["width"], image["height"]) != (width, height):
                raise ValueError(
                    f"Image {key!r} was evaluated at {width}x{height} but is {image['width']}x{image['height']} in "
                    f"{self.annotations}; validate without resizing (image_size equal to the dataset's size)."
                )
            image_id = image["id"]
        else:
            if keypoints is None:
                raise ValueError("keypoints are required when the evaluator has no annotation file.")
            image_id = len(self._images) + 1
            self._gt_annotations += _annotations_from_keypoints(np.asarray(keypoints, np.float64), image_id)
        self._images.append({"id": image_id, "file_name": key, "width": width, "height": height})
        for person in persons:
            self._detections.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "keypoints": person.keypoints.astype(np.float64).ravel().tolist(),
                    "score": float(person.score),
                }
            )

    def compute(self, area_range: tuple[float, float] | None = None) -> KeypointAP:
        """COCO keypoint AP over the images added since the last :meth:`reset`.

        Args:
            area_range: only persons with lo <= area (px²) <= hi (COCOeval's inclusive rule: one exactly on an
                edge counts in both neighbouring ranges); None = all.

        Returns:
            :class:`KeypointAP`; all zeros when nothing was detected (pycocotools cannot score an empty result).
        """
        if not self._detections:
            if not self._images:
                raise ValueError("No image was added to the evaluator; nothing to compute.")
            logger.warning("No person detected on %d images: AP = 0.", len(self._images))
            return KeypointAP(*([0.0] * len(_STAT_NAMES)), num_images=len(self._images), num_detections=0)
        gt, results = self._coco_pair()
        stats = run_coco_eval(
            COCOeval(gt, results, "keypoints"), sigmas=self.sigmas, max_dets=self.max_dets, area_range=area_range
        )
        values = [-1.0 if v is None else v for v in stats.values()]  # COCOeval's -1: no ground truth in that range
        return KeypointAP(*values, num_images=len(self._images), num_detections=len(self._detections))

    def error_analysis(self, **options: Any) -> KeypointErrorReport:
        """Keypoint error diagnosis (good / jitter / inversion / swap / miss and the AP each costs).

        Args:
            options: keyword arguments of :func:`ldm.metrics.pose_errors.analyze_keypoint_errors` (thresholds).

        Raises:
            ValueError: no image added, or nothing detected (there is no error to classify).
        """
        if self._images and not self._detections:
            raise ValueError(f"No person detected on {len(self._images)} images: there is no error to analyse.")
        gt, results = self._coco_pair()
        return analyze_keypoint_errors(gt, results, sigmas=self.sigmas, max_dets=self.max_dets, **options)

    def _coco_pair(self) -> tuple[COCO, COCO]:
        """Ground truth and detections of the added images as pycocotools objects."""
        if not self._images:
            raise ValueError("No image was added to the evaluator; nothing to compute.")
        ids = {im["id"] for im in self._images}
        if self._file_gt is not None:
            annotations = [a for a in self._file_gt["annotations"] if a["image_id"] in ids]
            categories = self._file_gt["categories"]
        else:
            annotations = [{**a, "id": i + 1} for i, a in enumerate(self._gt_annotations)]
            categories = [{"id": 1, "name": "person", "supercategory": "person"}]
        gt = coco_from_dataset({"images": self._images, "annotations": annotations, "categories": categories})
        with silenced():  # loadRes prints its progress
            results = gt.loadRes(self._detections)
        return gt, results


def _annotations_from_keypoints(keypoints: np.ndarray, image_id: int) -> list[dict]:
    """COCO annotations (ids set later) of the labelled persons of one image; labelled joints get v = 2.

    Box and area come from the labelled joints (:func:`ldm.metrics.pose_ap.gt_annotation`); the area is at least
    1 px² so a person with a single labelled joint still has a finite OKS tolerance.
    """
    if keypoints.ndim != 3 or keypoints.shape[1:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"keypoints must be (P, {NUM_KEYPOINTS}, 3); got {keypoints.shape}.")
    out = []
    for person in keypoints:
        if not (person[:, 2] > 0).any():
            continue  # a padding slot (-1, -1, 0)
        annotation = gt_annotation(Person(person), image_id, ann_id=0)
        annotation["area"] = max(annotation["area"], 1.0)
        out.append(annotation)
    return out


def collect_detections(
    detector: PoseDetector,
    annotations: str | Path,
    image_root: str | Path,
    *,
    max_images: int | None = None,
) -> CocoKeypointEvaluator:
    """Run a detector on the images listed in a COCO keypoint file; score later with ``compute(...)``.

    Args:
        detector: anything with ``detect(image) -> list[Person]`` (e.g. ``PoseEstimator.from_checkpoint(...)``).
        annotations: COCO person-keypoints JSON (the mannequin world's ``annotations/validation_coco.json``).
        image_root: folder the images' ``file_name`` entries are relative to (the dataset root).
        max_images: evaluate only the first images (for smoke tests); None = all.

    Returns:
        The filled :class:`CocoKeypointEvaluator` (e.g. ``.compute()``, ``.compute(area_range=(0, 800))``).
    """
    evaluator = CocoKeypointEvaluator(annotations)
    images = evaluator.images[:max_images] if max_images is not None else evaluator.images
    for image in images:
        persons = detector.detect(Path(image_root) / image["file_name"])
        evaluator.add(image["file_name"], persons, width=image["width"], height=image["height"])
    return evaluator


def evaluate_detector(
    detector: PoseDetector,
    annotations: str | Path,
    image_root: str | Path,
    *,
    max_images: int | None = None,
) -> KeypointAP:
    """COCO keypoint AP of a detector on the images listed in a COCO keypoint file (arguments as
    :func:`collect_detections`)."""
    return collect_detections(detector, annotations, image_root, max_images=max_images).compute()
