"""HigherHRNet: an HRNet backbone plus the associative-embedding higher-resolution head.

The module tree (names, order, shapes) reproduces MMPose 0.x's ``AssociativeEmbedding`` detector built from
``higherhrnet_w48_coco_512x512_udp.py`` so that ``higherhrnet_w48_humanart_512x512_udp.pth`` loads key for key:
``backbone.*`` is the HRNet (stem at 1/4, 4 stages, the last one fused into a single 1/4 output) and
``keypoint_head.*`` the AEHigherResolutionHead (17 heatmaps + 17 tag maps at 1/4, 17 heatmaps at 1/2).

The code is written from the papers and the checkpoint manifest, not copied from MMPose.

References:
    Sun et al., "Deep High-Resolution Representation Learning for Human Pose Estimation", CVPR 2019 (HRNet).
    Cheng et al., "HigherHRNet: Scale-Aware Representation Learning for Bottom-Up Human Pose Estimation",
    CVPR 2020.
    Newell et al., "Associative Embedding: End-to-End Learning for Joint Detection and Grouping", NeurIPS 2017.
    Checkpoint layout: shared/spec/checkpoint-layouts/higherhrnet-w48-humanart.json (MMPose v0.29.0, mmcv 1.7.0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ldm.pose.keypoints import NUM_KEYPOINTS

logger = logging.getLogger(__name__)

__all__ = [
    "AEHigherResolutionHead",
    "HIGHERHRNET_PRESETS",
    "HRNet",
    "HigherHRNet",
    "HigherHRNetConfig",
    "HigherHRNetOutput",
    "StageConfig",
]


# ---------------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class StageConfig:
    """One HRNet stage: ``num_modules`` HighResolutionModules with one branch per entry of ``num_channels``.

    Args:
        num_modules: how many multi-resolution modules (branches + fusion) are stacked.
        num_blocks: BasicBlocks per branch, one entry per branch.
        num_channels: channels per branch, highest resolution first; branch b runs at 1/(4 * 2**b).
    """

    num_modules: int
    num_blocks: tuple[int, ...]
    num_channels: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.num_modules < 1:
            raise ValueError(f"StageConfig.num_modules must be >= 1; got {self.num_modules}.")
        if len(self.num_blocks) != len(self.num_channels) or not self.num_blocks:
            raise ValueError(
                f"StageConfig needs one num_blocks and one num_channels entry per branch; got num_blocks="
                f"{self.num_blocks} and num_channels={self.num_channels}."
            )
        if min(self.num_blocks) < 1 or min(self.num_channels) < 1:
            raise ValueError(f"StageConfig blocks and channels must be positive; got {self}.")

    @property
    def num_branches(self) -> int:
        """Number of parallel resolutions in this stage."""
        return len(self.num_channels)


@dataclass(frozen=True)
class HigherHRNetConfig:
    """Architecture of HigherHRNet (HRNet backbone + associative-embedding higher-resolution head).

    Args:
        stem_channels: width of the two stride-2 stem convolutions (64 in every published HRNet).
        stage1_channels: bottleneck width of layer1; its output has ``4 * stage1_channels`` channels.
        stage1_blocks: number of Bottlenecks in layer1.
        stage2: 2-branch stage. stage3: 3-branch stage. stage4: 4-branch stage whose last module fuses
            everything into the highest-resolution branch only (MMPose ``multiscale_output=False``).
        num_joints: keypoints K; the 1/4 output has K heatmaps + K tag maps (one tag per joint).
        head_channels: width of the head's deconvolution and BasicBlocks (the backbone width in W48).
        head_num_blocks: BasicBlocks after the deconvolution.
    """

    stem_channels: int = 64
    stage1_channels: int = 64
    stage1_blocks: int = 4
    stage2: StageConfig = field(default_factory=lambda: StageConfig(1, (4, 4), (48, 96)))
    stage3: StageConfig = field(default_factory=lambda: StageConfig(4, (4, 4, 4), (48, 96, 192)))
    stage4: StageConfig = field(default_factory=lambda: StageConfig(3, (4, 4, 4, 4), (48, 96, 192, 384)))
    num_joints: int = NUM_KEYPOINTS
    head_channels: int = 48
    head_num_blocks: int = 4

    def __post_init__(self) -> None:
        stages = (("stage2", self.stage2, 2), ("stage3", self.stage3, 3), ("stage4", self.stage4, 4))
        for name, stage, branches in stages:
            if stage.num_branches != branches:
                raise ValueError(
                    f"HigherHRNetConfig.{name} must have {branches} branches; got {stage.num_branches} "
                    f"(num_channels={stage.num_channels})."
                )
        for prev, cur, name in ((self.stage2, self.stage3, "stage3"), (self.stage3, self.stage4, "stage4")):
            if cur.num_channels[: prev.num_branches] != prev.num_channels:
                raise ValueError(
                    f"HigherHRNetConfig.{name} must keep the previous stage's branch widths {prev.num_channels} "
                    f"and add one branch; got {cur.num_channels}."
                )
        if min(self.stem_channels, self.stage1_channels, self.stage1_blocks, self.num_joints) < 1:
            raise ValueError(f"HigherHRNetConfig sizes must be positive; got {self}.")
        if self.head_channels < 1 or self.head_num_blocks < 0:
            raise ValueError(
                f"HigherHRNetConfig.head_channels must be >= 1 and head_num_blocks >= 0; got "
                f"{self.head_channels}, {self.head_num_blocks}."
            )


HIGHERHRNET_PRESETS: dict[str, HigherHRNetConfig] = {
    # The released higherhrnet_w48_*_512x512_udp.pth (63,827,139 learnable parameters).
    "w48": HigherHRNetConfig(),
    # For tests: same topology (every key family present), ~0.33 M parameters.
    "tiny": HigherHRNetConfig(
        stem_channels=16,
        stage1_channels=8,
        stage1_blocks=1,
        stage2=StageConfig(1, (1, 1), (8, 16)),
        stage3=StageConfig(1, (1, 1, 1), (8, 16, 32)),
        stage4=StageConfig(2, (1, 1, 1, 1), (8, 16, 32, 64)),
        head_channels=8,
        head_num_blocks=1,
    ),
}


# ---------------------------------------------------------------------------------------------------------------------
# Building blocks


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """Conv (no bias) + BatchNorm, registered as ``0`` and ``1`` (the checkpoint's naming)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity shortcut (ResNet basic block, expansion 1).

    Args:
        channels: input and output channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(channels, channels)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + x)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck (expansion 4) with an optional projection shortcut ``downsample``.

    Args:
        in_channels: input channels.
        planes: bottleneck width; the output has ``4 * planes`` channels.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = _conv_bn(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, 4 * planes, H, W)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + identity)


def _downsample_path(in_channels: int, out_channels: int, steps: int) -> nn.Sequential:
    """``steps`` stride-2 3x3 conv-BN(-ReLU) layers; only the last changes the width and has no ReLU."""
    layers = []
    for step in range(steps):
        last = step == steps - 1
        conv_bn = _conv_bn(in_channels, out_channels if last else in_channels, 3, stride=2)
        layers.append(conv_bn if last else nn.Sequential(*conv_bn, nn.ReLU(inplace=True)))
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks followed by all-to-all multi-resolution fusion.

    Fusion into branch i sums, for every branch j: the identity (j == i), a 1x1 conv-BN + nearest upsampling by
    2**(j-i) (j > i), or i-j stride-2 3x3 convs (j < i); then ReLU.

    Args:
        num_blocks: BasicBlocks per branch.
        channels: width per branch (highest resolution first).
        multiscale_output: fuse into every branch (True) or only into the highest-resolution one (False).
    """

    def __init__(self, num_blocks: tuple[int, ...], channels: tuple[int, ...], *, multiscale_output: bool) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(c) for _ in range(n))) for n, c in zip(num_blocks, channels)
        )
        num_branches = len(channels)
        num_outputs = num_branches if multiscale_output else 1
        self.fuse_layers: nn.ModuleList | None = None
        if num_branches > 1:
            self.fuse_layers = nn.ModuleList()
            for i in range(num_outputs):
                row = nn.ModuleList()
                for j in range(num_branches):
                    if j > i:
                        upsample = nn.Upsample(scale_factor=2 ** (j - i), mode="nearest")
                        row.append(nn.Sequential(*_conv_bn(channels[j], channels[i], 1), upsample))
                    elif j < i:
                        row.append(_downsample_path(channels[j], channels[i], i - j))
                    else:
                        row.append(None)
                self.fuse_layers.append(row)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Branch b input/output: (B, C_b, H / 2**b, W / 2**b); returns 1 or ``len(xs)`` fused maps."""
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        fused = []
        for row in self.fuse_layers:
            # Sum in branch order (j = 0, 1, ...) like the reference, so float rounding matches it.
            y = xs[0] if row[0] is None else row[0](xs[0])
            for j in range(1, len(xs)):
                y = y + (xs[j] if row[j] is None else row[j](xs[j]))
            fused.append(F.relu(y))
        return fused


class HRNet(nn.Module):
    """HRNet backbone: stride-4 stem, a Bottleneck stage, then stages with 2, 3 and 4 parallel resolutions.

    Args:
        config: architecture; see :class:`HigherHRNetConfig`.
    """

    def __init__(self, config: HigherHRNetConfig) -> None:
        super().__init__()
        c = config
        self.conv1 = nn.Conv2d(3, c.stem_channels, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c.stem_channels)
        self.conv2 = nn.Conv2d(c.stem_channels, c.stem_channels, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c.stem_channels)
        layer1 = [Bottleneck(c.stem_channels, c.stage1_channels)]
        layer1 += [Bottleneck(c.stage1_channels * 4, c.stage1_channels) for _ in range(c.stage1_blocks - 1)]
        self.layer1 = nn.Sequential(*layer1)

        self.transition1 = self._transition((c.stage1_channels * 4,), c.stage2.num_channels)
        self.stage2 = self._stage(c.stage2, multiscale_output=True)
        self.transition2 = self._transition(c.stage2.num_channels, c.stage3.num_channels)
        self.stage3 = self._stage(c.stage3, multiscale_output=True)
        self.transition3 = self._transition(c.stage3.num_channels, c.stage4.num_channels)
        self.stage4 = self._stage(c.stage4, multiscale_output=False)

    @staticmethod
    def _transition(prev: tuple[int, ...], cur: tuple[int, ...]) -> nn.ModuleList:
        """Adapt existing branches whose width changes (3x3 conv) and spawn the new lowest-resolution branch."""
        layers = nn.ModuleList()
        for i, out_channels in enumerate(cur):
            if i < len(prev):
                if prev[i] == out_channels:
                    layers.append(None)
                else:
                    layers.append(nn.Sequential(*_conv_bn(prev[i], out_channels, 3), nn.ReLU(inplace=True)))
            else:
                # Strided convs from the lowest existing resolution; only the last one changes the width.
                steps = []
                for k in range(i + 1 - len(prev)):
                    width = out_channels if k == i - len(prev) else prev[-1]
                    steps.append(nn.Sequential(*_conv_bn(prev[-1], width, 3, stride=2), nn.ReLU(inplace=True)))
                layers.append(nn.Sequential(*steps))
        return layers

    @staticmethod
    def _stage(stage: StageConfig, *, multiscale_output: bool) -> nn.Sequential:
        modules = []
        for m in range(stage.num_modules):
            # Only the stage's last module may collapse to a single output (MMPose's multiscale_output).
            multi = multiscale_output or m < stage.num_modules - 1
            modules.append(HighResolutionModule(stage.num_blocks, stage.num_channels, multiscale_output=multi))
        return nn.Sequential(*modules)

    @staticmethod
    def _apply_transition(transition: nn.ModuleList, ys: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(transition):
            source = ys[i] if i < len(ys) else ys[-1]  # a new branch grows from the lowest resolution
            out.append(source if layer is None else layer(source))
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Compute the fused highest-resolution feature.

        Args:
            images: (B, 3, H, W) normalised images, H and W multiples of 32.

        Returns:
            (B, C0, H/4, W/4) feature, C0 = ``stage4.num_channels[0]``.
        """
        x = F.relu(self.bn1(self.conv1(images)))  # (B, 64, H/2, W/2)
        x = F.relu(self.bn2(self.conv2(x)))  # (B, 64, H/4, W/4)
        x = self.layer1(x)  # (B, 256, H/4, W/4)
        ys = self.stage2(self._apply_transition(self.transition1, [x]))
        ys = self.stage3(self._apply_transition(self.transition2, ys))
        ys = self.stage4(self._apply_transition(self.transition3, ys))
        return ys[0]


# ---------------------------------------------------------------------------------------------------------------------
# Head and full network


class HigherHRNetOutput(NamedTuple):
    """Raw network outputs (a plain 2-tuple, so ``quarter, half = net(x)`` works).

    Attributes:
        quarter: (B, 2K, H/4, W/4): K heatmaps, then K associative-embedding tag maps (one per joint).
        half: (B, K, H/2, W/2) heatmaps.
    """

    quarter: torch.Tensor
    half: torch.Tensor


class AEHigherResolutionHead(nn.Module):
    """Associative-embedding head with one higher-resolution (deconvolution) stage.

    ``final_layers.0`` predicts heatmaps + tags at 1/4; the feature concatenated with that prediction is upsampled
    by a 4x4 stride-2 transposed conv (+BN+ReLU) and refined by BasicBlocks; ``final_layers.1`` predicts heatmaps
    at 1/2.

    Args:
        in_channels: backbone feature width.
        num_joints: K.
        channels: deconvolution / BasicBlock width.
        num_blocks: BasicBlocks after the deconvolution.
    """

    def __init__(self, in_channels: int, num_joints: int, *, channels: int, num_blocks: int) -> None:
        super().__init__()
        self.num_joints = num_joints
        self.final_layers = nn.ModuleList(
            [nn.Conv2d(in_channels, 2 * num_joints, 1), nn.Conv2d(channels, num_joints, 1)]
        )
        deconv = nn.ConvTranspose2d(in_channels + 2 * num_joints, channels, 4, stride=2, padding=1, bias=False)
        stage = [nn.Sequential(deconv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))]
        stage += [nn.Sequential(BasicBlock(channels)) for _ in range(num_blocks)]
        self.deconv_layers = nn.ModuleList([nn.Sequential(*stage)])

    def forward(self, feature: torch.Tensor) -> HigherHRNetOutput:
        """(B, C, H/4, W/4) feature -> :class:`HigherHRNetOutput`."""
        quarter = self.final_layers[0](feature)  # (B, 2K, H/4, W/4)
        x = self.deconv_layers[0](torch.cat([feature, quarter], dim=1))  # (B, C', H/2, W/2)
        return HigherHRNetOutput(quarter, self.final_layers[1](x))


class HigherHRNet(nn.Module):
    """Bottom-up pose network: :class:`HRNet` (``backbone``) + :class:`AEHigherResolutionHead` (``keypoint_head``).

    Built on CPU in float32 with MMPose's initialisation (conv weights N(0, 0.001), BN weight 1 / bias 0); real
    use loads a checkpoint through :meth:`ldm.pose.estimator.PoseEstimator.from_checkpoint`.

    Args:
        config: architecture; see :data:`HIGHERHRNET_PRESETS`.
    """

    def __init__(self, config: HigherHRNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or HigherHRNetConfig()
        self.backbone = HRNet(self.config)
        self.keypoint_head = AEHigherResolutionHead(
            self.config.stage4.num_channels[0],
            self.config.num_joints,
            channels=self.config.head_channels,
            num_blocks=self.config.head_num_blocks,
        )
        self.init_weights()

    def init_weights(self, std: float = 0.001) -> None:
        """Re-initialise: (transposed) conv weights ~ N(0, std), conv biases 0, BatchNorm affine (1, 0)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> HigherHRNetOutput:
        """Run backbone and head.

        Args:
            images: (B, 3, H, W) images (ImageNet-normalised for detection), H and W multiples of 32.

        Returns:
            :class:`HigherHRNetOutput` ``(quarter (B, 2K, H/4, W/4), half (B, K, H/2, W/2))``.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"HigherHRNet expects images of shape (B, 3, H, W); got {tuple(images.shape)}.")
        height, width = images.shape[-2:]
        if height % 32 or width % 32:
            raise ValueError(
                f"HigherHRNet needs H and W to be multiples of 32 so that its four resolutions align; got "
                f"{height}x{width}. Resize or pad the images (detection resizes to multiples of 64)."
            )
        return self.keypoint_head(self.backbone(images))
