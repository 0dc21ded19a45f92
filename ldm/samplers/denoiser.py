"""The interface every sampler talks to: a network that denoises latents under a discrete training schedule.

Samplers never see a UNet, a LightningModule or a checkpoint format; they see a `Denoiser`. Models from elsewhere
(other repos, ONNX, test doubles) are adapted by writing a small object with these three members.

References:
    Crowson, k-diffusion (crowsonkb/k-diffusion), `k_diffusion/external.py` `DiscreteEpsDDPMDenoiser` (the pattern).
    Stability-AI/stablediffusion (cf8f7b6), ldm/models/diffusion/ddpm.py `LatentDiffusion.apply_model` (the contract).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

from ldm.conditioning import Conditioning
from ldm.diffusion.parameterization import Parameterization


@runtime_checkable
class Denoiser(Protocol):
    """A denoising network with its training schedule.

    Attributes:
        alphas_cumprod: (T,) float32 alpha-bar of the *training* schedule, in (0, 1), decreasing in t.
        parameterization: what `apply_model` returns (eps or v).
    """

    alphas_cumprod: torch.Tensor
    parameterization: Parameterization

    def apply_model(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Run the network once.

        Args:
            x_t: (B, C, h, w) noisy latents.
            t: (B,) long training timesteps in [0, T).
            cond: conditioning of batch B.

        Returns:
            (B, C, h, w) raw network output (eps or v, see `parameterization`).
        """
        ...


class FunctionDenoiser:
    """Wrap a plain function as a `Denoiser` (tests, analytic models, quick adapters).

    Args:
        fn: `fn(x_t, t, cond) -> Tensor` with the shapes of `Denoiser.apply_model`.
        alphas_cumprod: (T,) alpha-bar of the schedule `fn` was trained (or derived) for.
        parameterization: what `fn` returns.

    Example:
        >>> den = FunctionDenoiser(lambda x, t, c: torch.zeros_like(x), alphas_cumprod)
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor, torch.Tensor, Conditioning], torch.Tensor],
        alphas_cumprod: torch.Tensor,
        parameterization: Parameterization = Parameterization.EPS,
    ) -> None:
        if alphas_cumprod.ndim != 1:
            raise ValueError(f"alphas_cumprod must be 1-D (T,); got shape {tuple(alphas_cumprod.shape)}.")
        self.fn = fn
        self.alphas_cumprod = alphas_cumprod
        self.parameterization = Parameterization(parameterization)

    def apply_model(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Call the wrapped function; see `Denoiser.apply_model`."""
        return self.fn(x_t, t, cond)
