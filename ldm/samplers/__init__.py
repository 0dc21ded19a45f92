"""Samplers: functions with one signature over a `Denoiser`, a `SamplingPlan` and a `Guidance`.

Example:
    >>> plan = make_plan(denoiser.alphas_cumprod, 50)
    >>> x = prepare_latents(plan, torch.randn(shape, generator=gen))
    >>> x0 = get_sampler("ddim")(denoiser, x, plan, cond=cond, guidance=ClassifierFreeGuidance(9.0, uncond))

References:
    crowsonkb/k-diffusion, k_diffusion/sampling.py (one signature for every sampler, callback dict).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import StrEnum

import torch

from ldm.samplers.ddim import ddim_update, sample_ddim
from ldm.samplers.denoiser import Denoiser, FunctionDenoiser
from ldm.samplers.dpm_solver import sample_dpmpp_2m
from ldm.samplers.guidance import ClassifierFreeGuidance, Guidance
from ldm.samplers.plan import SamplingPlan, TimestepSpacing, make_plan, prepare_latents
from ldm.samplers.plms import sample_plms

__all__ = [
    "SAMPLERS",
    "ClassifierFreeGuidance",
    "Denoiser",
    "FunctionDenoiser",
    "Guidance",
    "SamplerName",
    "SamplingPlan",
    "TimestepSpacing",
    "ddim_update",
    "get_sampler",
    "make_plan",
    "prepare_latents",
    "sample_ddim",
    "sample_dpmpp_2m",
    "sample_plms",
]


class SamplerName(StrEnum):
    """Registered sampler names (CLI `choices`)."""

    DDIM = "ddim"
    PLMS = "plms"
    DPMPP_2M = "dpmpp_2m"


# Every entry: fn(denoiser, x, plan, *, cond, guidance=None, generator=None, callback=None, progress=False) -> x0.
SAMPLERS: dict[SamplerName, Callable[..., torch.Tensor]] = {
    SamplerName.DDIM: sample_ddim,
    SamplerName.PLMS: sample_plms,
    SamplerName.DPMPP_2M: sample_dpmpp_2m,
}


def get_sampler(name: str | SamplerName, *, eta: float = 0.0) -> Callable[..., torch.Tensor]:
    """Look up a sampler by name, binding `eta` so every returned function has the common signature.

    Args:
        name: one of `SamplerName` ("ddim", "plms", "dpmpp_2m").
        eta: DDIM stochasticity in [0, 1]; only "ddim" supports eta != 0.

    Returns:
        `fn(denoiser, x, plan, *, cond, guidance=None, generator=None, callback=None, progress=False) -> Tensor`.

    Raises:
        ValueError: for an unknown name, or eta != 0 with a deterministic-only sampler.
    """
    try:
        key = SamplerName(name)
    except ValueError:
        choices = ", ".join(s.value for s in SamplerName)
        raise ValueError(f"Unknown sampler {str(name)!r}; choose one of: {choices}") from None
    if eta != 0.0:
        if key is not SamplerName.DDIM:
            raise ValueError(
                f"Sampler '{key.value}' is deterministic and does not support eta={eta}; use eta=0 or sampler 'ddim'."
            )
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1] (0 = deterministic DDIM); got {eta}.")
        return functools.partial(sample_ddim, eta=eta)
    return SAMPLERS[key]
