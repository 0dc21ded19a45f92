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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ldm.models.attention import ATTENTION_BACKENDS, set_attention_backend
from ldm.models.latent_diffusion import LatentDiffusion

logger = logging.getLogger(__name__)


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
        if self.prepack_weights and self.compile_unet:
            raise ValueError(
                "prepack_weights and compile_unet are exclusive: under torch.compile, inductor's weight freezing "
                "(torch._inductor.config.freezing = True) packs the weights itself; choose one."
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
    if options.prepack_weights:
        prepack_weights(model.unet)
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


class _Prepacked:
    """Mixin: a cache of one packed weight, keyed on the weight's identity and version, the compute dtype and the
    input shape, so in-place updates (optimizer steps, `load_state_dict`), `.to()`, autocast or a new size repack."""

    _packed: tuple[tuple[Any, ...], torch.Tensor] | None = None
    weight: torch.Tensor

    def _packed_weight(self, x: torch.Tensor, dtype: torch.dtype, pack: Callable[[torch.Tensor], torch.Tensor]):
        key = (self.weight.data_ptr(), self.weight._version, dtype, tuple(x.shape))
        if self._packed is None or self._packed[0] != key:
            self._packed = None  # release the stale copy before packing the new one
            self._packed = (key, pack(self.weight.to(dtype)))
        return self._packed[1]

    def __getstate__(self) -> dict[str, Any]:
        # oneDNN's opaque packed tensors cannot be copied or pickled; a copy repacks on its first call.
        state = dict(super().__getstate__())
        state.pop("_packed", None)
        return state


class PrepackedConv2d(_Prepacked, nn.Conv2d):
    """`nn.Conv2d` that, in CPU inference, runs oneDNN on a weight reordered once and cached.

    Plain `F.conv2d` on CPU reorders the weight into oneDNN's blocked layout on every call; for the 1280-channel
    3x3 convolutions of SD's inner levels at 256-512 px that reorder costs as much as the convolution itself. The
    cache holds at most one packed copy (see `_Prepacked`). Outputs are channels-last (oneDNN's native layout).
    Outside no-grad CPU inference in fp32 / bf16 (training, autograd, other devices or dtypes) it is exactly
    `nn.Conv2d`. Parameters and state-dict keys are those of `nn.Conv2d`; convert modules with `prepack_weights`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _packed_dtype(x, (torch.float32, torch.bfloat16))
        if dtype is None or x.dim() != 4 or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(x)
        geometry = (list(self.padding), list(self.stride), list(self.dilation), self.groups)
        weight = self._packed_weight(
            x, dtype, lambda w: torch.ops.mkldnn._reorder_convolution_weight(w, *geometry, list(x.shape))
        )
        bias = None if self.bias is None else self.bias.to(dtype)
        return torch.ops.mkldnn._convolution_pointwise(x.to(dtype), weight, bias, *geometry, "none", [], "")


class PrepackedLinear(_Prepacked, nn.Linear):
    """`nn.Linear` that, in CPU inference, multiplies by a weight packed once and cached.

    fp32 uses MKL's packed sgemm (`mkl._mkl_linear`, as inductor's freezing does; measured ~5% faster UNet at 256
    px), bf16 autocast oneDNN's packed matmul (`mkldnn._linear_pointwise`, ~7%). Otherwise as `PrepackedConv2d`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _packed_dtype(x, (torch.float32, torch.bfloat16) if torch._C.has_mkl else (torch.bfloat16,))
        if dtype is None:
            return super().forward(x)
        rows = x.numel() // x.shape[-1]
        if dtype == torch.bfloat16:
            weight = self._packed_weight(x, dtype, lambda w: torch.ops.mkldnn._reorder_linear_weight(w, rows))
            bias = None if self.bias is None else self.bias.to(dtype)
            return torch.ops.mkldnn._linear_pointwise(x.to(dtype), weight, bias, "none", [], "")
        weight = self._packed_weight(x, dtype, lambda w: torch.ops.mkl._mkl_reorder_linear_weight(w, rows))
        out = torch.ops.mkl._mkl_linear(x.reshape(rows, x.shape[-1]), weight, self.weight, self.bias, rows)
        return out.view(*x.shape[:-1], self.out_features)


def _packed_dtype(x: torch.Tensor, dtypes: tuple[torch.dtype, ...]) -> torch.dtype | None:
    """The dtype the plain op would compute in (autocast's on CPU) if packing applies to `x`, else None."""
    if torch.is_grad_enabled() or x.device.type != "cpu":
        return None
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    return dtype if dtype in dtypes else None


def prepack_weights(module: nn.Module) -> int:
    """Turn every plain `nn.Conv2d` / `nn.Linear` in `module` into `PrepackedConv2d` / `PrepackedLinear` (in place).

    Only the classes change: parameters, state-dict keys and the training path are untouched; no-grad CPU outputs
    agree with the plain path to float rounding (~1e-5 on SD's activations in fp32). Costs up to one extra copy of
    the weights (the packed ones). Requires oneDNN (mkldnn). Returns the number of converted modules.
    """
    if not torch.backends.mkldnn.is_available():
        raise RuntimeError("prepack_weights needs a torch build with oneDNN (torch.backends.mkldnn.is_available()).")
    classes = {nn.Conv2d: PrepackedConv2d, nn.Linear: PrepackedLinear}
    count = 0
    for m in module.modules():
        if type(m) in classes:
            m.__class__ = classes[type(m)]
            count += 1
    return count
