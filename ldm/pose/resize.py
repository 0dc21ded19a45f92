"""Pre-processing resize of the bottom-up pose pipeline and the mapping back (step 9 of ``ldm.pose.bottom_up``).

The short side is resized to ``input_size`` and the long side to the same scale rounded up to a multiple of
``size_divisor`` (zero padding at the right/bottom), as MMPose 0.29's HigherHRNet test path; with UDP
(unbiased data processing) the scale is measured in ``side - 1`` units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ResizeTransform",
    "compute_resize",
    "map_keypoints_to_network",
    "resize_batch_for_network",
    "resize_for_network",
]


@dataclass(frozen=True)
class ResizeTransform:
    """How an image was resized for the network, and how to map predictions back.

    Args:
        input_width: network input width (multiple of ``size_divisor``). input_height: same for the height.
        center: (x, y) centre of the region mapped onto the input, in image pixels.
        scale: (w, h) size of that region in image pixels; with UDP in ``side - 1`` units (the short side's
            scale is ``side - 1``, the long side's ``(input_long - 1) / (input_short - 1) * (short - 1)``).
        use_udp: which convention ``scale`` follows.
    """

    input_width: int
    input_height: int
    center: tuple[float, float]
    scale: tuple[float, float]
    use_udp: bool = True

    def image_to_input_matrix(self) -> np.ndarray:
        """(2, 3) affine matrix taking image pixels to network-input pixels (for ``cv2.warpAffine``)."""
        if self.use_udp:
            # UDP maps pixel centres: [0, scale] -> [0, input - 1] (float32 like the reference's warp matrix).
            size_dst = np.array([self.input_width, self.input_height], np.float32) - 1
            ratio = size_dst / np.array(self.scale, np.float32)
            return np.array([[ratio[0], 0, 0], [0, ratio[1], 0]], np.float32)
        ratio = self.input_width / self.scale[0]  # box edges [c - s/2, c + s/2] -> [0, input]
        tx = self.input_width / 2 - self.center[0] * ratio
        ty = self.input_height / 2 - self.center[1] * ratio
        return np.array([[ratio, 0, tx], [0, ratio, ty]], np.float64)

    def heatmap_to_image(self, coords: np.ndarray, heatmap_width: int, heatmap_height: int) -> np.ndarray:
        """(9) Map (..., 2) heatmap (x, y) coordinates to image pixels.

        Args:
            coords: (..., 2) x, y on a heatmap of size ``heatmap_width`` x ``heatmap_height``.
            heatmap_width: W of the heatmap the coordinates refer to. heatmap_height: its H.

        Returns:
            (..., 2) float32 image coordinates.
        """
        xy = np.asarray(coords, np.float64)
        if self.use_udp:
            factor = np.array([self.scale[0] / (heatmap_width - 1), self.scale[1] / (heatmap_height - 1)])
            return (xy * factor).astype(np.float32)
        factor = np.array([self.scale[0] / heatmap_width, self.scale[1] / heatmap_height])
        origin = np.array(self.center) - np.array(self.scale) / 2
        return (xy * factor + origin).astype(np.float32)


def _ceil_to_multiple(value: float, base: int) -> int:
    return int(math.ceil(value / base)) * base


def compute_resize(
    height: int, width: int, *, input_size: int = 512, size_divisor: int = 64, use_udp: bool = True
) -> ResizeTransform:
    """Network input size and mapping for an image: short side -> ``input_size``, long side rounded up.

    Args:
        height: image height in pixels. width: image width in pixels.
        input_size: target short side (rounded up to a multiple of ``size_divisor``).
        size_divisor: both input sides are multiples of this.
        use_udp: UDP (``side - 1``) scale convention; otherwise MMPose's pixel-box convention.

    Returns:
        :class:`ResizeTransform`.
    """
    if height < 1 or width < 1:
        raise ValueError(f"Image size must be positive; got {height}x{width}.")
    short_target = _ceil_to_multiple(input_size, size_divisor)
    if width < height:
        in_w, in_h = short_target, _ceil_to_multiple(short_target / width * height, size_divisor)
        if use_udp:
            scale = (width - 1.0, (in_h - 1.0) / (in_w - 1.0) * (width - 1.0))
        else:
            scale = (float(width), in_h / in_w * width)
    else:
        in_h, in_w = short_target, _ceil_to_multiple(short_target / height * width, size_divisor)
        if use_udp:
            scale = ((in_w - 1.0) / (in_h - 1.0) * (height - 1.0), height - 1.0)
        else:
            scale = (in_w / in_h * height, float(height))
    if use_udp:
        center = (scale[0] / 2, scale[1] / 2)
    else:
        center = (float(round(width / 2.0)), float(round(height / 2.0)))
    return ResizeTransform(in_w, in_h, center, scale, use_udp)


def resize_for_network(image: np.ndarray, transform: ResizeTransform) -> np.ndarray:
    """Warp an (H, W, 3) uint8 image to the network input size (bilinear, zero padding right/bottom).

    Args:
        image: (H, W, 3) uint8 RGB.
        transform: from :func:`compute_resize` for this image's size.

    Returns:
        (input_height, input_width, 3) uint8.
    """
    size = (transform.input_width, transform.input_height)
    return cv2.warpAffine(image, transform.image_to_input_matrix(), size, flags=cv2.INTER_LINEAR)


def resize_batch_for_network(images: torch.Tensor, transform: ResizeTransform) -> torch.Tensor:
    """Warp a (B, C, H, W) float batch to the network input size: :func:`resize_for_network` for tensors.

    Same affine map and the same sampling as ``cv2.warpAffine(..., INTER_LINEAR)`` (pixel centres at integer
    coordinates, bilinear, zeros outside the image), without rounding to uint8; differentiable.

    Args:
        images: (B, C, H, W) float tensor.
        transform: from :func:`compute_resize` for (H, W).

    Returns:
        (B, C, input_height, input_width) tensor.
    """
    height, width = images.shape[-2:]
    matrix = transform.image_to_input_matrix().astype(np.float64)
    (ax, _, tx), (_, ay, ty) = matrix
    # Source pixel of every output pixel, then grid_sample's [-1, 1] coordinates (align_corners=True convention).
    u = torch.arange(transform.input_width, dtype=torch.float64)
    v = torch.arange(transform.input_height, dtype=torch.float64)
    gx = ((u - tx) / ax) * 2 / max(width - 1, 1) - 1
    gy = ((v - ty) / ay) * 2 / max(height - 1, 1) - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)  # (h_in, w_in, 2) as (x, y)
    grid = grid.to(images.device, images.dtype).expand(images.shape[0], -1, -1, -1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def map_keypoints_to_network(keypoints: torch.Tensor, transform: ResizeTransform) -> torch.Tensor:
    """(..., 3) keypoints (x, y, score) in image pixels -> network-input pixels; scores unchanged."""
    matrix = torch.as_tensor(transform.image_to_input_matrix(), dtype=keypoints.dtype, device=keypoints.device)
    xy = keypoints[..., :2] @ matrix[:, :2].T + matrix[:, 2]
    return torch.cat([xy, keypoints[..., 2:]], dim=-1)
