"""Inference speed/memory options ("fast path") and the helpers that apply them to a `LatentDiffusion`.

Every option is off by default (the plain path) and each is checked against the plain path in
`tests/test_fast_path.py` (and `tests/test_unet_fastpath_cpu.py` for `prepack_weights`):

- attention: `F.scaled_dot_product_attention` is the default; `ldm.models.attention.set_attention_backend("math")`
  forces the explicit reference (see `FastPathOptions.attention_backend`);
- `channels_last`: the UNet's weights in NHWC memory format (faster convolutions on tensor-core GPUs; measured
  slower than NCHW for this UNet on our CPU);
- `compile_unet`: `torch.compile` of the UNet (in place, `nn.Module.compile`: state-dict keys are unchanged);
- `prepack_weights` (CPU): the UNet's convolution weights reordered once into oneDNN's blocked layout
  (`PrepackedConv2d`) instead of on every call, and its linear weights packed once for MKL / oneDNN
  (`PrepackedLinear`), in fp32 and under bf16 autocast; eager mode, no compiler needed;
- `winograd` (CPU, fp32): `prepack_weights`, and the UNet's 3x3 stride-1 convolutions on feature maps of 16 px or
  more computed with Winograd's F(4x4, 3x3) (`ldm.inference.winograd`): 4x fewer multiplications in those layers;
- `share_cfg_input`: classifier-free guidance passes the noisy latent, timestep and pose latent once for both
  branches (they differ only in the text), so the UNet runs its layers before the first cross-attention at batch
  B instead of 2B (`UNetModel.forward`);
- `vae_slicing`: decode one latent at a time (`AutoencoderKL.decode_sliced`): peak memory of batch 1;
- `vae_tiling`: decode overlapping latent tiles blended linearly (`AutoencoderKL.decode_tiled`): bounded peak
  memory at large sizes, close to (not bit-equal with) the plain decode when there is more than one tile.

bf16/fp16 autocast is the pipeline's `precision` option. All helpers are device and precision neutral.

References:
    PyTorch, "Channels Last Memory Format" and `torch.compile` tutorials; `torch/_inductor/fx_passes/mkldnn_fusion.py`
    (the same `mkldnn._reorder_convolution_weight` / `_convolution_pointwise` pair, used by inductor's freezing).
    huggingface/diffusers, `AutoencoderKL.enable_tiling` / `enable_slicing` (the tiled decode with linear blending).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from ldm.inference.prepack import PrepackedConv2d, PrepackedLinear, prepack_weights
from ldm.inference.winograd import use_winograd
from ldm.models.attention import ATTENTION_BACKENDS, set_attention_backend
from ldm.models.latent_diffusion import LatentDiffusion

logger = logging.getLogger(__name__)
__all__ = [
    "FastPathOptions",
    "PrepackedConv2d",
    "PrepackedLinear",
    "apply_fast_path",
    "decode_latents",
    "prepack_weights",
]


HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CUDA_GRAPH_COMPILE_MODES = ("reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class FastPathOptions:
    """Speed/memory options of inference; all off by default.

    Args:
        channels_last: convert the UNet to `torch.channels_last`.
        compile_unet: `torch.compile` the UNet (first call compiles; later calls with the same shapes are fast).
        compile_kwargs: extra keyword arguments of `torch.compile` (e.g. {"mode": "max-autotune"}). The modes that
            use CUDA graphs ("reduce-overhead", "max-autotune") make every denoising step a new graph step whose
            output is copied out of the graph's buffer (`LatentDiffusion.cuda_graph_steps`).
        prepack_weights: CPU inference: keep the UNet's convolution and linear weights packed for oneDNN / MKL
            (see `prepack_weights`; costs up to one extra copy of the weights).
        winograd: CPU fp32 inference: `prepack_weights`, and the 3x3 convolutions of the UNet as Winograd
            F(4x4, 3x3) where measured faster (see `ldm.inference.winograd`; the transformed filters cost up to 4x
            the weights of those layers instead of the packed copy; outputs within fp32 rounding, ~2e-5 at
            SD-2.1 size). Under bf16 / fp16 autocast it is `prepack_weights`.
        unet_dtype: "bf16" / "fp16": store the UNet's weights in that dtype (use with autocast of the same dtype,
            `PoseToImagePipeline(precision=...)`): autocast alone re-casts the fp32 weights on every call.
        share_cfg_input: classifier-free guidance computes the UNet's layers before the first cross-attention
            once for both branches (conv_in, the first ResBlock and self-attention at the largest latent size).
        vae_slicing: decode one image of the batch at a time.
        vae_tiling: decode overlapping latent tiles (for images larger than the model's native size).
        vae_tile: tile side in latent pixels (64 = 512 px with SD's f=8 VAE).
        vae_tile_overlap: latent pixels shared by neighbouring tiles.
        attention_backend: None leaves the process-wide backend alone; "auto" (SDPA) or "math" sets it.
    """

    channels_last: bool = False
    compile_unet: bool = False
    compile_kwargs: dict[str, Any] = field(default_factory=dict)
    prepack_weights: bool = False
    winograd: bool = False
    unet_dtype: str | None = None
    share_cfg_input: bool = False
    vae_slicing: bool = False
    vae_tiling: bool = False
    vae_tile: int = 64
    vae_tile_overlap: int = 16
    attention_backend: str | None = None

    def __post_init__(self) -> None:
        if self.attention_backend is not None and self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(
                f"Unknown attention_backend {self.attention_backend!r}; choose one of {list(ATTENTION_BACKENDS)}."
            )
        if (self.prepack_weights or self.winograd) and self.compile_unet:
            raise ValueError(
                "prepack_weights / winograd and compile_unet are exclusive: under torch.compile, inductor's weight "
                "freezing (torch._inductor.config.freezing = True) packs the weights itself; choose one."
            )
        if self.unet_dtype not in (None, *HALF_DTYPES):
            raise ValueError(f"unet_dtype must be None or one of {sorted(HALF_DTYPES)}; got {self.unet_dtype!r}.")
        if self.vae_tile <= 0 or not 0 <= self.vae_tile_overlap < self.vae_tile:
            raise ValueError(
                f"Need vae_tile > 0 and 0 <= vae_tile_overlap < vae_tile; got {self.vae_tile}, {self.vae_tile_overlap}."
            )

    def enabled(self) -> dict[str, Any]:
        """The options that differ from the plain path (for logs and output sidecars)."""
        plain = FastPathOptions()
        return {k: v for k, v in vars(self).items() if v != getattr(plain, k)}


def apply_fast_path(model: LatentDiffusion, options: FastPathOptions) -> LatentDiffusion:
    """Apply the model-side options in place (memory format, compilation, attention backend); returns `model`.

    Call after moving the model to its device. Decoding options act in `decode_latents`.
    """
    if options.attention_backend is not None:
        set_attention_backend(options.attention_backend)
    if options.unet_dtype is not None:
        model.unet.to(HALF_DTYPES[options.unet_dtype])
    if options.channels_last:
        model.unet.to(memory_format=torch.channels_last)
    if options.prepack_weights or options.winograd:
        prepack_weights(model.unet)
    if options.winograd:
        use_winograd(model.unet)
    model.share_cfg_input = options.share_cfg_input
    if options.compile_unet:
        model.unet.compile(**options.compile_kwargs)
        model.cuda_graph_steps = options.compile_kwargs.get("mode") in CUDA_GRAPH_COMPILE_MODES
    if options.enabled():
        logger.info("Fast path: %s", options.enabled())
    return model


def decode_latents(model: LatentDiffusion, latents: torch.Tensor, options: FastPathOptions) -> torch.Tensor:
    """Scaled latents (B, 4, h, w) -> images (B, 3, 8h, 8w) with the decoding options (as `model.decode_latents`).

    Slicing and tiling combine: each image of the batch is decoded on its own, tile by tile.
    """
    if not (options.vae_slicing or options.vae_tiling):
        return model.decode_latents(latents)
    z = latents / model.scale_factor
    vae = model.vae
    if options.vae_tiling:
        chunks = z.split(1) if options.vae_slicing else (z,)
        return torch.cat([vae.decode_tiled(c, tile=options.vae_tile, overlap=options.vae_tile_overlap) for c in chunks])
    return vae.decode_sliced(z, slice_size=1)
