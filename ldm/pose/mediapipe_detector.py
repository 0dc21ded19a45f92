"""Optional single-person pose detector on MediaPipe BlazePose, returning COCO-17 `Person`s.

A light CPU alternative to the original's HigherHRNet (MMPose) for turning a photo into a pose. BlazePose finds at
most one person. Only `model_complexity=1` is used: its model ships inside the mediapipe wheel, while
complexities 0 and 2 download weights at run time.

Install (mediapipe's declared dependencies pull in packages we do not need, hence `--no-deps`):
    pip install -r requirements-mediapipe.txt && pip install --no-deps mediapipe==0.10.21

References:
    Bazarevsky et al., "BlazePose: On-device Real-time Body Pose tracking", arXiv:2006.10204 (2020).
    MediaPipe Pose landmarks, https://github.com/google-ai-edge/mediapipe/blob/master/docs/solutions/pose.md.
"""

from __future__ import annotations

import logging
from types import ModuleType, TracebackType

import numpy as np

from ldm.pose.image import ImageLike, to_rgb_uint8
from ldm.pose.keypoints import Person

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install -r requirements-mediapipe.txt && pip install --no-deps mediapipe==0.10.21"

# COCO-17 joint i <- BlazePose landmark BLAZEPOSE_FROM_COCO[i]. Both name sides from the subject's point of view
# (BlazePose 11 is the left shoulder, like COCO 5).
BLAZEPOSE_FROM_COCO: tuple[int, ...] = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)

# Bundled in the wheel; 0 and 2 would download a model on first use.
MODEL_COMPLEXITY = 1


def _import_mediapipe() -> ModuleType:
    try:
        import mediapipe
    except ImportError as err:
        raise ImportError(
            f"MediaPipeDetector needs the optional mediapipe package ({err}). Install: {INSTALL_HINT}"
        ) from err
    return mediapipe


class MediaPipeDetector:
    """Detect one person's COCO-17 pose with MediaPipe BlazePose (CPU).

    Joint score = BlazePose landmark visibility; joints predicted outside the image get score 0 (as the pose
    readers do); the person score is the mean of the 17 joint scores.

    Args:
        min_detection_confidence: BlazePose person-detector threshold in [0, 1].

    Example:
        >>> with MediaPipeDetector() as detector:
        ...     persons = detector.detect("photo.jpg")
    """

    def __init__(self, *, min_detection_confidence: float = 0.5) -> None:
        if not 0.0 <= min_detection_confidence <= 1.0:
            raise ValueError(f"min_detection_confidence must be in [0, 1]; got {min_detection_confidence}.")
        mediapipe = _import_mediapipe()
        self._pose = mediapipe.solutions.pose.Pose(
            static_image_mode=True,
            model_complexity=MODEL_COMPLEXITY,
            min_detection_confidence=min_detection_confidence,
        )

    def detect(self, image: ImageLike) -> list[Person]:
        """Find the (single) person in an image.

        Args:
            image: path, PIL image or (H, W[, C]) array, converted by `to_rgb_uint8` (RGB, uint8).

        Returns:
            `[person]` with keypoints (17, 3) (x, y, score) in pixels of `image`, or `[]` when nobody is found.
        """
        rgb = to_rgb_uint8(image)
        result = self._pose.process(rgb)
        if result.pose_landmarks is None:
            return []
        height, width = rgb.shape[:2]
        landmarks = result.pose_landmarks.landmark
        kpts = np.array(
            [[landmarks[i].x * width, landmarks[i].y * height, landmarks[i].visibility] for i in BLAZEPOSE_FROM_COCO],
            dtype=np.float32,
        )  # (17, 3)
        outside = ~((kpts[:, 0] >= 0) & (kpts[:, 0] < width) & (kpts[:, 1] >= 0) & (kpts[:, 1] < height))
        kpts[outside, 2] = 0.0
        logger.debug("MediaPipe found a person; %d of 17 joints outside the image.", int(outside.sum()))
        return [Person(kpts, score=float(kpts[:, 2].mean()))]

    def close(self) -> None:
        """Release the MediaPipe graph."""
        self._pose.close()

    def __enter__(self) -> MediaPipeDetector:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
