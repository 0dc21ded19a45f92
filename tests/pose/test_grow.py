"""Widening a trained HigherHRNet (ldm.pose.grow): same outputs at the start, trainable new channels, clear errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ldm.pose.grow import widen_pose_state_dict
from ldm.pose.higherhrnet import HIGHERHRNET_PRESETS, HigherHRNet, HigherHRNetConfig, StageConfig


def _scaled(config: HigherHRNetConfig, factor: int) -> HigherHRNetConfig:
    """Every width times ``factor`` (same stages, modules and blocks)."""

    def stage(s: StageConfig) -> StageConfig:
        return dataclasses.replace(s, num_channels=tuple(c * factor for c in s.num_channels))

    return dataclasses.replace(
        config,
        stem_channels=config.stem_channels * factor,
        stage1_channels=config.stage1_channels * factor,
        stage2=stage(config.stage2),
        stage3=stage(config.stage3),
        stage4=stage(config.stage4),
        head_channels=config.head_channels * factor,
    )


def _trained_looking(net: HigherHRNet) -> HigherHRNet:
    """Random weights of a trained scale and non-trivial BatchNorm statistics (MMPose's init is near zero)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            values = torch.randn(tensor.shape, generator=generator) * (0.2 if tensor.ndim == 4 else 0.5)
            tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
    return net


@pytest.fixture(scope="module")
def narrow() -> HigherHRNet:
    torch.manual_seed(0)
    return _trained_looking(HigherHRNet(HIGHERHRNET_PRESETS["tiny"])).eval()


def _widened(narrow: HigherHRNet, factor: int = 2) -> HigherHRNet:
    torch.manual_seed(1)
    wide = HigherHRNet(_scaled(narrow.config, factor))
    for module in wide.modules():  # a from-scratch init, as PoseNetModule(init="kaiming") gives the new channels
        if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            torch.nn.init.kaiming_normal_(module.weight)
    wide.load_state_dict(widen_pose_state_dict(narrow.state_dict(), wide))
    return wide


def test_widened_network_computes_the_same_outputs(narrow: HigherHRNet) -> None:
    wide = _widened(narrow).eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = narrow(images), wide(images)
    for w, g in zip(want, got):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    # The new channels are alive (they carry signal), only disconnected from the old ones.
    feature = wide.backbone(images)
    assert feature.shape[1] == 2 * narrow.backbone(images).shape[1]
    assert feature[:, narrow.config.stage4.num_channels[0] :].abs().sum() > 0


def test_training_reconnects_the_new_channels(narrow: HigherHRNet) -> None:
    wide = _widened(narrow).train()
    head = wide.keypoint_head.final_layers[0].weight
    old_in = narrow.keypoint_head.final_layers[0].weight.shape[1]
    assert torch.count_nonzero(head[:, old_in:]) == 0
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    quarter, half = wide(images)
    (quarter.square().mean() + half.square().mean()).backward()
    assert head.grad[:, old_in:].abs().sum() > 0  # the zero weights from the new channels get a gradient


def test_widening_errors(narrow: HigherHRNet) -> None:
    deeper = dataclasses.replace(narrow.config, head_num_blocks=2)
    with pytest.raises(ValueError, match="same layers in both networks"):
        widen_pose_state_dict(narrow.state_dict(), HigherHRNet(_scaled(deeper, 2)))
    wide = _widened(narrow)
    with pytest.raises(ValueError, match="cannot widen"):
        widen_pose_state_dict(wide.state_dict(), HigherHRNet(narrow.config))
