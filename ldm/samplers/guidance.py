"""Classifier-free guidance, shared by every sampler.

A `Guidance` turns a `Denoiser` into a noise prediction eps(x_t, t). Samplers only ever call a guidance object,
so CFG (and any future guidance variant) is written once.

References:
    Ho & Salimans, "Classifier-Free Diffusion Guidance", NeurIPS 2021 Workshop, eq. (6).
    Stability-AI/generative-models (sgm), `sgm/modules/diffusionmodules/guiders.py` `VanillaCFG` (the pattern).
    IDEA-Research/HumanSD (c5db29d), scripts/pose2img.py `paint_humansd`: the uncond branch keeps the pose latent.
"""

from __future__ import annotations

from typing import Protocol

import torch

from ldm.conditioning import Conditioning
from ldm.diffusion.parameterization import to_eps
from ldm.samplers.denoiser import Denoiser


class Guidance(Protocol):
    """Anything that maps (denoiser, x_t, t, cond) to a noise prediction."""

    def __call__(self, denoiser: Denoiser, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Predict eps.

        Args:
            denoiser: the network.
            x: (B, C, h, w) noisy latents.
            t: (B,) long training timesteps.
            cond: conditioning of batch B.

        Returns:
            (B, C, h, w) eps prediction (always eps, whatever the denoiser's parameterization).
        """
        ...


def _batch_size(cond: Conditioning) -> int:
    """Batch size of a conditioning, checking crossattn and concat agree."""
    n = cond.crossattn.shape[0]
    if cond.concat is not None and cond.concat.shape[0] != n:
        raise ValueError(
            f"Conditioning is inconsistent: crossattn has batch {n} but concat has batch {cond.concat.shape[0]}."
        )
    return n


class ClassifierFreeGuidance:
    """eps = e_u + scale * (e_c - e_u), with both branches in ONE batched network call.

    The unconditional branch is whatever the caller puts in `uncond`. For HumanSD (spec §1.6) build it with the
    *same* pose latent in `concat` as `cond` and only the text swapped for the negative prompt's embedding;
    this object does not touch the concat tensor. When the two carry the very same concat tensor (or none) and the
    denoiser has `share_cfg_input` set (`FastPathOptions.share_cfg_input`), x, t and that tensor are passed once
    with the 2B text rows, and the network computes its layers before the first cross-attention once.

    Args:
        scale: guidance weight s; 1.0 means plain conditional prediction (one call of batch B, `uncond` unused).
        uncond: unconditional conditioning of batch B or 1 (a batch of 1 is repeated to B). None disables CFG.
    """

    def __init__(self, scale: float = 1.0, uncond: Conditioning | None = None) -> None:
        self.scale = float(scale)
        self.uncond = uncond

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale}, uncond={'set' if self.uncond is not None else None})"

    def _check_uncond(self, batch: int, cond: Conditioning) -> Conditioning:
        uncond = self.uncond
        assert uncond is not None
        n = _batch_size(uncond)
        if n == 1 and batch != 1:
            uncond = uncond.repeat(batch)
        elif n != batch:
            raise ValueError(
                f"uncond has batch {n} but x and cond have batch {batch}; pass an uncond of batch {batch} or 1."
            )
        if (uncond.concat is None) != (cond.concat is None):
            have, lack = ("cond", "uncond") if uncond.concat is None else ("uncond", "cond")
            raise ValueError(
                f"{have} carries a concat (pose) tensor but {lack} does not; HumanSD's uncond must reuse cond's "
                "concat latent (spec §1.6)."
            )
        return uncond

    def __call__(self, denoiser: Denoiser, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Guided eps prediction; see `Guidance.__call__` for shapes."""
        batch = x.shape[0]
        if t.shape != (batch,):
            raise ValueError(f"t must have shape ({batch},) to match x; got {tuple(t.shape)}.")
        if _batch_size(cond) != batch:
            raise ValueError(f"cond has batch {_batch_size(cond)} but x has batch {batch}.")
        alpha = denoiser.alphas_cumprod[t.to(denoiser.alphas_cumprod.device)]  # (B,)
        param = denoiser.parameterization

        if self.uncond is None or self.scale == 1.0:
            return to_eps(denoiser.apply_model(x, t, cond), x, alpha, param)

        uncond = self._check_uncond(batch, cond)
        x_in = torch.cat([x, x])  # (2B, C, h, w): uncond half first, as the original repo
        if getattr(denoiser, "share_cfg_input", False) and uncond.concat is cond.concat:
            # The branches differ only in their text: x, t and the pose latent go in once (batch B) and the network
            # tiles them where the text enters (first cross-attention); same result as the batch of 2B below.
            pred = denoiser.apply_model(x, t, Conditioning(torch.cat([uncond.crossattn, cond.crossattn]), cond.concat))
        else:
            pred = denoiser.apply_model(x_in, torch.cat([t, t]), Conditioning.cat([uncond, cond]))
        eps_u, eps_c = to_eps(pred, x_in, torch.cat([alpha, alpha]), param).chunk(2)
        return eps_u + self.scale * (eps_c - eps_u)


def resolve_guidance(guidance: Guidance | None) -> Guidance:
    """`None` means no guidance: a plain conditional prediction."""
    return ClassifierFreeGuidance(1.0) if guidance is None else guidance
