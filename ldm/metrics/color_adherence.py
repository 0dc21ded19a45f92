"""Caption colour adherence: do the figures and the background have the colours the caption names?

Measured on pixels, for mannequin-world captions (`ldm.data.mannequin.captions`):

1. Every pixel gets the nearest named colour (`COLOR_RGB` anchors) in CIELAB (OpenCV's float conversion,
   L in [0, 100]); a region's dominant colour is its most frequent label, so textures, outlines, hatching and
   shading do not matter as long as most pixels keep their hue.
2. Figure region: with a pose, the 1-pixel centre lines of the body limbs (arms, legs, torso sides, shoulder and
   hip lines) between labelled joints; without one, the pixels whose label differs from the image border's.
3. Background region: with a pose, pixels farther than 0.22 x the person's extent + 6 % of the image from every
   limb line and face point (clear of bodies, heads and drop shadows); the image border otherwise.
4. A shadow play's figures are black by construction (the caption says so); any figure region whose median
   lightness is below `SILHOUETTE_MAX_L` counts as black there, so dark-brown or dark-grey silhouettes pass.

The result is `{"figure_match": 0/1, "background_match": 0/1, "score": their mean}`.

References:
    CIELAB, CIE 15:2004; OpenCV `cvtColor` RGB2Lab for float images, https://docs.opencv.org/4.x/de/d25/imgproc_color_conversions.html.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np

from ldm.data.mannequin.captions import COLOR_RGB, ColorName, Style, parse_caption
from ldm.pose.keypoints import Pose

# Body segments whose centre lines lie inside a drawn figure (face and ear-shoulder segments do not).
BODY_SEGMENTS: tuple[tuple[int, int], ...] = (
    (5, 7),
    (7, 9),
    (6, 8),
    (8, 10),
    (11, 13),
    (13, 15),
    (12, 14),
    (14, 16),
    (5, 11),
    (6, 12),
    (5, 6),
    (11, 12),
)
FACE_POINTS = (0, 1, 2, 3, 4)
SILHOUETTE_MAX_L = 30.0
_MIN_REGION_PIXELS = 20


@lru_cache(maxsize=1)
def _anchors() -> tuple[tuple[ColorName, ...], np.ndarray]:
    names = tuple(COLOR_RGB)
    rgb = np.array([[COLOR_RGB[c] for c in names]], dtype=np.float32) / 255.0
    return names, cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)[0]


def _lab(pixels: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB -> (N, 3) float32 CIELAB."""
    return cv2.cvtColor(pixels.reshape(1, -1, 3).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)[0]


def nearest_colors(pixels: np.ndarray) -> np.ndarray:
    """Index into `tuple(COLOR_RGB)` of the nearest named colour of each pixel (CIELAB distance).

    Args:
        pixels: (..., 3) uint8 RGB.

    Returns:
        (...) int array of colour indices.
    """
    _, anchors = _anchors()
    lab = _lab(np.asarray(pixels, dtype=np.uint8).reshape(-1, 3))
    distances = ((lab[:, None, :] - anchors[None, :, :]) ** 2).sum(axis=2)
    return distances.argmin(axis=1).reshape(np.shape(pixels)[:-1])


def _dominant(labels: np.ndarray) -> ColorName | None:
    if labels.size < _MIN_REGION_PIXELS:
        return None
    names, _ = _anchors()
    return names[int(np.bincount(labels.ravel(), minlength=len(names)).argmax())]


def _scaled_keypoints(pose: Pose, height: int, width: int) -> list[np.ndarray]:
    sx, sy = width / pose.width, height / pose.height
    return [p.keypoints * np.array([sx, sy, 1.0], dtype=np.float32) for p in pose.persons]


def pose_regions(pose: Pose, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Figure and background masks from a pose (see the module docstring).

    Args:
        pose: the pose (scaled to the image if its size differs).
        height: image height.
        width: image width.

    Returns:
        (figure, background) (H, W) bool masks; the figure mask is empty when no limb is labelled.
    """
    figure = np.zeros((height, width), dtype=np.uint8)
    background = np.ones((height, width), dtype=bool)
    margin_base = 0.06 * max(height, width)
    for kpts in _scaled_keypoints(pose, height, width):
        labelled = kpts[:, 2] > 0
        if labelled.sum() == 0:
            continue
        lines = np.zeros((height, width), dtype=np.uint8)
        for a, b in BODY_SEGMENTS:
            if labelled[a] and labelled[b]:
                pa, pb = (int(kpts[a, 0]), int(kpts[a, 1])), (int(kpts[b, 0]), int(kpts[b, 1]))
                cv2.line(lines, pa, pb, 1, 1, cv2.LINE_8)
        figure |= lines
        for j in FACE_POINTS:
            if labelled[j]:
                cv2.circle(lines, (int(kpts[j, 0]), int(kpts[j, 1])), 1, 1, -1)
        visible = kpts[labelled, :2]
        extent = float((visible.max(axis=0) - visible.min(axis=0)).max()) if len(visible) > 1 else 0.0
        distance = cv2.distanceTransform((lines == 0).astype(np.uint8), cv2.DIST_L2, 3)
        background &= distance > 0.22 * extent + margin_base
    return figure.astype(bool), background


def _border(height: int, width: int) -> np.ndarray:
    border = np.zeros((height, width), dtype=bool)
    k = max(1, round(0.04 * min(height, width)))
    border[:k], border[-k:], border[:, :k], border[:, -k:] = True, True, True, True
    return border


def dominant_colors(image: np.ndarray, *, pose: Pose | None = None) -> tuple[ColorName | None, ColorName | None]:
    """The dominant named colours of the figures and of the background.

    Args:
        image: (H, W, 3) uint8 RGB.
        pose: the figures' pose in pixels of `image` (or of an image of another size, rescaled); None estimates
            the foreground from the border colour.

    Returns:
        (figure colour, background colour); None where a region has too few pixels to decide.
    """
    _check_image(image)
    height, width = image.shape[:2]
    labels = nearest_colors(image)
    border = _border(height, width)
    figure_mask, background_mask = None, None
    if pose is not None and pose.persons:
        figure_mask, background_mask = pose_regions(pose, height, width)
        if figure_mask.sum() < _MIN_REGION_PIXELS:
            figure_mask = None
        if background_mask.sum() < _MIN_REGION_PIXELS:
            background_mask = border & ~figure_mask if figure_mask is not None else border
    background = _dominant(labels[background_mask if background_mask is not None else border])
    if figure_mask is None:
        names, _ = _anchors()
        others = (labels != names.index(background)) & ~border if background is not None else ~border
        figure_mask = others
    return _dominant(labels[figure_mask]), background


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"caption_adherence: image must be an (H, W, 3) uint8 RGB array; got {got}.")


def _silhouette(image: np.ndarray, pose: Pose | None) -> bool:
    """Whether the figure region is dark enough to be a shadow-play silhouette."""
    height, width = image.shape[:2]
    if pose is None or not pose.persons:
        return False
    figure_mask, _ = pose_regions(pose, height, width)
    if figure_mask.sum() < _MIN_REGION_PIXELS:
        return False
    return float(np.median(_lab(image[figure_mask])[:, 0])) < SILHOUETTE_MAX_L


def caption_adherence(image: np.ndarray, caption: str, *, pose: Pose | None = None) -> dict[str, float]:
    """Whether an image shows the figure and background colours its mannequin caption names.

    Args:
        image: (H, W, 3) uint8 RGB.
        caption: a mannequin caption (`parse_caption` grammar).
        pose: the pose the image was generated from, in image pixels (recommended: the figure region then
            comes from the limbs, the background region from far away from them).

    Returns:
        {"figure_match": 0.0 or 1.0, "background_match": 0.0 or 1.0, "score": their mean}.
    """
    spec = parse_caption(caption)
    figure, background = dominant_colors(image, pose=pose)
    figure_match = figure == spec.figure_color
    if spec.style is Style.SHADOW_PLAY and not figure_match:
        figure_match = _silhouette(image, pose)
    result = {"figure_match": float(figure_match), "background_match": float(background == spec.background_color)}
    result["score"] = (result["figure_match"] + result["background_match"]) / 2
    return result


def mean_adherence(
    images: Sequence[np.ndarray], captions: Sequence[str], poses: Sequence[Pose | None] | None = None
) -> dict[str, float]:
    """Average `caption_adherence` over a batch.

    Args:
        images: (H, W, 3) uint8 RGB images.
        captions: one mannequin caption per image.
        poses: one pose (or None) per image, or None for no poses.

    Returns:
        Means of "figure_match", "background_match" and "score", plus "n" (the batch size).
    """
    poses = [None] * len(images) if poses is None else list(poses)
    if not len(images) == len(captions) == len(poses):
        raise ValueError(
            f"mean_adherence: got {len(images)} images, {len(captions)} captions and {len(poses)} poses; "
            "pass one caption and one pose (or None) per image."
        )
    if not images:
        raise ValueError("mean_adherence: the batch is empty.")
    results = [caption_adherence(i, c, pose=p) for i, c, p in zip(images, captions, poses)]
    means = {key: float(np.mean([r[key] for r in results])) for key in ("figure_match", "background_match", "score")}
    return means | {"n": float(len(results))}
