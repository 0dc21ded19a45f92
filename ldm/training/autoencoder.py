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
from ldm.training.module import lr_factor


class AutoencoderModule(pl.LightningModule):
    """Trains an `AutoencoderKL` on batches whose `BatchKey.IMAGE` holds (B, 3, H, W) images in [-1, 1].

    Args:
        vae: the autoencoder to train.
        learning_rate: AdamW learning rate.
        kl_weight: weight of the per-image KL (summed over latent elements, averaged over the batch, divided by
            the number of pixels so it is comparable to the per-pixel reconstruction terms).
        betas: AdamW betas (the LDM autoencoder used (0.5, 0.9) with its GAN; without one the defaults train faster).
        l2_weight: weight of the MSE term added to L1.
        crop_size: train on random square crops of this size (the network is fully convolutional, so crops
            teach the same per-pixel mapping at a fraction of the cost); None trains on whole images.
        decoder_only: freeze the encoder (and `quant_conv`) and train only the decoder, as SD's fine-tuned
            ft-MSE/ft-EMA decoders were made: the latent space stays exactly the same, so diffusion models and
            latent caches made with the encoder remain valid while the decoder improves. The KL term
            is constant then and is left out.
        lr_decay_steps: decay the learning rate linearly over the last this many steps of the trainer's
            `max_steps`, towards 0 at step `max_steps` (a cool-down, as `ldm.training.module.lr_factor`); None
            keeps it constant.
    """

    def __init__(
        self,
        *,
        vae: AutoencoderKL,
        learning_rate: float = 2e-4,
        kl_weight: float = 1e-6,
        l2_weight: float = 1.0,
        crop_size: int | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        decoder_only: bool = False,
        lr_decay_steps: int | None = None,
    ):
        super().__init__()
        self.vae = vae
        self.learning_rate = learning_rate
        self.kl_weight = kl_weight
        self.l2_weight = l2_weight
        self.crop_size = crop_size
        self.betas = tuple(betas)
        self.decoder_only = decoder_only
        if lr_decay_steps is not None and (
            isinstance(lr_decay_steps, bool) or int(lr_decay_steps) != lr_decay_steps or lr_decay_steps < 1
        ):
            raise ValueError(f"lr_decay_steps must be an integer >= 1 or null; got {lr_decay_steps!r}.")
        self.lr_decay_steps = lr_decay_steps
        if decoder_only:
            for module in (self.vae.encoder, self.vae.quant_conv):
                module.requires_grad_(False)

    def _common_step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        images = batch[BatchKey.IMAGE]
        if stage == "train" and self.crop_size is not None:
            images = self._random_crop(images)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.decoder_only):
            posterior = self.vae.encode(images)
        recon = self.vae.decode(posterior.sample() if stage == "train" else posterior.mode())
        l1 = F.l1_loss(recon, images)
        l2 = F.mse_loss(recon, images)
        kl = posterior.kl().mean() / images[0].numel()
        loss = l1 + self.l2_weight * l2
        if not self.decoder_only:
            loss = loss + self.kl_weight * kl
        psnr = 10 * torch.log10(4.0 / l2.detach().clamp_min(1e-10))  # images span [-1, 1]: peak-to-peak 2
        self.log_dict(
            {f"{stage}/loss": loss, f"{stage}/l1": l1, f"{stage}/kl": kl, f"{stage}/psnr": psnr},
            prog_bar=stage == "train",
            batch_size=images.shape[0],
        )
        return loss

    def _random_crop(self, images: torch.Tensor) -> torch.Tensor:
        c = self.crop_size
        h, w = images.shape[-2:]
        if c > min(h, w) or c % self.vae.downsample_factor:
            raise ValueError(f"crop_size {c} must be <= the image size {h}x{w} and a multiple of the VAE factor.")
        top = int(torch.randint(0, h - c + 1, ()))
        left = int(torch.randint(0, w - c + 1, ()))
        return images[..., top : top + c, left : left + c]

    def on_train_epoch_start(self) -> None:
        if self.decoder_only:  # Lightning puts every submodule in train mode; the frozen encoder stays in eval
            self.vae.encoder.eval()
            self.vae.quant_conv.eval()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._common_step(batch, "val")

    def check_lr_decay(self, max_steps: int) -> None:
        """Raise ValueError if the cool-down does not fit in a run of `max_steps` steps."""
        if self.lr_decay_steps is not None and self.lr_decay_steps > max_steps:  # >= 1: __init__
            raise ValueError(
                f"lr_decay_steps ({self.lr_decay_steps}) is larger than max_steps ({max_steps}); the cool-down runs "
                f"over the last lr_decay_steps steps of the run."
            )

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        params = [p for p in self.vae.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.learning_rate, betas=self.betas)
        if self.lr_decay_steps is None:
            return optimizer
        max_steps = int(self.trainer.max_steps)
        self.check_lr_decay(max_steps)

        def factor(_: int) -> float:  # from the trainer's step, so the decay ends exactly at max_steps
            return lr_factor(self.trainer.global_step, max_steps, schedule="linear", decay_steps=self.lr_decay_steps)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
