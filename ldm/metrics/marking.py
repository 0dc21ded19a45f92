"""Left-limb marking of mannequin figures: is it drawn, on the right side, and how strongly?

The mannequin world draws each figure's left arm and leg in another tone of its colour than the right ones
(`ldm.data.mannequin`), the only cue from which a pose net can tell a figure's left from its right at 128 px. A
generated image of the same pose should carry the same cue. Per figure, with the conditioning keypoints:

1. d = mean RGB sampled along the left upper arm, forearm, thigh and shin (8 points each, 15-85 % of the way
   between the joints) minus the same along the right ones; d* the same on the real render of the entry.
2. contrast = (d . d*) / (d* . d*): the generated left/right difference projected on the real one, 1 when it is as
   strong and on the same side, 0 when there is none, negative when it is on the wrong side.

Only figures whose eight limb joints are labelled, whose samples lie in the image, and whose real render shows a
difference of at least `MIN_REFERENCE_CONTRAST` RGB levels count; `marking_metrics` scores single-figure images
only (where figures overlap, limb samples of one figure fall on another). The real render scores 1 by definition.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ldm.pose.keypoints import COCO_FLIP_INDEX, Pose

__all__ = ["MARKING_METRIC_NAMES", "MIN_REFERENCE_CONTRAST", "marking_contrast", "marking_metrics", "side_difference"]

LEFT_LIMB_SEGMENTS: tuple[tuple[int, int], ...] = ((5, 7), (7, 9), (11, 13), (13, 15))
RIGHT_LIMB_SEGMENTS = tuple((COCO_FLIP_INDEX[a], COCO_FLIP_INDEX[b]) for a, b in LEFT_LIMB_SEGMENTS)
SAMPLES_PER_SEGMENT = 8
MIN_REFERENCE_CONTRAST = 10.0  # RGB levels between the real render's left and right limbs
MARKING_METRIC_NAMES = ("marking figures", "marking agreement", "marking contrast")


def _side_colour(image: np.ndarray, keypoints: np.ndarray, segments: Sequence[tuple[int, int]]) -> np.ndarray | None:
    h, w = image.shape[:2]
    t = np.linspace(0.15, 0.85, SAMPLES_PER_SEGMENT)[:, None]
    points = []
    for a, b in segments:
        if keypoints[a, 2] <= 0 or keypoints[b, 2] <= 0:
            return None
        points.append(np.rint(keypoints[a, :2] * (1 - t) + keypoints[b, :2] * t).astype(int))
    xy = np.concatenate(points)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    if inside.sum() < 2 * SAMPLES_PER_SEGMENT:
        return None
    xy = xy[inside]
    return image[xy[:, 1], xy[:, 0]].astype(np.float64).mean(0)


def side_difference(image: np.ndarray, keypoints: np.ndarray) -> np.ndarray | None:
    """Mean RGB along the figure's left limbs minus along its right ones; None if a limb joint is unlabelled or
    fewer than two segments' worth of samples fall inside the image on a side.

    Args:
        image: (H, W, 3) uint8 RGB.
        keypoints: (17, 3) COCO-17 x, y (pixels of `image`), score (> 0: labelled).
    """
    left = _side_colour(image, keypoints, LEFT_LIMB_SEGMENTS)
    right = _side_colour(image, keypoints, RIGHT_LIMB_SEGMENTS)
    return None if left is None or right is None else left - right


def marking_contrast(image: np.ndarray, reference: np.ndarray, keypoints: np.ndarray) -> float | None:
    """The image's left/right difference projected on the reference's (1: as strong, same side; < 0: wrong side).

    None where `side_difference` is undefined on either image or the reference's is below
    `MIN_REFERENCE_CONTRAST`. Both images must share the keypoints' frame (same size).
    """
    if image.shape != reference.shape:
        raise ValueError(f"image {image.shape} and reference {reference.shape} differ in size")
    d_ref = side_difference(reference, keypoints)
    if d_ref is None or float(np.linalg.norm(d_ref)) < MIN_REFERENCE_CONTRAST:
        return None
    d = side_difference(image, keypoints)
    return None if d is None else float(d @ d_ref / (d_ref @ d_ref))


def marking_metrics(
    images: Sequence[np.ndarray], references: Sequence[np.ndarray], poses: Sequence[Pose]
) -> dict[str, float | None]:
    """Over the single-figure images: figures scored, share with the marking on the right side (contrast > 0),
    median contrast. `poses` in the images' pixel frame."""
    if not len(images) == len(references) == len(poses):
        raise ValueError(f"{len(images)} images, {len(references)} references and {len(poses)} poses")
    scores = []
    for image, reference, pose in zip(images, references, poses, strict=True):
        if len(pose.persons) != 1:
            continue
        score = marking_contrast(image, reference, np.asarray(pose.persons[0].keypoints, dtype=np.float64))
        if score is not None:
            scores.append(score)
    if not scores:
        return {"marking figures": 0, "marking agreement": None, "marking contrast": None}
    values = np.asarray(scores)
    return {
        "marking figures": len(scores),
        "marking agreement": float((values > 0).mean()),
        "marking contrast": float(np.median(values)),
    }
