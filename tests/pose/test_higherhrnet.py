"""HigherHRNet architecture: checkpoint layout parity, shapes, determinism, frozen eval mode, loading errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ldm.pose.estimator import PoseEstimator
from ldm.pose.higherhrnet import HIGHERHRNET_PRESETS, HigherHRNet, HigherHRNetConfig, StageConfig

# Copy of shared/spec/checkpoint-layouts/higherhrnet-w48-humanart.json (mmpose 0.29 + mmcv 1.7 state_dict dump).
MANIFEST = Path(__file__).parents[1] / "fixtures" / "checkpoint-layouts" / "higherhrnet-w48-humanart.json"
W48_PARAMS = 63_827_139


def tiny_net(seed: int = 0) -> HigherHRNet:
    torch.manual_seed(seed)
    net = HigherHRNet(HIGHERHRNET_PRESETS["tiny"])
    net.init_weights(std=0.1)
    return net.eval()


@pytest.fixture(scope="module")
def w48_meta() -> HigherHRNet:
    with torch.device("meta"):
        return HigherHRNet(HIGHERHRNET_PRESETS["w48"])


def test_w48_state_dict_equals_manifest(w48_meta):
    manifest = json.loads(MANIFEST.read_text())
    ours = {k: list(v.shape) for k, v in w48_meta.state_dict().items()}
    assert len(ours) == len(manifest) == 1810
    assert ours == manifest
    assert list(ours) == list(manifest)  # same order as mmpose's state_dict()


def test_w48_parameter_count(w48_meta):
    assert sum(p.numel() for p in w48_meta.parameters() if p.requires_grad) == W48_PARAMS
    assert sum(p.numel() for p in w48_meta.backbone.parameters()) == 63_594_912
    assert sum(p.numel() for p in w48_meta.keypoint_head.parameters()) == 232_227


def test_tiny_forward_shapes():
    quarter, half = tiny_net()(torch.rand(2, 3, 64, 96))
    assert quarter.shape == (2, 34, 16, 24)
    assert half.shape == (2, 17, 32, 48)


def test_seeded_determinism():
    a, b = tiny_net(seed=3), tiny_net(seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    out_a, out_b = a(x), b(x)
    assert torch.equal(out_a.quarter, out_b.quarter) and torch.equal(out_a.half, out_b.half)
    assert not torch.equal(tiny_net(seed=4)(x).half, out_a.half)


def test_input_size_and_config_validation():
    with pytest.raises(ValueError, match="multiples of 32"):
        tiny_net()(torch.rand(1, 3, 48, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny_net()(torch.rand(1, 4, 64, 64))
    with pytest.raises(ValueError, match="stage3 must have 3 branches"):
        HigherHRNetConfig(stage3=StageConfig(1, (1, 1), (48, 96)))
    with pytest.raises(ValueError, match="one num_blocks and one num_channels entry per branch"):
        StageConfig(1, (1,), (8, 16))


def test_eval_mode_lock():
    estimator = PoseEstimator(tiny_net().train())
    assert not estimator.training and not estimator.net.training
    parent = torch.nn.Sequential(estimator)
    parent.train()
    assert not estimator.training
    assert all(not m.training for m in estimator.net.modules())
    assert all(not p.requires_grad for p in estimator.parameters())
    x = torch.rand(1, 3, 64, 64)
    before = estimator.net.backbone.bn1.running_mean.clone()
    estimator.heatmaps(x)
    assert torch.equal(before, estimator.net.backbone.bn1.running_mean)


def test_load_without_num_batches_tracked(tmp_path):
    net = tiny_net(seed=5)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "no_counters.pth"
    torch.save({"state_dict": state}, path)
    loaded = PoseEstimator.from_checkpoint(path, config="tiny")
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(loaded.heatmaps(x), PoseEstimator(net).heatmaps(x))


def test_wrong_head_checkpoint_error(tmp_path):
    state = {k: v for k, v in tiny_net().state_dict().items() if not k.startswith("keypoint_head.")}
    state["keypoint_head.final_layer.weight"] = torch.zeros(17, 8, 1, 1)  # top-down heatmap head
    state["keypoint_head.final_layer.bias"] = torch.zeros(17)
    path = tmp_path / "topdown.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ValueError, match="top-down") as err:
        PoseEstimator.from_checkpoint(path, config="tiny")
    assert "expected keypoint_head.final_layers.0.weight" in str(err.value)
    assert "keypoint_head.final_layer.weight" in str(err.value)


def test_wrong_width_checkpoint_error(tmp_path):
    state = dict(tiny_net().state_dict())
    state["keypoint_head.final_layers.0.weight"] = torch.zeros(34, 32, 1, 1)
    path = tmp_path / "w32_like.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="backbone width 32 and 17 joints") as err:
        PoseEstimator.from_checkpoint(path, config="tiny")
    assert "checkpoint (34, 32, 1, 1) vs model (34, 8, 1, 1)" in str(err.value)


def test_missing_checkpoint_error(tmp_path):
    missing = tmp_path / "higherhrnet_w48_humanart_512x512_udp.pth"
    with pytest.raises(FileNotFoundError) as err:
        PoseEstimator.from_checkpoint(missing)
    message = str(err.value)
    assert str(missing) in message
    assert "humansd_data/checkpoints/" in message and "Google Drive" in message and "HumanSD README" in message


def test_init_weights_is_mmpose_style():
    net = HigherHRNet(HIGHERHRNET_PRESETS["tiny"])
    assert float(net.backbone.conv1.weight.detach().std()) == pytest.approx(0.001, rel=0.3)
    assert torch.equal(net.backbone.bn1.weight, torch.ones_like(net.backbone.bn1.weight))
    assert np.allclose(net.keypoint_head.final_layers[0].bias.detach().numpy(), 0)
