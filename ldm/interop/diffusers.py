"""Build `diffusers` models holding the same weights as ours, using diffusers' own conversion utilities.

Used by the equivalence tests (an independent implementation of the same network) and the benchmarks.
`diffusers` is a dev-only dependency; it is imported lazily.

References:
    huggingface/diffusers, `diffusers.loaders.single_file_utils` (LDM -> diffusers key conversion).
"""

from __future__ import annotations

from typing import Any

from ldm.models.latent_diffusion import LatentDiffusion


def original_config(model: LatentDiffusion) -> dict[str, Any]:
    """The original-LDM-style config (`model.params.unet_config/first_stage_config`) describing our model."""
    unet_params = {k: v for k, v in model.unet.config.items() if not (k.startswith("num_head") and v == -1)}
    first_stage = {"params": {"embed_dim": model.vae.embed_dim, "ddconfig": dict(model.vae.ddconfig)}}
    return {"model": {"params": {"unet_config": {"params": unet_params}, "first_stage_config": first_stage}}}


def to_diffusers(model: LatentDiffusion):
    """(UNet2DConditionModel, AutoencoderKL) from diffusers, float32 on CPU, loaded strictly with our weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders import single_file_utils as sfu

    cfg = original_config(model)
    ckpt = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    unet_cfg = sfu.create_unet_diffusers_config_from_ldm(cfg, ckpt)
    unet = UNet2DConditionModel(**unet_cfg)
    unet.load_state_dict(sfu.convert_ldm_unet_checkpoint(ckpt, unet_cfg), strict=True)
    vae_cfg = sfu.create_vae_diffusers_config_from_ldm(cfg, ckpt, scaling_factor=model.scale_factor)
    vae = AutoencoderKL(**vae_cfg)
    vae.load_state_dict(sfu.convert_ldm_vae_checkpoint(ckpt, vae_cfg), strict=True)
    return unet.eval(), vae.eval()
