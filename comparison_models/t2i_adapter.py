"""T2I-Adapter: a small conv net that turns the control image into one feature map per UNet resolution level.

This is the `Adapter` of TencentARC/T2I-Adapter v1 (`t2iadapter_openpose_sd14v1.pth`), the second pose baseline
HumanSD compares against: `Adapter(cin=192, channels=[320, 640, 1280, 1280], nums_rb=2, ksize=1, sk=True,
use_conv=False)`.

* `PixelUnshuffle(8)` turns the (B, 3, H, W) image in [0, 1] into (B, 192, H/8, W/8); `conv_in` (3x3) maps it to
  `channels[0]`.
* `body` holds `len(channels) * nums_rb` `ResnetBlock`s. The first block of level k > 0 downsamples (2x2 AvgPool
  when `use_conv=False`, no parameters) and, because the width changes, has a `ksize` `in_conv`; every block is
  `x + block2(relu(block1(x)))` (3x3, then `ksize`; `sk=True`: identity skip, no `skep`).
* The output of the last block of level k is feature k: (B, channels[k], H/8/2^k, W/8/2^k).

Wiring into the SD UNet (`UNetModel.forward` of the original): feature k times `cond_weight` is added to the hidden
state after the last input block of level k, *before* it is pushed on the skip stack (SD: blocks 2, 5, 8, 11;
`adapter_block_indices`), i.e. `UNetControl(input_features={2: f0, 5: f1, 8: f2, 11: f3})`. The middle and output
blocks are untouched. `cond_tau` limits the injection to the first steps (see `comparison_models.denoisers`).

Weights are loaded by `comparison_models.checkpoints.load_adapter` (flat, unprefixed keys).

References:
    Mou et al., "T2I-Adapter: Learning Adapters to Dig out More Controllable Ability for Text-to-Image Diffusion
        Models", AAAI 2024.
    TencentARC/T2I-Adapter, branch SD (16bba67), ldm/modules/encoders/adapter.py (`Adapter`, `ResnetBlock`),
        ldm/modules/diffusionmodules/openaimodel.py (`UNetModel.forward`, injection), ldm/inference_base.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

PIXEL_UNSHUFFLE = 8  # the control image is at image resolution, 8x the latent


class _Downsample(nn.Module):
    """2x downsampling: 2x2 average pooling, or a stride-2 3x3 convolution (`op.*` keys) with `use_conv`."""

    def __init__(self, channels: int, *, use_conv: bool):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResnetBlock(nn.Module):
    """One adapter block: optional downsample, optional width change (`in_conv`), then a residual conv pair.

    Args:
        in_channels: input width.
        out_channels: output width; an `in_conv` is created when it differs from `in_channels`.
        down: halve the resolution first (2x2 average pooling, or a stride-2 conv with `use_conv`).
        ksize: kernel size of `in_conv` and `block2`.
        sk: identity skip connection (True for the released pose adapter); False (`skep` convs) raises.
        use_conv: downsample with a stride-2 3x3 convolution (`down_opt.op`) instead of average pooling.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, down: bool, ksize: int = 3, sk: bool = True, use_conv: bool = True
    ):
        super().__init__()
        if not sk:
            raise ValueError(
                "ResnetBlock: sk=False (adapters with `skep` convolutions) is not supported; the `skep` input width "
                "differs between T2I-Adapter versions. The pose adapter uses sk=True."
            )
        pad = ksize // 2
        self.down_opt = _Downsample(in_channels, use_conv=use_conv) if down else None
        self.in_conv = nn.Conv2d(in_channels, out_channels, ksize, padding=pad) if in_channels != out_channels else None
        self.block1 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.act = nn.ReLU()
        self.block2 = nn.Conv2d(out_channels, out_channels, ksize, padding=pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, out_channels, H or H/2, W or W/2)."""
        if self.down_opt is not None:
            x = self.down_opt(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        return x + self.block2(self.act(self.block1(x)))


class Adapter(nn.Module):
    """The T2I-Adapter feature extractor (the keys of `t2iadapter_*_sd14v1.pth`: `body.*`, `conv_in.*`).

    Args:
        cin: input channels after PixelUnshuffle(8): 64 x image channels (192 for an RGB pose image).
        channels: feature width per UNet level ([320, 640, 1280, 1280] for SD).
        nums_rb: ResnetBlocks per level.
        ksize: kernel size of the blocks' 1x1-or-larger convolutions (1 for the pose adapter).
        sk: identity skips (True for the pose adapter; False raises, see `ResnetBlock`).
        use_conv: strided-conv downsampling instead of average pooling (False for the pose adapter).
    """

    def __init__(
        self,
        *,
        cin: int = 192,
        channels: Sequence[int] = (320, 640, 1280, 1280),
        nums_rb: int = 2,
        ksize: int = 1,
        sk: bool = True,
        use_conv: bool = False,
    ):
        super().__init__()
        if cin % (PIXEL_UNSHUFFLE**2):
            raise ValueError(
                f"Adapter cin must be a multiple of {PIXEL_UNSHUFFLE**2} (64 x image channels); got {cin}."
            )
        if nums_rb < 1 or not channels:
            raise ValueError(f"Adapter needs nums_rb >= 1 and at least one level; got {nums_rb}, {list(channels)}.")
        self.cin = cin
        self.channels = [int(c) for c in channels]
        self.nums_rb = nums_rb
        self.unshuffle = nn.PixelUnshuffle(PIXEL_UNSHUFFLE)
        blocks = []
        for i, ch in enumerate(self.channels):
            for j in range(nums_rb):
                first_of_level = i != 0 and j == 0
                ch_in = self.channels[i - 1] if first_of_level else ch
                blocks.append(ResnetBlock(ch_in, ch, down=first_of_level, ksize=ksize, sk=sk, use_conv=use_conv))
        self.body = nn.ModuleList(blocks)
        self.conv_in = nn.Conv2d(cin, self.channels[0], 3, padding=1)

    @property
    def image_channels(self) -> int:
        """Channels of the control image (3 for RGB)."""
        return self.cin // PIXEL_UNSHUFFLE**2

    def forward(self, hint: torch.Tensor) -> list[torch.Tensor]:
        """Extract the features.

        Args:
            hint: (B, image_channels, H, W) control image in [0, 1]; H and W multiples of 8 * 2^(levels - 1).

        Returns:
            One tensor per level: (B, channels[k], H / 8 / 2^k, W / 8 / 2^k).
        """
        multiple = PIXEL_UNSHUFFLE * 2 ** (len(self.channels) - 1)
        shape_ok = hint.ndim == 4 and hint.shape[1] == self.image_channels
        if not shape_ok or hint.shape[-2] % multiple or hint.shape[-1] % multiple:
            raise ValueError(
                f"Adapter input must have shape (B, {self.image_channels}, H, W) with H and W multiples of {multiple}; "
                f"got {tuple(hint.shape)}."
            )
        x = self.conv_in(self.unshuffle(hint))  # (B, channels[0], H/8, W/8)
        features = []
        for i in range(len(self.channels)):
            for j in range(self.nums_rb):
                x = self.body[i * self.nums_rb + j](x)
            features.append(x)
        return features


def adapter_block_indices(num_res_blocks: int, num_levels: int) -> list[int]:
    """UNet input-block index after which feature k is added: the last ResBlock of level k (before its downsample).

    Input block 0 is the stem conv; each level has `num_res_blocks` blocks plus a downsample, so level k's last
    block is k (num_res_blocks + 1) + num_res_blocks. SD (2 blocks, 4 levels): [2, 5, 8, 11], the original's
    `(id + 1) % 3 == 0` rule.
    """
    return [k * (num_res_blocks + 1) + num_res_blocks for k in range(num_levels)]
