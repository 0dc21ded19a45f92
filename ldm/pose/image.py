"""Turning whatever a user hands us (path, PIL image, array) into one canonical RGB uint8 array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

ImageLike = str | Path | Image.Image | np.ndarray


def to_rgb_uint8(image: ImageLike) -> np.ndarray:
    """Load or convert an image to an (H, W, 3) uint8 RGB array.

    Grayscale is replicated to 3 channels; RGBA is composited on black (the pose-map background);
    float arrays are taken to be in [0, 1].

    Args:
        image: a file path, a PIL image, or an array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4).

    Returns:
        (H, W, 3) uint8 array.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is not a readable image, or the array has an unsupported shape/dtype.
    """
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"Image file not found: {path}")
        try:
            with Image.open(path) as im:
                im.load()
                image = im.copy()
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"Not a readable image file: {path} ({err})") from None
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
            rgb = rgba[..., :3] * (rgba[..., 3:] / 255.0)
            return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    if not isinstance(image, np.ndarray):
        raise ValueError(f"Expected an image path, PIL image or numpy array; got {type(image).__name__}.")
    arr = image
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"Image array has unsupported dtype {arr.dtype}.")
        if np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(arr).all():
                raise ValueError("Image array contains NaN or infinite values.")
            arr = np.clip(arr * 255.0 + 0.5, 0, 255)
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or min(arr.shape[:2]) < 1:
        raise ValueError(f"Image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {image.shape}.")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        alpha = arr[..., 3:].astype(np.float32) / 255.0
        arr = np.clip(arr[..., :3].astype(np.float32) * alpha + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)
