"""Optional pose detector backed by an installed MMPose 1.x (``pip install mmpose mmcv mmengine``).

Not a dependency of this project: the native :class:`ldm.pose.estimator.PoseEstimator` reproduces HumanSD's
MMPose-0.x HigherHRNet without it. This wrapper lets users plug in any MMPose 1.x bottom-up model (config +
checkpoint) through the same :class:`ldm.pose.estimator.PoseDetector` protocol.

References:
    MMPose 1.x API: ``mmpose.apis.init_model``, ``mmpose.apis.inference_bottomup``
    (https://mmpose.readthedocs.io/en/latest/api.html#module-mmpose.apis).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ldm.pose.image import ImageLike, to_rgb_uint8
from ldm.pose.keypoints import NUM_KEYPOINTS, Person

logger = logging.getLogger(__name__)

_INSTALL_HINT = (
    "The 'mmpose' pose detector needs MMPose 1.x with its OpenMMLab dependencies "
    "(e.g. `pip install -U openmim && mim install mmengine 'mmcv>=2.0.0' 'mmpose>=1.0.0'`). "
    "Use build_detector('higherhrnet', ...) for the built-in detector that needs none of them."
)


def _import_mmpose_apis() -> tuple[Any, Any]:
    try:
        from mmpose.apis import inference_bottomup, init_model
    except ImportError as err:
        raise ImportError(f"{_INSTALL_HINT} (import failed: {err})") from err
    return init_model, inference_bottomup


class MMPoseDetector:
    """COCO-17 bottom-up detection through MMPose 1.x.

    Args:
        config: MMPose 1.x model config file (a bottom-up COCO-17 model).
        checkpoint: matching weights (path or URL understood by MMPose).
        device: torch device string for MMPose, e.g. ``"cpu"`` or ``"cuda:0"``.

    Raises:
        ImportError: MMPose 1.x is not installed.
    """

    def __init__(self, config: str | Path, checkpoint: str | Path, *, device: str = "cpu") -> None:
        init_model, self._inference_bottomup = _import_mmpose_apis()
        self.model = init_model(str(config), str(checkpoint), device=device)
        logger.info("Loaded MMPose model %s with weights %s on %s.", config, checkpoint, device)

    def detect(self, image: ImageLike) -> list[Person]:
        """Detect persons.

        Args:
            image: path, PIL image or array (converted with :func:`ldm.pose.image.to_rgb_uint8`).

        Returns:
            Persons sorted by score; the person score is MMPose's ``bbox_scores`` when the model provides one,
            else the mean keypoint score.
        """
        rgb = to_rgb_uint8(image)
        # MMPose 1.x treats arrays like OpenCV images (BGR) and converts to RGB in its data preprocessor.
        results = self._inference_bottomup(self.model, np.ascontiguousarray(rgb[..., ::-1]))
        instances = results[0].pred_instances
        keypoints = np.asarray(instances.keypoints, dtype=np.float32)  # (N, K, 2)
        scores = np.asarray(instances.keypoint_scores, dtype=np.float32)  # (N, K)
        if keypoints.ndim != 3 or keypoints.shape[1] != NUM_KEYPOINTS:
            raise ValueError(
                f"MMPoseDetector expects a COCO-17 model; the model returned keypoints of shape {keypoints.shape}."
            )
        if "bbox_scores" in instances:
            person_scores = np.asarray(instances.bbox_scores, dtype=np.float32).reshape(-1)
        else:
            person_scores = scores.mean(axis=1)
        persons = [
            Person(np.concatenate([kpts, s[:, None]], axis=1), score=float(ps))
            for kpts, s, ps in zip(keypoints, scores, person_scores)
        ]
        return sorted(persons, key=lambda p: p.score, reverse=True)
