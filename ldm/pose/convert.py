"""Keypoint-layout conversions (COCO-17 <-> OpenPose BODY-18 / BODY-25) and the generation-size rule.

The OpenPose-18 mapping and its neck rule follow HumanSD's `draw_controlnet_skeleton`, which turns MMPose COCO-17
detections into the skeleton ControlNet / T2I-Adapter were trained on. The size rule is HumanSD's `resize_image`
(itself ControlNet's): scale so the short side is 512, then round each side to the nearest multiple of 64.

References:
    HumanSD, https://github.com/IDEA-Research/HumanSD (c5db29d), scripts/pose2img.py (`resize_image`,
        `draw_controlnet_skeleton`); spec sections 5.1 and 5.5 of shared/spec/humansd-reference.md.
    OpenPose output format, https://github.com/CMU-Perceptual-Computing-Lab/openpose/blob/master/doc/02_output.md
        (BODY_18 = "COCO" model order, BODY_25 order).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from ldm.pose.keypoints import NUM_KEYPOINTS, Person, Pose

logger = logging.getLogger(__name__)

NUM_OPENPOSE18_KEYPOINTS = 18
NUM_OPENPOSE25_KEYPOINTS = 25
OPENPOSE_NECK = 1

OPENPOSE18_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "neck",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_eye",
    "left_eye",
    "right_ear",
    "left_ear",
)

# OpenPose-18 index -> COCO-17 source index; the neck (None) is synthesised from both shoulders.
OPENPOSE18_FROM_COCO: tuple[int | None, ...] = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)

# COCO-17 index -> OpenPose-18 index (the inverse of the table above, neck dropped).
COCO_FROM_OPENPOSE18: tuple[int, ...] = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)

# COCO-17 index -> OpenPose BODY_25 index. BODY_25 inserts "mid_hip" at 8 and appends 6 foot joints, so it is
# not "BODY-18 plus 7"; the first 18 entries of a BODY_25 list must not be read as BODY-18.
COCO_FROM_OPENPOSE25: tuple[int, ...] = (0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11)

# (H, W) multiple and short side of HumanSD's generation canvas.
GENERATION_SHORT_SIDE = 512
GENERATION_MULTIPLE = 64


def check_coco_array(keypoints: np.ndarray) -> np.ndarray:
    """Validate a (P, 17, 3) COCO keypoint array; floating dtypes are kept (float32 math must stay float32 for
    bit-exact rendering), anything else becomes float64.

    Args:
        keypoints: (P, 17, 3) array-like of (x, y, score).

    Returns:
        The array as a floating numpy array (no copy when already floating).
    """
    arr = np.asarray(keypoints)
    if arr.ndim != 3 or arr.shape[1:] != (NUM_KEYPOINTS, 3):
        raise ValueError(
            f"COCO keypoints must have shape (persons, 17, 3) as (x, y, score); got {arr.shape}. "
            "Use kpts[None] for a single person."
        )
    if not np.issubdtype(arr.dtype, np.floating):
        if not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"COCO keypoints must be numeric; got dtype {arr.dtype}.")
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("COCO keypoints contain NaN or infinite values; mark a missing joint with score 0.")
    return arr


def coco_to_openpose18(keypoints: np.ndarray, *, threshold: float = 0.05) -> np.ndarray:
    """Convert COCO-17 keypoints to the OpenPose BODY-18 layout (with a synthesised neck).

    Neck rule (spec 5.5): the neck is the mean of both shoulders' (x, y, score) when both shoulder scores are
    strictly greater than `threshold`, else the placeholder (-1, -1, 0). All other joints are copied unchanged.

    Args:
        keypoints: (P, 17, 3) COCO-17 (x, y, score) in pixels.
        threshold: shoulder score a neck needs on both sides (HumanSD uses its detection threshold, 0.05).

    Returns:
        (P, 18, 3) array in OpenPose-18 order (`OPENPOSE18_KEYPOINT_NAMES`), same floating dtype as the input.
    """
    coco = check_coco_array(keypoints)
    out = np.zeros((coco.shape[0], NUM_OPENPOSE18_KEYPOINTS, 3), dtype=coco.dtype)
    for op_index, coco_index in enumerate(OPENPOSE18_FROM_COCO):
        if coco_index is not None:
            out[:, op_index] = coco[:, coco_index]
    left, right = coco[:, 5], coco[:, 6]
    has_neck = (left[:, 2] > threshold) & (right[:, 2] > threshold)
    # Same operand order as the original ((right + left) / 2), so the float result is bit-identical.
    placeholder = np.array([-1.0, -1.0, 0.0], dtype=coco.dtype)
    out[:, OPENPOSE_NECK] = np.where(has_neck[:, None], (right + left) / 2, placeholder)
    return out


def openpose_to_coco(keypoints: np.ndarray) -> np.ndarray:
    """Convert OpenPose BODY-18 or BODY_25 keypoints to COCO-17 (the neck, mid-hip and feet are dropped).

    Args:
        keypoints: (P, 18, 3) or (P, 25, 3) OpenPose (x, y, score) in pixels; missing joints are (0, 0, 0).

    Returns:
        (P, 17, 3) float32 COCO-17 array.
    """
    arr = np.asarray(keypoints, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[1] not in (NUM_OPENPOSE18_KEYPOINTS, NUM_OPENPOSE25_KEYPOINTS):
        raise ValueError(f"OpenPose keypoints must have shape (persons, 18 or 25, 3); got {arr.shape}.")
    table = COCO_FROM_OPENPOSE18 if arr.shape[1] == NUM_OPENPOSE18_KEYPOINTS else COCO_FROM_OPENPOSE25
    return np.ascontiguousarray(arr[:, list(table)])


def resize_for_generation(
    height: int, width: int, short_side: int = GENERATION_SHORT_SIDE, multiple: int = GENERATION_MULTIPLE
) -> tuple[int, int]:
    """Canvas size HumanSD generates at for an input of size (height, width) (spec 5.1 `resize_image`).

    k = short_side / min(H, W); each side becomes round(side * k / multiple) * multiple, with numpy's
    round-half-to-even like the original. Examples: (512, 512) -> (512, 512); (768, 1024) -> (512, 704);
    (1080, 1920) -> (512, 896).

    Args:
        height: input height in pixels (> 0).
        width: input width in pixels (> 0).
        short_side: target length of the shorter side before rounding.
        multiple: both output sides are multiples of this (64 keeps the latent a multiple of 8).

    Returns:
        (new_height, new_width).
    """
    for name, value in (("height", height), ("width", width), ("short_side", short_side), ("multiple", multiple)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"resize_for_generation: {name} must be a positive integer; got {value!r}.")
    k = float(short_side) / min(float(height), float(width))
    new_h = int(np.round(height * k / multiple)) * multiple
    new_w = int(np.round(width * k / multiple)) * multiple
    if new_h <= 0 or new_w <= 0:
        raise ValueError(
            f"resize_for_generation: ({height}, {width}) with short_side={short_side}, multiple={multiple} "
            f"rounds to an empty canvas ({new_h}, {new_w}); use a larger short_side or a smaller multiple."
        )
    return new_h, new_w


def rescale_pose(pose: Pose, new_width: int, new_height: int) -> Pose:
    """Scale a pose's coordinates with its image: x *= new_width / width, y *= new_height / height.

    Joints with score <= 0 are left untouched so placeholders such as (-1, -1, 0) keep their meaning; scores,
    person scores and boxes (scaled) are carried over.

    Args:
        pose: the pose, in pixels of a `pose.width` x `pose.height` image.
        new_width: target image width in pixels (> 0).
        new_height: target image height in pixels (> 0).

    Returns:
        A new `Pose` of size (new_width, new_height).
    """
    if new_width <= 0 or new_height <= 0:
        raise ValueError(f"rescale_pose: new size must be positive; got {new_width}x{new_height} (W x H).")
    sx, sy = new_width / pose.width, new_height / pose.height
    persons = []
    for person in pose.persons:
        kpts = person.keypoints.copy()
        vis = kpts[:, 2] > 0
        kpts[vis, 0] *= sx
        kpts[vis, 1] *= sy
        bbox = None
        if person.bbox is not None:
            x, y, w, h = person.bbox
            bbox = (x * sx, y * sy, w * sx, h * sy)
        persons.append(Person(kpts, score=person.score, bbox=bbox))
    return Pose(persons, width=int(new_width), height=int(new_height))


def resize_image(
    image: np.ndarray, *, short_side: int = GENERATION_SHORT_SIDE, multiple: int = GENERATION_MULTIPLE
) -> np.ndarray:
    """Resize an image to its generation size (`resize_for_generation`) like HumanSD's `resize_image`.

    Uses LANCZOS4 when upscaling (k > 1) and INTER_AREA otherwise, as the original.

    Args:
        image: (H, W) or (H, W, C) array, any dtype cv2 accepts.
        short_side: see `resize_for_generation`.
        multiple: see `resize_for_generation`.

    Returns:
        The resized (H', W'[, C]) array, same dtype.
    """
    if image.ndim not in (2, 3):
        raise ValueError(f"resize_image: expected an (H, W) or (H, W, C) image; got shape {image.shape}.")
    height, width = image.shape[:2]
    new_h, new_w = resize_for_generation(height, width, short_side, multiple)
    upscale = short_side / min(height, width) > 1
    interpolation = cv2.INTER_LANCZOS4 if upscale else cv2.INTER_AREA
    return cv2.resize(image, (new_w, new_h), interpolation=interpolation)


def resize_image_and_pose(
    image: np.ndarray, pose: Pose, *, short_side: int = GENERATION_SHORT_SIDE, multiple: int = GENERATION_MULTIPLE
) -> tuple[np.ndarray, Pose]:
    """Resize an image to its generation size and scale its pose with it.

    Unlike the original CLI (which never rescaled keypoints, so large poses fell off the canvas), the pose follows
    the image.

    Args:
        image: (H, W, C) image the pose belongs to.
        pose: pose with `pose.width == W` and `pose.height == H`.
        short_side: see `resize_for_generation`.
        multiple: see `resize_for_generation`.

    Returns:
        (resized image (H', W', C), pose rescaled to (W', H')).
    """
    height, width = image.shape[:2]
    if (pose.width, pose.height) != (width, height):
        raise ValueError(
            f"resize_image_and_pose: pose is for a {pose.width}x{pose.height} image but the image is {width}x{height} "
            "(W x H); load the pose with the image's width/height or rescale_pose it first."
        )
    resized = resize_image(image, short_side=short_side, multiple=multiple)
    new_h, new_w = resized.shape[:2]
    logger.debug("Resized image and pose from %dx%d to %dx%d (W x H).", width, height, new_w, new_h)
    return resized, rescale_pose(pose, new_w, new_h)
