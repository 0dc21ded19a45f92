"""Conditioning passed from the model to the UNet and between samplers and guidance.

References:
    Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022 ("hybrid" conditioning).
    HumanSD (Ju et al., ICCV 2023), §3: the pose latent is concatenated to the noisy latent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Conditioning:
    """What the denoiser is conditioned on.

    Args:
        crossattn: (B, 77, D) text embeddings consumed by cross-attention.
        concat: optional (B, C, h, w) latents concatenated after the noisy latent along channels
            (the pose latent for HumanSD, None for plain text-to-image).
    """

    crossattn: torch.Tensor
    concat: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.crossattn.shape[0]

    @staticmethod
    def cat(items: list[Conditioning]) -> Conditioning:
        """Concatenate along the batch; all items must agree on having a concat tensor."""
        has_concat = {c.concat is not None for c in items}
        if len(has_concat) != 1:
            raise ValueError("Cannot concatenate conditionings where only some carry a concat tensor.")
        concat = torch.cat([c.concat for c in items]) if items[0].concat is not None else None
        return Conditioning(torch.cat([c.crossattn for c in items]), concat)

    def repeat(self, n: int) -> Conditioning:
        """Repeat each item n times along the batch (b0, b0, ..., b1, b1, ...)."""
        concat = self.concat.repeat_interleave(n, 0) if self.concat is not None else None
        return Conditioning(self.crossattn.repeat_interleave(n, 0), concat)

    def to(self, *args, **kwargs) -> Conditioning:
        concat = self.concat.to(*args, **kwargs) if self.concat is not None else None
        return Conditioning(self.crossattn.to(*args, **kwargs), concat)
