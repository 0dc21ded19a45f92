"""DDIM sampler (deterministic for eta = 0, ancestral-like for eta = 1).

Implements Song et al. (2021) eq. (12) exactly as the original repo's `p_sample_ddim` (spec §5.3 step 6):

    x0    = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)
    sigma = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z,   z ~ N(0, I)

References:
    Song et al., "Denoising Diffusion Implicit Models", ICLR 2021, eqs. (12), (16).
    Stability-AI/stablediffusion (cf8f7b6), ldm/models/diffusion/ddim.py `DDIMSampler.p_sample_ddim`.
    crowsonkb/k-diffusion, k_diffusion/sampling.py (function signature and callback dict).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from ldm.conditioning import Conditioning
from ldm.samplers.denoiser import Denoiser
from ldm.samplers.guidance import Guidance, resolve_guidance
from ldm.samplers.plan import SamplingPlan


def ddim_update(
    x: torch.Tensor,
    eps: torch.Tensor,
    alpha: float,
    alpha_prev: float,
    *,
    sigma: float = 0.0,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step from alpha-bar `alpha` to `alpha_prev` (Song et al. eq. 12).

    Coefficients are Python floats (float64) and take x's dtype when multiplied.

    Args:
        x: (B, C, h, w) latents at alpha-bar `alpha`.
        eps: (B, C, h, w) noise prediction at x.
        alpha: alpha-bar of the current timestep, in (0, 1).
        alpha_prev: alpha-bar to land on, in (alpha, 1]; 1 means clean.
        sigma: standard deviation of the fresh noise; 0 for the deterministic update.
        noise: (B, C, h, w) standard normal, required when sigma > 0.

    Returns:
        (x_prev, x0_pred), both (B, C, h, w).
    """
    # 1. predicted x0, "(x_t - sqrt(1-a_t) eps) / sqrt(a_t)" (eq. 12, first term)
    x0 = (x - math.sqrt(1.0 - alpha) * eps) / math.sqrt(alpha)
    # 2. direction pointing to x_t (eq. 12, second term); clamp guards float64 round-off at alpha_prev = 1
    dir_coef = math.sqrt(max(1.0 - alpha_prev - sigma**2, 0.0))
    x_prev = math.sqrt(alpha_prev) * x0 + dir_coef * eps
    # 3. random noise (eq. 12, third term)
    if sigma > 0.0:
        if noise is None:
            raise ValueError(f"sigma={sigma} > 0 needs a noise tensor.")
        x_prev = x_prev + sigma * noise
    return x_prev, x0


def ddim_sigma(alpha: float, alpha_prev: float, eta: float) -> float:
    """sigma_t(eta) of Song et al. eq. (16): eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))."""
    return eta * math.sqrt((1.0 - alpha_prev) / (1.0 - alpha) * (1.0 - alpha / alpha_prev))


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser,
    x: torch.Tensor,
    plan: SamplingPlan,
    *,
    cond: Conditioning,
    guidance: Guidance | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Run DDIM over `plan` (under torch.no_grad, like every sampler here).

    Args:
        denoiser: the network (see `Denoiser`).
        x: (B, C, h, w) starting latents, from `prepare_latents`.
        plan: timesteps and alphas, from `make_plan`.
        cond: conditioning of batch B.
        guidance: eps predictor wrapping the denoiser; None = plain conditional prediction.
        eta: noise level in [0, 1]; 0 = deterministic DDIM, 1 = DDPM-like variance.
        generator: source of the noise when eta > 0 (required then; no global RNG is used). Must live on x's device.
        callback: called after each step with {"i", "t", "x", "x0_pred", "total"}.
        progress: show a tqdm bar.

    Returns:
        (B, C, h, w) denoised latents.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1] (0 = deterministic DDIM); got {eta}.")
    if eta > 0.0 and generator is None:
        raise ValueError(
            f"eta={eta} draws fresh noise every step; pass generator=torch.Generator(device).manual_seed(seed) "
            "(samplers never use the global RNG)."
        )
    guidance = resolve_guidance(guidance)
    total = len(plan)
    for i in tqdm(range(total), desc="DDIM", disable=not progress):
        t = int(plan.timesteps[i])
        alpha, alpha_prev = float(plan.alphas[i]), float(plan.alphas_prev[i])
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)  # (B,)
        eps = guidance(denoiser, x, t_batch, cond)
        sigma = ddim_sigma(alpha, alpha_prev, eta)
        # Noise is drawn on every step when eta > 0 (also when sigma = 0), as the original, to keep RNG order.
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) if eta > 0.0 else None
        x, x0 = ddim_update(x, eps, alpha, alpha_prev, sigma=sigma, noise=noise)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0_pred": x0, "total": total})
    return x
