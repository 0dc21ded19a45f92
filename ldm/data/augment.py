"""Albumentations pipelines of the HumanSD dataset: the random training chain (spec 3.4) and a deterministic one.

The random chain is the original's, op for op and in the same order, with the original library defaults spelled
out where albumentations 2.x changed them (`Rotate` border: reflect-101, not constant). Keypoints travel with
the image as `format="xy"` points with one integer label per point (its person-joint slot), and points that
leave the image are dropped (`remove_invisible=True`).

Two things albumentations 2.x does differently from the 0.4.3 / 1.3.0 versions HumanSD pinned, handled here:

* With a reflecting border, `Rotate` adds a mirrored copy of every keypoint for each reflected tile of the image.
  A slot must map to one point (the joint's true position; the reflected image content has no skeleton, as in
  the original), so `SingleKeypointRotate` transforms keypoints with the plain affine map.
* Label fields given as Python lists come back as floats; slots are therefore passed as an int64 array.

The horizontal keypoint flip is x' = (W - 1) - x, as in albumentations 1.3.0 (spec 3.4).

References:
    HumanSD, https://github.com/IDEA-Research/HumanSD (c5db29d), ldm/data/humansd.py (the `A.Compose` chain).
    Albumentations 2.x, https://albumentations.ai/docs/ (`Compose(seed=...)`, `KeypointParams`,
        reproducibility guide).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.geometric import functional as fgeometric

# Name of the label field carrying each keypoint's slot index (person * 17 + joint).
SLOT_FIELD = "slot"

# Transforms that mirror the image (and so swap the person's handedness).
_REFLECTIONS = frozenset({"HorizontalFlip", "VerticalFlip"})


class SingleKeypointRotate(A.Rotate):
    """`A.Rotate` that maps each keypoint to exactly one point, whatever the border mode.

    Albumentations 2.x adds reflected copies of keypoints when `border_mode` reflects; the 0.4.3 / 1.3.0 versions
    the original used did not. Images, masks and boxes are rotated exactly as by `A.Rotate`.
    """

    def apply_to_keypoints(
        self,
        keypoints: np.ndarray,
        matrix: np.ndarray,
        x_min: int,
        x_max: int,
        y_min: int,
        y_max: int,
        **params: Any,
    ) -> np.ndarray:
        """Rotate (N, 5+) albumentations keypoints with the transform's affine matrix (no reflected copies)."""
        if self.crop_border:
            raise ValueError("SingleKeypointRotate does not support crop_border=True; use A.Rotate instead.")
        return fgeometric.keypoints_affine(
            keypoints, matrix, params["shape"][:2], scale={"x": 1, "y": 1}, border_mode=cv2.BORDER_CONSTANT
        )


def _check_probability(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1]; got {value!r}. Set it to 0 to disable the op.")
    return float(value)


def build_transform(
    image_size: int,
    *,
    augment: bool = True,
    hflip_p: float = 0.2,
    vflip_p: float = 0.1,
    rotate_p: float = 0.1,
    rotate_limit: float = 90.0,
    color_p: float = 0.4,
    brightness_contrast_p: float = 0.2,
    seed: int | None = None,
    save_applied_params: bool = False,
    mirror: bool = False,
) -> A.Compose:
    """Build the dataset's image + keypoint pipeline.

    Random chain (`augment=True`, spec 3.4, defaults = the original's probabilities): HorizontalFlip(hflip_p),
    VerticalFlip(vflip_p), Rotate(+-rotate_limit deg, linear, reflect-101 border; rotate_p),
    SmallestMaxSize(image_size, INTER_AREA), RandomCrop(image_size), OneOf(HueSaturationValue, RGBShift; color_p),
    RandomBrightnessContrast(brightness_contrast_p). Deterministic chain (`augment=False`, for validation and
    metrics): SmallestMaxSize(image_size, INTER_AREA) then CenterCrop(image_size).

    Call it as `transform(image=(H, W, 3) uint8, keypoints=(N, 2) float32 xy, slot=(N,) int64)`.

    Args:
        image_size: side of the square output crop in pixels.
        augment: random chain (True) or deterministic chain (False).
        hflip_p: probability of a horizontal flip.
        vflip_p: probability of a vertical flip.
        rotate_p: probability of a rotation.
        rotate_limit: rotation angle range in degrees, sampled uniformly in [-limit, limit].
        color_p: probability of one of HueSaturationValue / RGBShift (library default ranges).
        brightness_contrast_p: probability of RandomBrightnessContrast (+-0.2 each).
        seed: seed of the pipeline's own random generator (albumentations ignores the global seeds); None draws
            one from the OS.
        save_applied_params: record the applied ops under "applied_transforms" (needed by `is_mirrored`).
        mirror: deterministic chain only: flip horizontally first (the mirror image of the `augment=False`
            output; latent caches store both orientations this way).

    Returns:
        The `A.Compose` pipeline.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"image_size must be a positive integer; got {image_size!r}.")
    if mirror and augment:
        raise ValueError("mirror=True is for the deterministic chain (augment=False); use hflip_p with augment.")
    resize = A.SmallestMaxSize(max_size=image_size, interpolation=cv2.INTER_AREA, p=1.0)
    if augment:
        color_ops = [A.HueSaturationValue(p=0.5), A.RGBShift(p=0.5)]
        ops = [
            A.HorizontalFlip(p=_check_probability("hflip_p", hflip_p)),
            A.VerticalFlip(p=_check_probability("vflip_p", vflip_p)),
            SingleKeypointRotate(
                limit=(-rotate_limit, rotate_limit),
                interpolation=cv2.INTER_LINEAR,
                border_mode=cv2.BORDER_REFLECT_101,
                p=_check_probability("rotate_p", rotate_p),
            ),
            resize,
            A.RandomCrop(height=image_size, width=image_size, p=1.0),
            A.OneOf(color_ops, p=_check_probability("color_p", color_p)),
            A.RandomBrightnessContrast(p=_check_probability("brightness_contrast_p", brightness_contrast_p)),
        ]
    else:
        ops = [resize, A.CenterCrop(height=image_size, width=image_size, p=1.0)]
        if mirror:
            ops.insert(0, A.HorizontalFlip(p=1.0))
    return A.Compose(
        ops,
        keypoint_params=A.KeypointParams(format="xy", label_fields=[SLOT_FIELD], remove_invisible=True),
        seed=seed,
        save_applied_params=save_applied_params,
    )


def is_mirrored(applied_transforms: Sequence[tuple[str, Any]]) -> bool:
    """Whether the applied ops mirror the image: an odd number of horizontal/vertical flips.

    A flip is a reflection, so a mirrored person's left limbs appear where right limbs would be; two flips make a
    180-degree rotation, which is not a reflection.

    Args:
        applied_transforms: the `"applied_transforms"` entry of a `Compose(save_applied_params=True)` result,
            a list of (transform class name, params).

    Returns:
        True when the left/right joint labels should be swapped.
    """
    return sum(name in _REFLECTIONS for name, _ in applied_transforms) % 2 == 1
