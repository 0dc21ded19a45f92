"""Turn what a user points at (pose file, skeleton image, photo) into a pose the pipeline accepts."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path

import numpy as np
from PIL import Image

from ldm.pose.convert import rescale_pose, resize_for_generation
from ldm.pose.image import to_rgb_uint8
from ldm.pose.keypoints import Pose

logger = logging.getLogger(__name__)

POSE_FILE_SUFFIXES = {".npz", ".json"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class PoseSource(StrEnum):
    """How an image given as pose is interpreted."""

    AUTO = "auto"
    SKELETON = "skeleton"
    PHOTO = "photo"


def looks_like_skeleton(image: np.ndarray, *, black_fraction: float = 0.6) -> bool:
    """A rendered skeleton is mostly pure black background; a photo is not."""
    return float((image.max(axis=2) <= 8).mean()) >= black_fraction


def generation_size(height: int, width: int, *, multiple: int = 64, short_side: int = 512) -> tuple[int, int]:
    """Short side `short_side`, both sides multiples of `multiple` (the original's resize rule)."""
    return resize_for_generation(height, width, short_side, multiple)


def load_pose_input(
    path: str | Path,
    *,
    source: PoseSource | str = PoseSource.AUTO,
    detector=None,
    multiple: int = 64,
    short_side: int = 512,
) -> tuple[Pose | np.ndarray, tuple[int, int]]:
    """Read a pose for generation and the (height, width) to generate at.

    Args:
        path: a pose file (.npz, COCO/OpenPose/plain JSON) or an image (skeleton rendering or photo).
        source: for images: "skeleton" uses it as the pose map, "photo" detects a pose with `detector`, "auto"
            decides by the fraction of black pixels.
        detector: object with `detect(image) -> list[Person]` (see `ldm.pose.estimator.build_detector`), needed
            for photos.
        multiple: output sides are multiples of this.
        short_side: output short side before rounding.

    Returns:
        (a `Pose` rescaled to the generation size or a resized skeleton image (H, W, 3) uint8, (H, W)).

    Raises:
        FileNotFoundError, ValueError: unreadable or malformed input, or no person detected in a photo.
    """
    from ldm.pose.io import load_pose

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Pose file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in POSE_FILE_SUFFIXES:
        pose = load_pose(path)
        h, w = generation_size(pose.height, pose.width, multiple=multiple, short_side=short_side)
        return rescale_pose(pose, w, h), (h, w)
    image = to_rgb_uint8(path)
    source = PoseSource(source)
    if source is PoseSource.AUTO:
        source = PoseSource.SKELETON if looks_like_skeleton(image) else PoseSource.PHOTO
    h, w = generation_size(*image.shape[:2], multiple=multiple, short_side=short_side)
    if source is PoseSource.SKELETON:
        return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.NEAREST)), (h, w)
    if detector is None:
        raise ValueError(
            f"{path} looks like a photo; pass a pose detector (e.g. --detector mediapipe) to read its pose."
        )
    persons = detector.detect(image)
    if not persons:
        raise ValueError(f"No person detected in {path}; use a pose file or a skeleton image instead.")
    logger.info("Detected %d person(s) in %s", len(persons), path)
    pose = Pose(list(persons), width=image.shape[1], height=image.shape[0])
    return rescale_pose(pose, w, h), (h, w)
