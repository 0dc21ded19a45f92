"""ControlNet: a trainable copy of the SD UNet encoder whose zero-convolution outputs are added to the frozen UNet.

This is the control network of ControlNet v1.1 (`control_v11p_sd15_openpose.pth`), the OpenPose baseline HumanSD
compares against. It is built from the UNet's own blocks (`ResBlock`, `SpatialTransformer`, `Downsample`,
`TimestepEmbedSequential`) in the UNet encoder's layout, so its `time_embed`, `input_blocks` and `middle_block` have
the same keys and shapes as the SD-1.5 UNet's; on top of that it has:

* `input_hint_block`: eight 3x3 convolutions with SiLU between them (indices 0, 2, ..., 14), channels
  hint -> 16 -> 16 -> 32 -> 32 -> 96 -> 96 -> 256 -> model_channels, stride 2 at indices 4, 8, 12, so the
  full-resolution hint image reaches latent resolution; the last one is zero-initialised. Its output is added
  to the hidden state right after `input_blocks[0]`.
* `zero_convs.0..N-1`: one zero-initialised 1x1 convolution per input block; output i is `zero_convs[i]` of the
  output of `input_blocks[i]`.
* `middle_block_out`: a zero-initialised 1x1 convolution after the middle block (the last output).

Wiring into the SD UNet (`ControlledUnetModel.forward` of the original): every output is multiplied by its
`control_scales[i]` (`[strength] * 13`; guess mode is not implemented), the last one is added to the middle-block
output, and before output block j the UNet concatenates `hs.pop() + control.pop()`: exactly
`UNetControl(input_residuals=outputs[:-1], middle_residual=outputs[-1])` (see `to_unet_control`).

Weights are loaded by `comparison_models.checkpoints.load_controlnet` (the file's keys carry `control_model.`).

References:
    Zhang, Rao & Agrawala, "Adding Conditional Control to Text-to-Image Diffusion Models", ICCV 2023.
    lllyasviel/ControlNet-v1-1-nightly (e2b4415), cldm/cldm.py (`ControlNet`, `ControlledUnetModel`,
        `ControlLDM.apply_model`), models/control_v11p_sd15_openpose.yaml.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ldm.models.unet import TransformerFactory, UNetControl, build_encoder, timestep_embedding

# Output channels of the first seven hint convolutions of the released models; the eighth maps to model_channels.
HINT_BLOCK_CHANNELS: tuple[int, ...] = (16, 16, 32, 32, 96, 96, 256)
HINT_STRIDE2_CONVS = (2, 4, 6)  # positions among the 8 convolutions (module indices 4, 8, 12)
HINT_DOWNSAMPLE = 2 ** len(HINT_STRIDE2_CONVS)  # 8: the hint is at image resolution, 8x the latent


def _zero_conv(channels: int) -> nn.Sequential:
    """A 1x1 convolution initialised to zero, wrapped so its keys are `<name>.0.weight` as in the original."""
    conv = nn.Conv2d(channels, channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return nn.Sequential(conv)


def _hint_block(hint_channels: int, channels: Sequence[int], model_channels: int) -> nn.Sequential:
    """conv, SiLU, conv, SiLU, ... , conv (8 convolutions; the last one zero-initialised)."""
    widths = [hint_channels, *channels, model_channels]
    layers: list[nn.Module] = []
    for k in range(len(widths) - 1):
        stride = 2 if k in HINT_STRIDE2_CONVS else 1
        layers.append(nn.Conv2d(widths[k], widths[k + 1], 3, stride=stride, padding=1))
        if k < len(widths) - 2:
            layers.append(nn.SiLU())
    nn.init.zeros_(layers[-1].weight)
    nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


class ControlNet(nn.Module):
    """The ControlNet control model (`control_model.*` in the released files).

    Parameter names are those of the original `control_stage_config`, so its YAML section works as is.

    Args:
        in_channels: latent channels (4).
        hint_channels: channels of the control image (3, RGB).
        model_channels: base width (320); must equal the controlled UNet's.
        attention_resolutions: downsampling factors with a SpatialTransformer after each ResBlock.
        num_res_blocks: ResBlocks per level.
        channel_mult: width multiplier per level.
        num_heads: heads per transformer (SD-1.x: 8); ignored when `num_head_channels` is set.
        num_head_channels: channels per head (SD-2.x: 64); -1 to use `num_heads`.
        use_linear_in_transformer: Linear proj_in/out (SD-2.x) instead of 1x1 convs (SD-1.x).
        transformer_depth: transformer blocks per SpatialTransformer.
        context_dim: width of the text tokens (768 for SD-1.x).
        use_checkpoint: gradient checkpointing during training.
        legacy: the original's head-count rule for old checkpoints (see `UNetModel`).
        hint_block_channels: output widths of the first seven hint convolutions (the released models' values by
            default; tiny test models use smaller ones).
        use_spatial_transformer, image_size, use_fp16, dims: accepted so the original YAML section loads; only
            the values SD uses are supported.
    """

    def __init__(
        self,
        *,
        in_channels: int = 4,
        hint_channels: int = 3,
        model_channels: int = 320,
        attention_resolutions: Sequence[int] = (4, 2, 1),
        num_res_blocks: int = 2,
        channel_mult: Sequence[int] = (1, 2, 4, 4),
        num_heads: int = -1,
        num_head_channels: int = -1,
        use_linear_in_transformer: bool = False,
        transformer_depth: int = 1,
        context_dim: int = 768,
        use_checkpoint: bool = False,
        legacy: bool = False,
        hint_block_channels: Sequence[int] = HINT_BLOCK_CHANNELS,
        use_spatial_transformer: bool = True,
        image_size: int | None = None,
        use_fp16: bool = False,
        dims: int = 2,
    ):
        super().__init__()
        del image_size, use_fp16  # the model is size-agnostic; precision is the caller's autocast
        if not use_spatial_transformer or dims != 2:
            raise ValueError(
                f"ControlNet: use_spatial_transformer={use_spatial_transformer}, dims={dims} are not supported "
                "(Stable Diffusion uses True and 2)."
            )
        if num_heads == -1 and num_head_channels == -1:
            raise ValueError("ControlNet: set either num_heads (SD-1.x) or num_head_channels (SD-2.x).")
        if len(hint_block_channels) != len(HINT_BLOCK_CHANNELS):
            raise ValueError(
                f"ControlNet: hint_block_channels must list {len(HINT_BLOCK_CHANNELS)} widths (the convolutions "
                f"before the last one); got {list(hint_block_channels)}."
            )
        self.in_channels = in_channels
        self.hint_channels = hint_channels
        self.model_channels = model_channels
        self.context_dim = context_dim
        self.num_levels = len(channel_mult)

        encoder = build_encoder(
            in_channels=in_channels,
            model_channels=model_channels,
            attention_resolutions=attention_resolutions,
            num_res_blocks=num_res_blocks,
            channel_mult=channel_mult,
            transformer=TransformerFactory(
                num_heads=num_heads,
                num_head_channels=num_head_channels,
                legacy=legacy,
                depth=transformer_depth,
                context_dim=context_dim,
                use_linear=use_linear_in_transformer,
                use_checkpoint=use_checkpoint,
            ),
            use_checkpoint=use_checkpoint,
        )
        # The UNet encoder layer for layer, a zero conv per input block (registration order = the file's key order).
        self.time_embed = encoder.time_embed
        self.input_blocks = encoder.input_blocks
        self.zero_convs = nn.ModuleList(_zero_conv(c) for c in encoder.skip_channels)
        self.input_hint_block = _hint_block(hint_channels, hint_block_channels, model_channels)
        self.middle_block = encoder.middle_block
        ch = encoder.channels
        self.middle_block_out = _zero_conv(ch)

    @property
    def num_outputs(self) -> int:
        """Number of control tensors `forward` returns: one per input block plus the middle one (13 for SD)."""
        return len(self.input_blocks) + 1

    def forward(
        self, x: torch.Tensor, hint: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor
    ) -> list[torch.Tensor]:
        """Compute the control residuals.

        Args:
            x: (B, in_channels, h, w) noisy latents (the same input as the UNet's, without any concat).
            hint: (B or 1, hint_channels, 8h, 8w) control image in [0, 1] (the rendered skeleton / 255).
            timesteps: (B,) integer timesteps.
            context: (B, 77, context_dim) text tokens of the branch (conditional or unconditional).

        Returns:
            `num_outputs` tensors: output i < N (N = number of input blocks) has the shape of input block i's
            output, the last one the middle block's. Unscaled (multiply by `control_scales`).
        """
        if x.shape[1] != self.in_channels:
            raise ValueError(f"ControlNet expects {self.in_channels} latent channels; got x of shape {tuple(x.shape)}.")
        expected = (self.hint_channels, HINT_DOWNSAMPLE * x.shape[-2], HINT_DOWNSAMPLE * x.shape[-1])
        if hint.ndim != 4 or tuple(hint.shape[1:]) != expected or hint.shape[0] not in (1, x.shape[0]):
            raise ValueError(
                f"ControlNet hint must have shape ({x.shape[0]} or 1, {expected[0]}, {expected[1]}, {expected[2]}) "
                f"for latents of shape {tuple(x.shape)} (image resolution, {HINT_DOWNSAMPLE}x the latent); "
                f"got {tuple(hint.shape)}."
            )
        if context.shape[-1] != self.context_dim:
            raise ValueError(f"ControlNet expects context width {self.context_dim}; got {tuple(context.shape)}.")
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(x.dtype))
        guided_hint = self.input_hint_block(hint.to(x.dtype))  # (B or 1, model_channels, h, w)
        outputs = []
        h = x
        for i, (block, zero_conv) in enumerate(zip(self.input_blocks, self.zero_convs, strict=True)):
            h = block(h, emb, context)
            if i == 0:
                h = h + guided_hint
            outputs.append(zero_conv(h))
        h = self.middle_block(h, emb, context)
        outputs.append(self.middle_block_out(h))
        return outputs


def control_scales(strength: float = 1.0, *, num_outputs: int = 13) -> list[float]:
    """`[strength] * num_outputs`: the original's scales with guess mode off (HumanSD forced strength 1)."""
    return [float(strength)] * num_outputs


def to_unet_control(outputs: Sequence[torch.Tensor], scales: Sequence[float]) -> UNetControl:
    """Scale ControlNet outputs and arrange them for the UNet (`hs.pop() + control.pop()`, middle + last).

    Args:
        outputs: the `ControlNet.forward` tensors.
        scales: one factor per output (`control_scales`).

    Returns:
        `UNetControl` with the first N outputs as input-block residuals and the last as the middle residual.
    """
    if len(scales) != len(outputs):
        raise ValueError(f"Got {len(scales)} control scales for {len(outputs)} ControlNet outputs; they must match.")
    scaled = [out * s for out, s in zip(outputs, scales, strict=True)]
    return UNetControl(input_residuals=scaled[:-1], middle_residual=scaled[-1])
