"""PLMS sampler: pseudo linear multistep (PNDM's "F-PNDM" variant as used by the LDM repo), eta = 0 only.

Each step combines the current and previous noise predictions with Adams-Bashforth weights and applies the
result through the deterministic DDIM update:

* step 1 (no history): pseudo improved Euler: take a DDIM step with e_t, evaluate e' at the predicted point and the
  next timestep (one extra network call), use (e_t + e') / 2;
* step 2: (3 e_t - e_1) / 2;  step 3: (23 e_t - 16 e_1 + 5 e_2) / 12;
* step >= 4: (55 e_t - 59 e_1 + 37 e_2 - 9 e_3) / 24,

where e_k is the raw prediction k steps back (the history stores raw predictions, not the combinations).

References:
    Liu et al., "Pseudo Numerical Methods for Diffusion Models on Manifolds", ICLR 2022, eqs. (11)-(13).
    Stability-AI/stablediffusion (cf8f7b6), ldm/models/diffusion/plms.py `PLMSSampler.p_sample_plms`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from ldm.conditioning import Conditioning
from ldm.samplers.ddim import ddim_update
from ldm.samplers.denoiser import Denoiser
from ldm.samplers.guidance import Guidance, resolve_guidance
from ldm.samplers.plan import SamplingPlan


def _adams_bashforth(eps: torch.Tensor, history: list[torch.Tensor]) -> torch.Tensor:
    """Linear multistep combination of eps with up to 3 earlier predictions (history[-1] is the latest)."""
    if len(history) == 1:
        return (3 * eps - history[-1]) / 2
    if len(history) == 2:
        return (23 * eps - 16 * history[-1] + 5 * history[-2]) / 12
    return (55 * eps - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24


@torch.no_grad()
def sample_plms(
    denoiser: Denoiser,
    x: torch.Tensor,
    plan: SamplingPlan,
    *,
    cond: Conditioning,
    guidance: Guidance | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Run PLMS over `plan` (N + 1 guided predictions for N >= 2 steps).

    Args:
        denoiser: the network (see `Denoiser`).
        x: (B, C, h, w) starting latents, from `prepare_latents`.
        plan: timesteps and alphas, from `make_plan`.
        cond: conditioning of batch B.
        guidance: eps predictor wrapping the denoiser; None = plain conditional prediction.
        generator: unused (PLMS is deterministic); accepted for the common sampler signature.
        callback: called after each step with {"i", "t", "x", "x0_pred", "total"}.
        progress: show a tqdm bar.

    Returns:
        (B, C, h, w) denoised latents.

    Note:
        With a one-step plan there is no next timestep to evaluate the improved-Euler corrector at, so that single
        step is a plain DDIM step (the original would re-evaluate at the same t, an inconsistent point).
    """
    del generator  # deterministic
    guidance = resolve_guidance(guidance)
    total = len(plan)
    history: list[torch.Tensor] = []
    for i in tqdm(range(total), desc="PLMS", disable=not progress):
        t = int(plan.timesteps[i])
        alpha, alpha_prev = float(plan.alphas[i]), float(plan.alphas_prev[i])
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)  # (B,)
        eps = guidance(denoiser, x, t_batch, cond)
        if history:
            eps_prime = _adams_bashforth(eps, history)
        elif i + 1 < total:
            # Pseudo improved Euler (Liu et al. eq. 13 start-up): evaluate at the DDIM-predicted next point.
            x_next, _ = ddim_update(x, eps, alpha, alpha_prev)
            t_next = torch.full_like(t_batch, int(plan.timesteps[i + 1]))
            eps_prime = (eps + guidance(denoiser, x_next, t_next, cond)) / 2
        else:
            eps_prime = eps
        x, x0 = ddim_update(x, eps_prime, alpha, alpha_prev)
        history = [*history[-2:], eps]  # raw predictions, at most 3
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0_pred": x0, "total": total})
    return x
