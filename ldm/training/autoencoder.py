"""Training the KL autoencoder (used for the tiny mannequin-world VAE; SD's own VAE is never retrained).

Loss: L1 + L2 reconstruction plus a small KL term, as the LDM autoencoder without its perceptual/adversarial parts
(no pretrained LPIPS network can be loaded offline; on the procedurally drawn mannequin world the pixel losses are
enough to reach a reconstruction PSNR well above what the diffusion model needs).

References:
    Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022, §3 and App. G.
    Stability-AI/stablediffusion (cf8f7b6), ldm/modules/losses/contperceptual.py (the KL weighting).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from ldm.data.keys import BatchKey
from ldm.models.autoencoder import AutoencoderKL


class AutoencoderModule(pl.LightningModule):
    """Trains an `AutoencoderKL` on batches whose `BatchKey.IMAGE` holds (B, 3, H, W) images in [-1, 1].

    Args:
        vae: the autoencoder to train.
        learning_rate: AdamW learning rate.
        kl_weight: weight of the per-image KL (summed over latent elements, averaged over the batch, divided by
            the number of pixels so it is comparable to the per-pixel reconstruction terms).
        l2_weight: weight of the MSE term added to L1.
    """

    def __init__(
        self, *, vae: AutoencoderKL, learning_rate: float = 2e-4, kl_weight: float = 1e-6, l2_weight: float = 1.0
    ):
        super().__init__()
        self.vae = vae
        self.learning_rate = learning_rate
        self.kl_weight = kl_weight
        self.l2_weight = l2_weight

    def _common_step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        images = batch[BatchKey.IMAGE]
        posterior = self.vae.encode(images)
        recon = self.vae.decode(posterior.sample() if stage == "train" else posterior.mode())
        l1 = F.l1_loss(recon, images)
        l2 = F.mse_loss(recon, images)
        kl = posterior.kl().mean() / images[0].numel()
        loss = l1 + self.l2_weight * l2 + self.kl_weight * kl
        psnr = 10 * torch.log10(4.0 / l2.detach().clamp_min(1e-10))  # images span [-1, 1]: peak-to-peak 2
        self.log_dict(
            {f"{stage}/loss": loss, f"{stage}/l1": l1, f"{stage}/kl": kl, f"{stage}/psnr": psnr},
            prog_bar=stage == "train",
            batch_size=images.shape[0],
        )
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._common_step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.vae.parameters(), lr=self.learning_rate, betas=(0.5, 0.9))
