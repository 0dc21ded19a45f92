"""What the denoising network predicts, and conversions between eps, x0 and v.

References:
    Salimans & Ho, "Progressive Distillation for Fast Sampling of Diffusion Models", ICLR 2022 (v-prediction).
"""

from __future__ import annotations

from enum import StrEnum

import torch


class Parameterization(StrEnum):
    """Network output type: noise (SD 2.1-base, HumanSD) or velocity (SD 2.1-768)."""

    EPS = "eps"
    V = "v"


def _expand(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(a, dtype=like.dtype, device=like.device).reshape(-1, *([1] * (like.ndim - 1)))


def to_eps(pred: torch.Tensor, x_t: torch.Tensor, alpha_cumprod: torch.Tensor, param: Parameterization) -> torch.Tensor:
    """Convert a model output to the noise prediction eps.

    Args:
        pred: (B, C, H, W) network output.
        x_t: (B, C, H, W) noisy latents.
        alpha_cumprod: (B,) alpha-bar_t.
        param: what `pred` is.
    """
    if param is Parameterization.EPS:
        return pred
    a = _expand(alpha_cumprod, x_t)
    # v = sqrt(a) eps - sqrt(1-a) x0  =>  eps = sqrt(a) v + sqrt(1-a) x_t
    return a.sqrt() * pred + (1 - a).sqrt() * x_t


def eps_to_x0(eps: torch.Tensor, x_t: torch.Tensor, alpha_cumprod: torch.Tensor) -> torch.Tensor:
    """x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)."""
    a = _expand(alpha_cumprod, x_t)
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def training_target(x0: torch.Tensor, noise: torch.Tensor, alpha_cumprod: torch.Tensor, param: Parameterization):
    """Regression target of the simple loss: eps, or v = sqrt(a) eps - sqrt(1-a) x0."""
    if param is Parameterization.EPS:
        return noise
    a = _expand(alpha_cumprod, x0)
    return a.sqrt() * noise - (1 - a).sqrt() * x0
