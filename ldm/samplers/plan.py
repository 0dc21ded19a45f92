"""Which training timesteps a sampler visits, and where it starts (pure noise or a noised image, "SDEdit").

Two spacings:

* `TimestepSpacing.TRAILING` (default): S evenly spaced steps ending at t = T/S - 1 and a final step to the clean
  latent (alpha_prev = 1). For T = 1000, S = 50: t = 999, 979, ..., 19 -> clean. All S steps run.
* `TimestepSpacing.ORIGINAL`: bit-parity with the original repo's DDIM "uniform" discretisation
  (spec §5.3 steps 4-5). The grid is `arange(0, T, T // S) + 1` (1, 21, ..., 981 for S = 50) and the sampler runs
  only the first `t_enc = min(int(strength * S), S - 1)` grid points in reverse. Deliberate quirks kept:
  with strength 1 and S = 50 only 49 steps run, from pure noise at t = 961 (981 is never used); the last step goes
  to alpha_prev = alphas_cumprod[0], not to 1; SDEdit noises the image to grid[t_enc], one grid point *above*
  the first denoising step; when T % S != 0 the grid has more than S points (S = 30: 31 points 1, 34, ..., 991)
  and still only t_enc of them run.

References:
    Song et al., "Denoising Diffusion Implicit Models", ICLR 2021, §4.2 (sub-sequences tau).
    Lin et al., "Common Diffusion Noise Schedules and Sample Steps are Flawed", WACV 2024, §3.3 ("trailing").
    Meng et al., "SDEdit", ICLR 2022 (strength < 1).
    Stability-AI/stablediffusion (cf8f7b6), ldm/modules/diffusionmodules/util.py `make_ddim_timesteps`,
    `make_ddim_sampling_parameters`; ldm/models/diffusion/ddim.py `stochastic_encode`, `decode`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

import torch

from ldm.diffusion.schedule import add_noise

logger = logging.getLogger(__name__)


class TimestepSpacing(StrEnum):
    """How the S sampling steps are placed on the T training timesteps (see module docstring)."""

    TRAILING = "trailing"
    ORIGINAL = "original"


@dataclass(frozen=True)
class SamplingPlan:
    """The steps a sampler runs, in order.

    Step i denoises from training timestep `timesteps[i]` (alpha-bar `alphas[i]`) to alpha-bar `alphas_prev[i]`.
    Tensors live on the CPU: they are metadata, read as Python floats by the samplers.

    Args:
        timesteps: (N,) long, strictly descending training timesteps passed to the network.
        alphas: (N,) float64 alpha-bar at `timesteps`.
        alphas_prev: (N,) float64 alpha-bar each step lands on (1.0 = clean).
        init_alpha: alpha-bar the starting latent is noised to, or None to start from pure noise.
    """

    timesteps: torch.Tensor
    alphas: torch.Tensor
    alphas_prev: torch.Tensor
    init_alpha: float | None = None

    def __post_init__(self) -> None:
        n = self.timesteps.shape[0]
        if self.timesteps.ndim != 1 or n == 0:
            raise ValueError(f"timesteps must be a non-empty 1-D tensor; got shape {tuple(self.timesteps.shape)}.")
        if self.alphas.shape != (n,) or self.alphas_prev.shape != (n,):
            raise ValueError(
                f"alphas {tuple(self.alphas.shape)} and alphas_prev {tuple(self.alphas_prev.shape)} must both "
                f"have shape ({n},) like timesteps."
            )

    def __len__(self) -> int:
        return self.timesteps.shape[0]


def _check_args(alphas_cumprod: torch.Tensor, steps: int, strength: float) -> None:
    if alphas_cumprod.ndim != 1 or alphas_cumprod.shape[0] < 2:
        raise ValueError(f"alphas_cumprod must have shape (T,) with T >= 2; got {tuple(alphas_cumprod.shape)}.")
    num_timesteps = alphas_cumprod.shape[0]
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be an integer in [1, {num_timesteps}] (the training timesteps); got {steps!r}.")
    if not 0.0 < strength <= 1.0:
        raise ValueError(
            f"strength must be in (0, 1] (1 = start from pure noise, smaller = stay closer to the init image); "
            f"got {strength!r}."
        )


def _trailing_plan(ac: torch.Tensor, steps: int, strength: float) -> SamplingPlan:
    num_timesteps = ac.shape[0]
    # t_i = round((S - i) T / S) - 1, i = 0..S-1; numerator exact in float64, so ties round half to even.
    full = torch.round(torch.arange(steps, 0, -1, dtype=torch.float64) * num_timesteps / steps).long() - 1
    full_prev = torch.cat([ac[full[1:]], torch.ones(1, dtype=torch.float64)])  # last step lands on clean
    if strength == 1.0:
        return SamplingPlan(full, ac[full], full_prev, None)
    n_run = max(1, round(strength * steps))
    first = steps - n_run
    timesteps = full[first:]
    return SamplingPlan(timesteps, ac[timesteps], full_prev[first:], float(ac[timesteps[0]]))


def _original_plan(ac: torch.Tensor, steps: int, strength: float) -> SamplingPlan:
    num_timesteps = ac.shape[0]
    grid = torch.arange(0, num_timesteps, num_timesteps // steps) + 1  # (>= S,) ascending; 1, 21, ..., 981
    t_enc = min(int(strength * steps), steps - 1)  # number of steps run (spec §5.3 step 4)
    if t_enc == 0:
        raise ValueError(
            f"strength={strength} with steps={steps} gives t_enc = min(int(strength * steps), steps - 1) = 0 "
            "denoising steps under ORIGINAL spacing (the original would return its input untouched); raise strength "
            "or steps, or use TimestepSpacing.TRAILING."
        )
    last_used = int(grid[t_enc])  # the SDEdit noise level; also bounds every index used below
    if last_used >= num_timesteps:
        raise ValueError(
            f"ORIGINAL spacing with steps={steps} and T={num_timesteps} puts grid point {last_used} past the last "
            f"timestep {num_timesteps - 1} (the original repo fails here too); use TimestepSpacing.TRAILING or fewer "
            "steps."
        )
    # alphas_prev over the full grid: [alpha-bar_0] + alpha-bar[grid[:-1]] (spec §5.3 step 6).
    grid_prev = torch.cat([ac[:1], ac[grid[:-1]]])
    run = torch.arange(t_enc - 1, -1, -1)  # grid indices visited, descending
    if len(grid) != steps:
        logger.debug("ORIGINAL spacing: T %% S != 0, grid has %d points for steps=%d.", len(grid), steps)
    init_alpha = None if strength == 1.0 else float(ac[last_used])
    return SamplingPlan(grid[run], ac[grid[run]], grid_prev[run], init_alpha)


def make_plan(
    alphas_cumprod: torch.Tensor,
    steps: int,
    *,
    spacing: TimestepSpacing | str = TimestepSpacing.TRAILING,
    strength: float = 1.0,
) -> SamplingPlan:
    """Build the sampling plan for `steps` sampler steps.

    Args:
        alphas_cumprod: (T,) training alpha-bar (e.g. `denoiser.alphas_cumprod`), any float dtype and device.
        steps: number of sampler steps S, in [1, T].
        spacing: TRAILING (default, runs S steps ending on the clean latent) or ORIGINAL (original repo parity:
            runs min(int(strength * S), S - 1) steps; see the module docstring).
        strength: in (0, 1]. 1 starts from pure noise. Below 1 (SDEdit / img2img) the init latent is noised to an
            intermediate level and only the remaining steps run: TRAILING runs the last max(1, round(strength * S))
            steps and noises to the first of them; ORIGINAL noises to grid[t_enc] as the original.

    Returns:
        The plan; `len(plan)` is the number of steps (network evaluations for DDIM without guidance).

    Raises:
        ValueError: on steps outside [1, T], strength outside (0, 1], an unknown spacing, or an ORIGINAL
            configuration the original repo cannot run.
    """
    try:
        spacing = TimestepSpacing(spacing)
    except ValueError:
        choices = ", ".join(s.value for s in TimestepSpacing)
        raise ValueError(f"Unknown timestep spacing {spacing!r}; choose one of: {choices}.") from None
    _check_args(alphas_cumprod, steps, strength)
    ac = alphas_cumprod.detach().to("cpu", torch.float64)
    if spacing is TimestepSpacing.TRAILING:
        return _trailing_plan(ac, steps, strength)
    return _original_plan(ac, steps, strength)


def prepare_latents(plan: SamplingPlan, noise: torch.Tensor, x0: torch.Tensor | None = None) -> torch.Tensor:
    """The starting latent x for a sampler.

    Args:
        plan: the sampling plan.
        noise: (B, C, h, w) standard normal noise (the caller draws it, from its own generator).
        x0: (B, C, h, w) clean init latents (SDEdit); required iff `plan.init_alpha` is set, ignored otherwise.

    Returns:
        (B, C, h, w): `noise` itself when the plan starts from pure noise, else
        sqrt(a) x0 + sqrt(1 - a) noise with a = `plan.init_alpha`.
    """
    if plan.init_alpha is None:
        return noise
    if x0 is None:
        raise ValueError(
            f"The plan starts from a noised init latent (init_alpha={plan.init_alpha:.6g}, i.e. strength < 1) but "
            "x0 is None; pass the encoded init image as x0 or use strength=1."
        )
    if x0.shape != noise.shape:
        raise ValueError(f"x0 has shape {tuple(x0.shape)} but noise has shape {tuple(noise.shape)}; they must match.")
    return add_noise(x0, noise, torch.tensor(plan.init_alpha, dtype=torch.float64))
