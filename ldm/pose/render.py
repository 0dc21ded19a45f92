"""Pixel-exact renderers of HumanSD's pose maps (the `pose_map` the model is conditioned on) and overlays.

Two styles:

* HumanSD (spec 3.5): 16 limbs, seaborn "hls" colours, `cv2.line` thickness 10 plus radius-5 dots at both ends.
  `SkeletonRule.INFERENCE` is `draw_humansd_skeleton` of `scripts/pose2img.py`; `SkeletonRule.TRAIN` is the
  dataset's `plot_kpts`, which additionally skips the (-1, -1, 0) placeholders of joints lost by augmentation.
* OpenPose-18 (spec 5.5): the ControlNet / T2I-Adapter skeleton, `draw_controlnet_skeleton` of the same script.

Both are reproduced call for call (same cv2 primitives, same int truncation, same float dtype for the
arithmetic), so maps match the original pixel for pixel.

References:
    HumanSD, https://github.com/IDEA-Research/HumanSD (c5db29d), ldm/data/humansd.py (`plot_kpts`),
        scripts/pose2img.py (`draw_humansd_skeleton`, `draw_controlnet_skeleton`).
    ControlNet, https://github.com/lllyasviel/ControlNet, annotator/openpose/util.py (`draw_bodypose`).
    seaborn `hls_palette`, https://seaborn.pydata.org/generated/seaborn.hls_palette.html.
"""

from __future__ import annotations

import colorsys
import logging
import math
from enum import StrEnum

import cv2
import numpy as np

from ldm.pose.convert import check_coco_array, coco_to_openpose18
from ldm.pose.keypoints import HUMANSD_LIMBS, Pose

logger = logging.getLogger(__name__)

HUMANSD_LINE_WIDTH = 10
OPENPOSE_STICK_WIDTH = 4
OPENPOSE_JOINT_RADIUS = 4
# Coordinates beyond this many pixels are rejected: cv2 takes int32 points and would fail with an obscure error.
MAX_ABS_COORDINATE = 1e7

# 1-based OpenPose-18 pairs; HumanSD draws the first 17 (the two ear-shoulder pairs are left out).
OPENPOSE_LIMBS: tuple[tuple[int, int], ...] = (
    (2, 3),
    (2, 6),
    (3, 4),
    (4, 5),
    (6, 7),
    (7, 8),
    (2, 9),
    (9, 10),
    (10, 11),
    (2, 12),
    (12, 13),
    (13, 14),
    (2, 1),
    (1, 15),
    (15, 17),
    (1, 16),
    (16, 18),
)

# RGB colour of OpenPose limb i and of OpenPose joint i.
OPENPOSE_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (255, 85, 0),
    (255, 170, 0),
    (255, 255, 0),
    (170, 255, 0),
    (85, 255, 0),
    (0, 255, 0),
    (0, 255, 85),
    (0, 255, 170),
    (0, 255, 255),
    (0, 170, 255),
    (0, 85, 255),
    (0, 0, 255),
    (85, 0, 255),
    (170, 0, 255),
    (255, 0, 255),
    (255, 0, 170),
    (255, 0, 85),
)


class SkeletonStyle(StrEnum):
    """Which skeleton a pose map is drawn in."""

    HUMANSD = "humansd"
    OPENPOSE = "openpose"


class SkeletonRule(StrEnum):
    """When a HumanSD limb qualifies for drawing (spec 3.5)."""

    INFERENCE = "inference"  # both scores > threshold (default threshold 0.05)
    TRAIN = "train"  # both int(x) != -1, int(y) != -1 and scores > threshold (default threshold 0.02)


DEFAULT_THRESHOLDS: dict[SkeletonRule, float] = {SkeletonRule.INFERENCE: 0.05, SkeletonRule.TRAIN: 0.02}


def hls_palette(
    n_colors: int, *, h: float = 0.01, lightness: float = 0.6, saturation: float = 0.65
) -> list[tuple[float, float, float]]:
    """Evenly spaced hues in HLS space (seaborn's `hls_palette` formula), as float RGB in [0, 1].

    Hue i = (i / n_colors + h) mod 1; each colour is `colorsys.hls_to_rgb(hue, lightness, saturation)`.

    Args:
        n_colors: number of colours.
        h: hue offset of the first colour.
        lightness: HLS lightness in [0, 1].
        saturation: HLS saturation in [0, 1].

    Returns:
        `n_colors` (r, g, b) float tuples.
    """
    hues = [(i / n_colors + h) % 1.0 for i in range(n_colors)]
    return [colorsys.hls_to_rgb(hue, lightness, saturation) for hue in hues]


# RGB uint8 colour of HumanSD limb i: int(255 * c) truncation, as the original.
HUMANSD_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    (int(255 * r), int(255 * g), int(255 * b)) for r, g, b in hls_palette(len(HUMANSD_LIMBS))
)


def _check_size(height: int, width: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"Pose-map {name} must be a positive integer; got {value!r}.")


def _check_drawable(keypoints: np.ndarray) -> np.ndarray:
    arr = check_coco_array(keypoints)
    if arr.size and np.abs(arr[..., :2]).max() > MAX_ABS_COORDINATE:
        raise ValueError(
            f"Keypoint coordinates must lie within +-{MAX_ABS_COORDINATE:.0e} pixels; got a maximum magnitude of "
            f"{np.abs(arr[..., :2]).max():.3g}. Check the pose's units (pixels expected)."
        )
    return arr


def _qualifies(kpts: np.ndarray, joint: int, rule: SkeletonRule, threshold: float) -> bool:
    if rule is SkeletonRule.TRAIN and (int(kpts[joint, 0]) == -1 or int(kpts[joint, 1]) == -1):
        return False
    return bool(kpts[joint, 2] > threshold)


def draw_humansd_skeleton(
    keypoints: np.ndarray,
    height: int,
    width: int,
    *,
    threshold: float | None = None,
    rule: SkeletonRule | str = SkeletonRule.INFERENCE,
    canvas: np.ndarray | None = None,
    line_width: int = HUMANSD_LINE_WIDTH,
) -> np.ndarray:
    """Draw HumanSD's 16-limb skeleton exactly as the original (spec 3.5).

    Per person whose keypoints sum to > 0 (the original's person test, placeholders included), per limb in
    `HUMANSD_LIMBS` order whose two joints qualify (`SkeletonRule`): `cv2.line` of width 10 (LINE_8) between the
    int-truncated endpoints, then filled radius-5 circles at both endpoints, all in the limb's `HUMANSD_COLORS`.
    Later limbs and persons overdraw earlier ones. Filtering persons by their person score is the caller's job
    (`render_pose_map` does it).

    Args:
        keypoints: (P, 17, 3) COCO-17 (x, y, score) in pixels of the canvas; P may be 0.
        height: canvas height in pixels.
        width: canvas width in pixels.
        threshold: joint-score threshold (strict >); None means the rule's default (0.05 inference, 0.02 train).
        rule: `SkeletonRule.INFERENCE` or `SkeletonRule.TRAIN` (or their string values).
        canvas: optional (height, width, 3) uint8 RGB image to draw on; it is copied, never modified.
        line_width: limb width in pixels (10 as the original at 512 px; smaller canvases, such as the tiny
            mannequin world's, scale it down). Joint dots have radius line_width // 2.

    Returns:
        (height, width, 3) uint8 RGB pose map, black background unless `canvas` is given.
    """
    _check_size(height, width)
    rule = SkeletonRule(rule)
    threshold = DEFAULT_THRESHOLDS[rule] if threshold is None else float(threshold)
    kpts_all = _check_drawable(keypoints)
    if canvas is None:
        out = np.zeros((height, width, 3), dtype=np.uint8)
    else:
        if canvas.shape != (height, width, 3) or canvas.dtype != np.uint8:
            raise ValueError(f"canvas must be a ({height}, {width}, 3) uint8 array; got {canvas.shape} {canvas.dtype}.")
        out = canvas.copy()
    # The original drew integer colours on a float64 canvas; on uint8 the rasterisation and values are identical.
    if not isinstance(line_width, (int, np.integer)) or line_width < 1:
        raise ValueError(f"line_width must be a positive integer; got {line_width!r}.")
    radius = int(line_width) // 2
    for kpts in kpts_all:
        if not np.sum(kpts) > 0:
            continue
        for limb_index, (a, b) in enumerate(HUMANSD_LIMBS):
            if not (_qualifies(kpts, a, rule, threshold) and _qualifies(kpts, b, rule, threshold)):
                continue
            color = HUMANSD_COLORS[limb_index]
            pa = (int(kpts[a, 0]), int(kpts[a, 1]))
            pb = (int(kpts[b, 0]), int(kpts[b, 1]))
            cv2.line(out, pa, pb, color, int(line_width))
            cv2.circle(out, pa, radius, color, -1)
            cv2.circle(out, pb, radius, color, -1)
    return out


def _draw_openpose_limbs(canvas: np.ndarray, candidate: np.ndarray, threshold: float) -> np.ndarray:
    """Blend the 17 limb ellipses of one person onto a float64 canvas (0.4 old + 0.6 new per limb)."""
    for limb_index, (a1, b1) in enumerate(OPENPOSE_LIMBS):
        ja, jb = candidate[a1 - 1], candidate[b1 - 1]
        if not (ja[2] > threshold and jb[2] > threshold):
            continue
        # Same operand order and dtype as the original: xs/ys list the limb's second joint first.
        xs = np.array([jb[0], ja[0]], dtype=candidate.dtype)
        ys = np.array([jb[1], ja[1]], dtype=candidate.dtype)
        mean_x, mean_y = np.mean(xs), np.mean(ys)
        length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        polygon = cv2.ellipse2Poly(
            (int(mean_x), int(mean_y)), (int(length / 2), OPENPOSE_STICK_WIDTH), int(angle), 0, 360, 1
        )
        limb_layer = canvas.copy()
        cv2.fillConvexPoly(limb_layer, polygon, OPENPOSE_COLORS[limb_index])
        canvas = cv2.addWeighted(canvas, 0.4, limb_layer, 0.6, 0)
    return canvas


def draw_openpose_skeleton(
    keypoints: np.ndarray, height: int, width: int, *, threshold: float = 0.05, as_float: bool = False
) -> np.ndarray:
    """Draw the OpenPose-18 skeleton HumanSD fed to ControlNet / T2I-Adapter (spec 5.5).

    Per person (all on one float64 canvas): convert to OpenPose-18 (`coco_to_openpose18`, neck rule with the same
    threshold); for each of the 17 limbs with both scores > threshold fill an `ellipse2Poly` ellipse (centre = int
    of the mean, axes (int(length / 2), 4), int angle) on a copy and blend canvas = 0.4 canvas + 0.6 copy; then
    filled radius-4 circles at every joint with score > threshold. Limb i and joint i use `OPENPOSE_COLORS[i]`.

    Args:
        keypoints: (P, 17, 3) COCO-17 (x, y, score) in pixels; P may be 0.
        height: canvas height in pixels.
        width: canvas width in pixels.
        threshold: joint-score threshold (strict >).
        as_float: return the float64 canvas (what the original divided by 255 as ControlNet's control input)
            instead of uint8.

    Returns:
        (height, width, 3) RGB map: uint8 by truncation (`astype(np.uint8)`, as the original's gallery image), or
        float64 in [0, 255] when `as_float`.
    """
    _check_size(height, width)
    kpts_all = _check_drawable(keypoints)
    canvas = np.zeros((height, width, 3), dtype=np.float64)
    for candidate in coco_to_openpose18(kpts_all, threshold=threshold):
        canvas = _draw_openpose_limbs(canvas, candidate, threshold)
        for joint, (x, y, score) in enumerate(candidate):
            if score > threshold:
                cv2.circle(canvas, (int(x), int(y)), OPENPOSE_JOINT_RADIUS, OPENPOSE_COLORS[joint], thickness=-1)
    if as_float:
        return canvas
    return canvas.astype(np.uint8)


def overlay_skeleton(image: np.ndarray, pose_map: np.ndarray, *, alpha: float = 1.0) -> np.ndarray:
    """Paste a pose map's skeleton pixels over an image (the original's `pose_samples` log, spec 4.5).

    A pose-map pixel is background iff its channels sum to 0 (black); every other pixel replaces the image pixel
    (alpha 1, the original) or is blended with it: out = (1 - alpha) image + alpha pose. A pose map of another size
    is resized to the image with nearest-neighbour interpolation, so no new colours appear.

    Args:
        image: (H, W, 3) uint8 RGB image.
        pose_map: (h, w, 3) uint8 RGB pose map, black background.
        alpha: opacity of the skeleton in [0, 1].

    Returns:
        (H, W, 3) uint8 RGB image.
    """
    for name, arr in (("image", image), ("pose_map", pose_map)):
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"overlay_skeleton: {name} must be an (H, W, 3) uint8 array; got {arr.shape} {arr.dtype}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay_skeleton: alpha must be in [0, 1]; got {alpha}.")
    height, width = image.shape[:2]
    if pose_map.shape[:2] != (height, width):
        pose_map = cv2.resize(pose_map, (width, height), interpolation=cv2.INTER_NEAREST)
    mask = pose_map.astype(np.int32).sum(axis=2) > 0
    out = image.copy()
    blended = (1.0 - alpha) * image[mask].astype(np.float64) + alpha * pose_map[mask].astype(np.float64)
    out[mask] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def render_pose_map(
    pose: Pose,
    *,
    style: SkeletonStyle | str = SkeletonStyle.HUMANSD,
    threshold: float = 0.05,
    line_width: int = HUMANSD_LINE_WIDTH,
) -> np.ndarray:
    """Render a `Pose` at its own size the way HumanSD does at inference.

    Persons with person score <= threshold are dropped first (as `scripts/pose2img.py`), then the remaining
    joints are drawn with the same threshold.

    Args:
        pose: the pose; the map is `pose.height` x `pose.width`.
        style: `SkeletonStyle.HUMANSD` (the HumanSD model's condition) or `SkeletonStyle.OPENPOSE` (ControlNet's).
        threshold: person and joint score threshold (strict >).
        line_width: HumanSD limb width (see `draw_humansd_skeleton`); the OpenPose style ignores it.

    Returns:
        (pose.height, pose.width, 3) uint8 RGB pose map.
    """
    style = SkeletonStyle(style)
    # Compared in float32 like the original's np.float32 person scores, so a score of exactly float32(0.05) is dropped.
    kept = [p.keypoints for p in pose.persons if np.float32(p.score) > threshold]
    kpts = np.stack(kept) if kept else np.zeros((0, 17, 3), dtype=np.float32)
    if style is SkeletonStyle.HUMANSD:
        return draw_humansd_skeleton(kpts, pose.height, pose.width, threshold=threshold, line_width=line_width)
    return draw_openpose_skeleton(kpts, pose.height, pose.width, threshold=threshold)
