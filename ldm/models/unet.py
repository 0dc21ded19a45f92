"""The Stable Diffusion UNet (SD-1.x and SD-2.x), with any number of input channels.

Configuration parameters carry the names of the original `unet_config` section, so a user's original YAML
works with only `target:` changed. HumanSD is this UNet with `in_channels: 8` (noisy latent + pose latent).

References:
    Ronneberger et al., "U-Net", 2015; Dhariwal & Nichol, "Diffusion Models Beat GANs", 2021 (ResBlock, time embedding).
    Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022.
    Stability-AI/stablediffusion (cf8f7b6), ldm/modules/diffusionmodules/openaimodel.py (key layout).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ldm.models.attention import SpatialTransformer, group_norm, tile_batch


def timestep_embedding(timesteps: torch.Tensor, dim: int, *, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding, cosine half first (as the original LDM code).

    Args:
        timesteps: (B,) integer or float timesteps.
        dim: embedding width (even).

    Returns:
        (B, dim) float32 embedding.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


@dataclass
class UNetControl:
    """Extra signals injected into the UNet by ControlNet / T2I-Adapter style models.

    Args:
        input_residuals: one tensor per input block, added to that block's skip (ControlNet), or None.
        middle_residual: added to the middle-block output (ControlNet), or None.
        input_features: {input block index: tensor} added to the hidden state right after that input block,
            before it is pushed to the skip stack (T2I-Adapter: blocks 2, 5, 8, 11).
    """

    input_residuals: Sequence[torch.Tensor] | None = None
    middle_residual: torch.Tensor | None = None
    input_features: dict[int, torch.Tensor] = field(default_factory=dict)


class TimestepBlock(nn.Module):
    """A module whose forward takes the timestep embedding."""


class TimestepEmbedSequential(nn.Sequential):
    """Sequential that routes the time embedding to ResBlocks and the context to transformers."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, tile_batch(emb, x.shape[0]))
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (`op` in checkpoints)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest 2x upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResBlock(nn.Module):
    """Residual block with additive timestep conditioning (no scale-shift norm, as SD).

    Args:
        channels: input channels.
        emb_channels: time-embedding width.
        out_channels: output channels (a 1x1 conv skip is used when they differ).
        use_checkpoint: gradient checkpointing during training.
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int, *, use_checkpoint: bool = False):
        super().__init__()
        self.in_layers = nn.Sequential(group_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            group_norm(out_channels), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        self.use_checkpoint = use_checkpoint

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


@dataclass(frozen=True)
class TransformerFactory:
    """Builds the SpatialTransformer of a given width with the original's head-count rule (see `UNetModel`)."""

    num_heads: int
    num_head_channels: int
    legacy: bool
    depth: int
    context_dim: int
    use_linear: bool
    use_checkpoint: bool

    def __call__(self, ch: int) -> SpatialTransformer:
        if self.num_head_channels == -1:
            heads, dim_head = self.num_heads, ch // self.num_heads
        elif self.legacy:
            heads, dim_head = ch // self.num_head_channels, ch // (ch // self.num_head_channels)
        else:
            heads, dim_head = ch // self.num_head_channels, self.num_head_channels
        return SpatialTransformer(
            ch,
            heads,
            dim_head,
            depth=self.depth,
            context_dim=self.context_dim,
            use_linear=self.use_linear,
            use_checkpoint=self.use_checkpoint,
        )


@dataclass
class Encoder:
    """The time embedding, input blocks and middle block shared by the UNet and ControlNet's control model."""

    time_embed: nn.Sequential
    input_blocks: nn.ModuleList
    middle_block: TimestepEmbedSequential
    skip_channels: list[int]  # output channels of each input block
    channels: int  # channels at the bottom
    ds: int  # downsampling factor at the bottom
    emb_channels: int


def build_encoder(
    *,
    in_channels: int,
    model_channels: int,
    attention_resolutions: Sequence[int],
    num_res_blocks: int,
    channel_mult: Sequence[int],
    transformer: TransformerFactory,
    use_checkpoint: bool,
) -> Encoder:
    """Build the SD UNet encoder layer for layer (key layout of `input_blocks.*` and `middle_block.*`)."""
    emb_ch = model_channels * 4
    time_embed = nn.Sequential(nn.Linear(model_channels, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
    input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, model_channels, 3, padding=1))])
    skip_channels = [model_channels]
    ch, ds = model_channels, 1
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            layers: list[nn.Module] = [ResBlock(ch, emb_ch, mult * model_channels, use_checkpoint=use_checkpoint)]
            ch = mult * model_channels
            if ds in attention_resolutions:
                layers.append(transformer(ch))
            input_blocks.append(TimestepEmbedSequential(*layers))
            skip_channels.append(ch)
        if level != len(channel_mult) - 1:
            input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
            skip_channels.append(ch)
            ds *= 2
    middle_block = TimestepEmbedSequential(
        ResBlock(ch, emb_ch, ch, use_checkpoint=use_checkpoint),
        transformer(ch),
        ResBlock(ch, emb_ch, ch, use_checkpoint=use_checkpoint),
    )
    return Encoder(time_embed, input_blocks, middle_block, skip_channels, ch, ds, emb_ch)


class UNetModel(nn.Module):
    """Stable Diffusion UNet.

    Args:
        in_channels: input channels (4 for SD, 8 for HumanSD: noisy latent + pose latent).
        out_channels: output channels (4).
        model_channels: base width (320 full size).
        attention_resolutions: downsampling factors at which a SpatialTransformer follows each ResBlock.
        num_res_blocks: ResBlocks per level.
        channel_mult: width multiplier per level.
        num_heads: heads per transformer (SD-1.x); ignored when `num_head_channels` is set.
        num_head_channels: channels per head (SD-2.x: 64); -1 to use `num_heads`.
        use_linear_in_transformer: Linear proj_in/out (SD-2.x) instead of 1x1 convs (SD-1.x).
        transformer_depth: transformer blocks per SpatialTransformer.
        context_dim: width of the text tokens (768 SD-1.x, 1024 SD-2.x).
        use_checkpoint: gradient checkpointing of ResBlocks and transformer blocks during training.
        legacy: the original's head-count rule for old checkpoints (True: dim_head = channels // num_heads
            even when num_head_channels is given). SD-1.5/2.1 configs use False.
        use_spatial_transformer, use_fp16, image_size, dropout, conv_resample, dims, use_scale_shift_norm,
        resblock_updown, num_heads_upsample: accepted so original YAML sections load; only the values SD uses
            are supported and any other value raises.
    """

    def __init__(
        self,
        *,
        in_channels: int = 4,
        out_channels: int = 4,
        model_channels: int = 320,
        attention_resolutions: Sequence[int] = (4, 2, 1),
        num_res_blocks: int = 2,
        channel_mult: Sequence[int] = (1, 2, 4, 4),
        num_heads: int = -1,
        num_head_channels: int = -1,
        use_linear_in_transformer: bool = False,
        transformer_depth: int = 1,
        context_dim: int = 1024,
        use_checkpoint: bool = False,
        legacy: bool = False,
        use_spatial_transformer: bool = True,
        use_fp16: bool = False,
        image_size: int | None = None,
        dropout: float = 0.0,
        conv_resample: bool = True,
        dims: int = 2,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        num_heads_upsample: int = -1,
    ):
        super().__init__()
        _check_config(
            num_heads=num_heads,
            num_head_channels=num_head_channels,
            use_spatial_transformer=use_spatial_transformer,
            dropout=dropout,
            conv_resample=conv_resample,
            dims=dims,
            use_scale_shift_norm=use_scale_shift_norm,
            resblock_updown=resblock_updown,
        )
        del use_fp16, image_size, num_heads_upsample  # precision is the caller's autocast; size is not a parameter
        # The architecture in the original `unet_config` vocabulary (for export and conversion).
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "model_channels": model_channels,
            "attention_resolutions": list(attention_resolutions),
            "num_res_blocks": num_res_blocks,
            "channel_mult": list(channel_mult),
            "num_heads": num_heads,
            "num_head_channels": num_head_channels,
            "use_linear_in_transformer": use_linear_in_transformer,
            "transformer_depth": transformer_depth,
            "context_dim": context_dim,
            "legacy": legacy,
        }
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.model_channels = model_channels
        self.num_levels = len(channel_mult)

        transformer = TransformerFactory(
            num_heads=num_heads,
            num_head_channels=num_head_channels,
            legacy=legacy,
            depth=transformer_depth,
            context_dim=context_dim,
            use_linear=use_linear_in_transformer,
            use_checkpoint=use_checkpoint,
        )
        encoder = build_encoder(
            in_channels=in_channels,
            model_channels=model_channels,
            attention_resolutions=attention_resolutions,
            num_res_blocks=num_res_blocks,
            channel_mult=channel_mult,
            transformer=transformer,
            use_checkpoint=use_checkpoint,
        )
        self.time_embed = encoder.time_embed
        self.input_blocks = encoder.input_blocks
        self.middle_block = encoder.middle_block
        skip_channels, ch, ds, emb_ch = list(encoder.skip_channels), encoder.channels, encoder.ds, encoder.emb_channels

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                skip = skip_channels.pop()
                layers = [ResBlock(ch + skip, emb_ch, model_channels * mult, use_checkpoint=use_checkpoint)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(transformer(ch))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @property
    def spatial_multiple(self) -> int:
        """Latent height/width must be a multiple of this (one halving per level transition)."""
        return 2 ** (self.num_levels - 1)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        *,
        control: UNetControl | None = None,
    ) -> torch.Tensor:
        """Predict the noise (or v) for a batch of noisy latents.

        Args:
            x: (B, in_channels, h, w) latents; h and w multiples of `spatial_multiple`.
            timesteps: (B,) integer timesteps in [0, T).
            context: (B, M, context_dim) text tokens, or (k * B, M, context_dim): the shared-input form of
                classifier-free guidance, the same as `x.repeat(k, 1, 1, 1)`, `timesteps.repeat(k)` with this
                context, computed once per input row up to the first cross-attention (conv_in, the first ResBlock,
                the first self-attention) and tiled from there.
            control: optional ControlNet / T2I-Adapter injections (of the full batch: a shared input is tiled
                before the first block).

        Returns:
            (B, out_channels, h, w) prediction (k * B rows for a shared input, in `torch.cat` order).
        """
        if x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects {self.in_channels} input channels; got input of shape {tuple(x.shape)}.")
        m = self.spatial_multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(
                f"Latent size {tuple(x.shape[-2:])} must be a multiple of {m} (image size a multiple of {8 * m})."
            )
        n = context.shape[0]
        if n % x.shape[0]:
            raise ValueError(
                f"UNet batch mismatch: x has {x.shape[0]} rows but context {n} (context must have x's rows or, for a "
                "shared input, a multiple of them)."
            )
        if control is not None and n != x.shape[0]:  # injections come per row of the full batch
            x, timesteps = tile_batch(x, n), tile_batch(timesteps, n)
        control = control or UNetControl()
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(x.dtype))
        h = x
        skips = []
        for i, block in enumerate(self.input_blocks):
            h = block(h, emb, context)
            if i in control.input_features:
                h = h + control.input_features[i]
            skips.append(h)
        h = self.middle_block(h, emb, context)
        if control.middle_residual is not None:
            h = h + control.middle_residual
        if control.input_residuals is not None:
            skips = [s + r for s, r in zip(skips, control.input_residuals, strict=True)]
        for block in self.output_blocks:
            h = block(torch.cat([h, tile_batch(skips.pop(), h.shape[0])], dim=1), emb, context)
        return tile_batch(self.out(h), n)


def _check_config(**values) -> None:
    supported = {
        "use_spatial_transformer": True,
        "dropout": 0.0,
        "conv_resample": True,
        "dims": 2,
        "use_scale_shift_norm": False,
        "resblock_updown": False,
    }
    for key, expected in supported.items():
        if values[key] != expected:
            raise ValueError(f"UNetModel: {key}={values[key]!r} is not supported (Stable Diffusion uses {expected!r}).")
    if values["num_heads"] == -1 and values["num_head_channels"] == -1:
        raise ValueError("UNetModel: set either num_heads (SD-1.x) or num_head_channels (SD-2.x).")
