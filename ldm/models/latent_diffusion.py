"""The latent diffusion model: SD-2.1 text-to-image, and HumanSD when the pose latent is concatenated.

Attribute names mirror the original checkpoints: the UNet lives at `model.diffusion_model`, the VAE at
`first_stage_model`, the text encoder at `cond_stage_model`, and the 12 schedule buffers at the root, so
`humansd-v1.ckpt` and `v2-1_512-ema-pruned.ckpt` load key-for-key.

References:
    Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022.
    Ju et al., "HumanSD: A Native Skeleton-Guided Diffusion Model for Human Image Generation", ICCV 2023, §3.
    IDEA-Research/HumanSD (c5db29d), ldm/models/diffusion/ddpm.py (hybrid conditioning, key layout).
"""

from __future__ import annotations

import torch
from torch import nn

from ldm.conditioning import Conditioning
from ldm.diffusion.parameterization import Parameterization
from ldm.diffusion.schedule import NoiseSchedule
from ldm.models.autoencoder import AutoencoderKL, DiagonalGaussianDistribution
from ldm.models.text_encoder import OpenCLIPTextEncoder
from ldm.models.unet import UNetControl, UNetModel

LATENT_SCALE = 0.18215  # SD's VAE latent scale factor (unit variance in latent space)


class DiffusionWrapper(nn.Module):
    """Holds the UNet under the attribute name the checkpoints use (`model.diffusion_model`)."""

    def __init__(self, diffusion_model: UNetModel):
        super().__init__()
        self.diffusion_model = diffusion_model


class LatentDiffusion(nn.Module):
    """Text (+ pose) conditioned latent diffusion model, inference side.

    Args:
        unet: the denoiser; `in_channels` must be `vae.embed_dim` (text-to-image) or twice that (pose concat).
        vae: the frozen first-stage autoencoder.
        text_encoder: the frozen text encoder; its width must equal the UNet's `context_dim`.
        pose_conditioning: concatenate the VAE latent of the rendered pose map after the noisy latent (HumanSD).
        parameterization: what the UNet predicts ("eps" for SD-2.1-base and HumanSD, "v" for SD-2.1-768).
        scale_factor: latent scale (0.18215).
        num_timesteps, linear_start, linear_end: the training noise schedule.
        sample_posterior: encode images with a posterior sample (the original's behaviour) instead of the mean.
    """

    def __init__(
        self,
        *,
        unet: UNetModel,
        vae: AutoencoderKL,
        text_encoder: OpenCLIPTextEncoder,
        pose_conditioning: bool = True,
        parameterization: str = "eps",
        scale_factor: float = LATENT_SCALE,
        num_timesteps: int = 1000,
        linear_start: float = 0.00085,
        linear_end: float = 0.012,
        sample_posterior: bool = True,
    ):
        super().__init__()
        expected_in = vae.embed_dim * (2 if pose_conditioning else 1)
        if unet.in_channels != expected_in:
            raise ValueError(
                f"UNet in_channels={unet.in_channels} does not fit pose_conditioning={pose_conditioning}: "
                f"expected {expected_in} (latent {vae.embed_dim}" + (" + pose latent)." if pose_conditioning else ").")
            )
        self.schedule = NoiseSchedule(num_timesteps, linear_start, linear_end)
        for name, value in self.schedule.buffers().items():
            self.register_buffer(name, value)
        self.model = DiffusionWrapper(unet)
        self.first_stage_model = vae.requires_grad_(False).eval()
        self.cond_stage_model = text_encoder
        self.pose_conditioning = pose_conditioning
        self.parameterization = Parameterization(parameterization)
        self.scale_factor = float(scale_factor)
        self.sample_posterior = sample_posterior
        # Set by the fast path when the UNet is compiled with CUDA graphs (torch.compile mode "reduce-overhead"):
        # each `apply_model` call is then a new graph step and returns a copy of the graph's output buffer.
        self.cuda_graph_steps = False
        # Set by the fast path (`FastPathOptions.share_cfg_input`): classifier-free guidance may call `apply_model`
        # with x, t and the concat latent of batch B and a crossattn of batch 2B (see `UNetModel.forward`).
        self.share_cfg_input = False

    @property
    def unet(self) -> UNetModel:
        return self.model.diffusion_model

    @property
    def vae(self) -> AutoencoderKL:
        return self.first_stage_model

    @property
    def text_encoder(self) -> OpenCLIPTextEncoder:
        return self.cond_stage_model

    @property
    def downsample_factor(self) -> int:
        return self.vae.downsample_factor

    @property
    def image_multiple(self) -> int:
        """Image height/width must be multiples of this (VAE factor x UNet levels)."""
        return self.vae.downsample_factor * self.unet.spatial_multiple

    def train(self, mode: bool = True) -> LatentDiffusion:
        """Only the UNet follows `mode`; the VAE and text encoder are frozen and stay in eval."""
        super().train(mode)
        self.first_stage_model.eval()
        self.cond_stage_model.eval()
        return self

    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, H/8, W/8) (posterior sample x scale_factor)."""
        return self.latents_from_moments(self.vae.encode_moments(images), generator)

    def latents_from_moments(self, moments: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """VAE posterior moments (B, 8, h, w), e.g. from a latent cache -> scaled latents, as `encode_images`.

        Draws the same posterior sample as `encode_images` would for the image the moments came from.
        """
        posterior = DiagonalGaussianDistribution(moments)
        z = posterior.sample(generator) if self.sample_posterior else posterior.mode()
        return self.scale_factor * z

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, 4, h, w) -> images (B, 3, 8h, 8w), roughly in [-1, 1] (not clamped)."""
        return self.vae.decode(latents / self.scale_factor)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> (B, 77, D) text tokens."""
        return self.text_encoder(prompts)

    def get_conditioning(
        self,
        prompts: list[str],
        pose_maps: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        *,
        pose_moments: torch.Tensor | None = None,
    ) -> Conditioning:
        """Build the conditioning of a batch.

        Args:
            prompts: B prompts.
            pose_maps: (B, 3, H, W) rendered skeletons in [-1, 1] (black background = -1); required iff
                the model uses pose conditioning, unless `pose_moments` is given.
            generator: randomness of the pose latent's posterior sample.
            pose_moments: (B, 8, h, w) cached VAE moments of the pose maps, instead of `pose_maps`.
        """
        has_pose = pose_maps is not None or pose_moments is not None
        if pose_maps is not None and pose_moments is not None:
            raise ValueError("Pass pose_maps or pose_moments, not both.")
        if self.pose_conditioning and not has_pose:
            raise ValueError("This model is pose-conditioned (HumanSD); pass pose_maps.")
        if not self.pose_conditioning and has_pose:
            raise ValueError("This model is text-only (pose_conditioning=False); pose_maps must be None.")
        crossattn = self.encode_text(prompts)
        if pose_moments is not None:
            concat = self.latents_from_moments(pose_moments, generator)
        else:
            concat = self.encode_images(pose_maps, generator) if pose_maps is not None else None
        return Conditioning(crossattn, concat)

    def apply_model(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, *, control: UNetControl | None = None
    ) -> torch.Tensor:
        """Network output for noisy latents.

        Args:
            x_t: (B, 4, h, w) noisy latents.
            t: (B,) integer timesteps.
            cond: text tokens and, for HumanSD, the (B, 4, h, w) pose latent (channels 4-7 of the UNet input). Text
                tokens of k * B rows with x_t, t and the pose latent of B: the shared-input form of classifier-free
                guidance (each input row for k texts, `UNetModel.forward`).
            control: optional ControlNet / T2I-Adapter injections.

        Returns:
            (B, 4, h, w) eps (or v) prediction (k * B rows for a shared input).
        """
        x = x_t
        if self.pose_conditioning:
            if cond.concat is None:
                raise ValueError("HumanSD needs the pose latent in cond.concat.")
            if cond.concat.shape[-2:] != x_t.shape[-2:]:
                raise ValueError(
                    f"Pose latent size {tuple(cond.concat.shape[-2:])} differs from the latent {tuple(x_t.shape[-2:])}."
                )
            x = torch.cat([x_t, cond.concat.to(x_t.dtype)], dim=1)
        # CUDA-graph trees reuse a graph's output memory on its next replay, and samplers keep earlier outputs
        # (PLMS keeps three): mark the step and hand out a copy.
        if self.cuda_graph_steps:
            torch.compiler.cudagraph_mark_step_begin()
        out = self.unet(x, t, cond.crossattn.to(x_t.dtype), control=control)
        return out.clone() if self.cuda_graph_steps else out
