"""Batch keys shared by datasets, the training module, callbacks and metrics (one closed vocabulary)."""

from __future__ import annotations

from enum import StrEnum


class BatchKey(StrEnum):
    """Keys of a training/validation batch.

    IMAGE: (B, 3, H, W) float32 in [-1, 1], RGB.
    POSE_MAP: (B, 3, H, W) float32 in [-1, 1], the rendered skeleton (black background = -1).
    CAPTION: list of B prompts.
    KEYPOINTS: (B, max_persons, 17, 3) float32 (x, y, score) in pixels of the (augmented) image; missing
        persons/joints are (-1, -1, 0), as the original's `pose` key.
    PATH: list of B image paths relative to the dataset root (for logging and metrics).
    IMAGE_MOMENTS: (B, 2z, h, w) float32 VAE posterior moments (mean then logvar) of the image, from a latent
        cache (`ldm.data.latent_cache`); replaces IMAGE: the training step samples the latent from them.
    POSE_MOMENTS: (B, 2z, h, w) float32 VAE posterior moments of the pose map; replaces POSE_MAP likewise.
    """

    IMAGE = "image"
    POSE_MAP = "pose_map"
    CAPTION = "caption"
    KEYPOINTS = "keypoints"
    PATH = "path"
    IMAGE_MOMENTS = "image_moments"
    POSE_MOMENTS = "pose_moments"
