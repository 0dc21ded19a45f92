"""COCO-17 keypoint vocabulary and the typed pose structures used everywhere in the project.

Everything that needs joint names, the skeleton, flip pairs or OKS sigmas imports them from here;
no other module re-declares them.

References:
    COCO keypoint task, https://cocodataset.org/#keypoints-eval (sigmas, joint order).
    HumanSD, https://github.com/IDEA-Research/HumanSD (c5db29d), ldm/data/humansd.py (16-limb skeleton).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NUM_KEYPOINTS = 17

COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

# The 16 limbs HumanSD draws, in drawing order (there is no shoulder-shoulder or hip-hip segment).
HUMANSD_LIMBS: tuple[tuple[int, int], ...] = (
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (5, 11),
    (6, 12),
    (11, 13),
    (12, 14),
    (13, 15),
    (14, 16),
)

# Index of the horizontally mirrored joint (left <-> right), used by flip augmentation and flip test.
COCO_FLIP_INDEX: tuple[int, ...] = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)

# Per-keypoint OKS sigmas of the COCO keypoint evaluation (pycocotools' defaults).
COCO_OKS_SIGMAS: tuple[float, ...] = (
    0.026,
    0.025,
    0.025,
    0.035,
    0.035,
    0.079,
    0.079,
    0.072,
    0.072,
    0.062,
    0.062,
    0.107,
    0.107,
    0.087,
    0.087,
    0.089,
    0.089,
)


@dataclass
class Person:
    """One person's COCO-17 pose.

    Args:
        keypoints: (17, 3) float32 array of (x, y, score) in pixel coordinates of the image the pose belongs to.
            A missing joint has score 0 (its x, y are ignored).
        score: person-level confidence (detector output), 1.0 for annotations.
        bbox: optional (x, y, w, h) box in pixels.
    """

    keypoints: np.ndarray
    score: float = 1.0
    bbox: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        kpts = np.asarray(self.keypoints, dtype=np.float32)
        if kpts.shape != (NUM_KEYPOINTS, 3):
            raise ValueError(f"Person keypoints must have shape (17, 3) as (x, y, score); got {kpts.shape}.")
        if not np.isfinite(kpts).all():
            raise ValueError("Person keypoints contain NaN or infinite values; mark a missing joint with score 0.")
        self.keypoints = kpts
        self.score = float(self.score)

    @property
    def visible(self) -> np.ndarray:
        """(17,) bool mask of joints with a positive score."""
        return self.keypoints[:, 2] > 0

    def bbox_from_keypoints(self) -> tuple[float, float, float, float] | None:
        """Tight (x, y, w, h) box around the visible joints, or None when no joint is visible."""
        vis = self.keypoints[self.visible]
        if len(vis) == 0:
            return None
        x0, y0 = vis[:, 0].min(), vis[:, 1].min()
        x1, y1 = vis[:, 0].max(), vis[:, 1].max()
        return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


@dataclass
class Pose:
    """A multi-person pose on an image of a known size.

    Args:
        persons: the people, possibly none (an empty pose is valid input for generation: it renders a black map).
        width: image width in pixels the coordinates refer to.
        height: image height in pixels.
    """

    persons: list[Person] = field(default_factory=list)
    width: int = 512
    height: int = 512

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"Pose image size must be positive; got width={self.width}, height={self.height}.")

    def to_array(self) -> np.ndarray:
        """(P, 17, 3) float32 array of all persons (P may be 0)."""
        if not self.persons:
            return np.zeros((0, NUM_KEYPOINTS, 3), dtype=np.float32)
        return np.stack([p.keypoints for p in self.persons]).astype(np.float32)

    @classmethod
    def from_array(cls, keypoints: np.ndarray, *, width: int, height: int) -> Pose:
        """Build a pose from a (P, 17, 3) array (x, y, score); validates shape and finiteness."""
        arr = np.asarray(keypoints, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[1:] != (NUM_KEYPOINTS, 3):
            raise ValueError(f"Pose array must have shape (persons, 17, 3) as (x, y, score); got {arr.shape}.")
        return cls([Person(k) for k in arr], width=width, height=height)
