"""The discrete DDPM noise schedule of Stable Diffusion ("scaled linear") and the buffers LDM checkpoints carry.

References:
    Ho et al., "Denoising Diffusion Probabilistic Models", NeurIPS 2020, eqs. (4), (6), (7).
    Stability-AI/stablediffusion (cf8f7b6), ldm/models/diffusion/ddpm.py `register_schedule`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Names and order of the schedule buffers stored at the root of every LDM checkpoint.
SCHEDULE_BUFFER_NAMES: tuple[str, ...] = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


@dataclass(frozen=True)
class NoiseSchedule:
    """Discrete variance schedule.

    Args:
        num_timesteps: number of training timesteps T.
        linear_start: beta_0 (SD: 0.00085).
        linear_end: beta_{T-1} (SD: 0.012).
    """

    num_timesteps: int = 1000
    linear_start: float = 0.00085
    linear_end: float = 0.012

    def __post_init__(self) -> None:
        if self.num_timesteps < 2:
            raise ValueError(f"num_timesteps must be >= 2; got {self.num_timesteps}.")
        if not 0 < self.linear_start < self.linear_end < 1:
            raise ValueError(f"Need 0 < linear_start < linear_end < 1; got {self.linear_start}, {self.linear_end}.")

    def betas(self) -> np.ndarray:
        """(T,) float64 betas, linear in sqrt(beta) (LDM's "linear" schedule)."""
        return np.linspace(self.linear_start**0.5, self.linear_end**0.5, self.num_timesteps, dtype=np.float64) ** 2

    def alphas_cumprod(self) -> np.ndarray:
        """(T,) float64 cumulative product of (1 - beta): alpha-bar_t."""
        return np.cumprod(1.0 - self.betas())

    def buffers(self) -> dict[str, torch.Tensor]:
        """The 12 float32 buffers LDM registers (and checkpoints store), computed in float64 as the original."""
        betas = self.betas()
        ac = np.cumprod(1.0 - betas)
        ac_prev = np.append(1.0, ac[:-1])
        # Posterior q(x_{t-1} | x_t, x_0), Ho et al. eq. (7); v_posterior = 0.
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        values = {
            "betas": betas,
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "sqrt_alphas_cumprod": np.sqrt(ac),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
            "log_one_minus_alphas_cumprod": np.log(1.0 - ac),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
            "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
            "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac),
        }
        return {name: torch.tensor(values[name], dtype=torch.float32) for name in SCHEDULE_BUFFER_NAMES}


def add_noise(x0: torch.Tensor, noise: torch.Tensor, alpha_cumprod: torch.Tensor) -> torch.Tensor:
    """Forward process q(x_t | x_0) = sqrt(a) x0 + sqrt(1 - a) eps (Ho et al. eq. 4).

    Args:
        x0: (B, C, H, W) clean latents.
        noise: same shape, standard normal.
        alpha_cumprod: (B,) or scalar alpha-bar_t.
    """
    a = torch.as_tensor(alpha_cumprod, dtype=x0.dtype, device=x0.device).reshape(-1, *([1] * (x0.ndim - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise
