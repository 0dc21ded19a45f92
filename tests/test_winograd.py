"""Winograd 3x3 convolution (issue #9, `FastPathOptions.winograd`): equal to `F.conv2d` to fp32 rounding, the
module's fallbacks (autograd, bf16 autocast, small maps), cache invalidation, and the UNet / pipeline wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ldm.config import load_config
from ldm.inference.fast_path import FastPathOptions, PrepackedConv2d, apply_fast_path, prepack_weights
from ldm.inference.loading import build_model
from ldm.inference.pipeline import PoseToImagePipeline
from ldm.inference.winograd import (
    WinogradConv2d,
    use_winograd,
    winograd_conv2d,
    winograd_eligible,
    winograd_filter,
)

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN (mkldnn)")


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize(
    ("n", "c", "k", "h", "w"),
    [(2, 16, 24, 16, 16), (1, 8, 5, 13, 10), (3, 3, 7, 1, 1), (1, 12, 12, 5, 9)],
)
def test_winograd_conv2d_equals_direct_convolution(tile, n, c, k, h, w):
    g = torch.Generator().manual_seed(n * 100 + h)
    x, weight, bias = torch.randn(n, c, h, w, generator=g), torch.randn(k, c, 3, 3, generator=g), torch.randn(k)
    u = winograd_filter(weight, tile)
    assert u.shape == ((tile + 2) ** 2, c, k) and u.dtype == torch.float32
    with_bias = winograd_conv2d(x, u, bias, tile)
    without = winograd_conv2d(x, u, None, tile)
    assert with_bias.shape == (n, k, h, w) and with_bias.is_contiguous(memory_format=torch.channels_last)
    # float64 references; a direct fp32 convolution is ~2e-6 off them
    assert _rel_err(with_bias, F.conv2d(x.double(), weight.double(), bias.double(), padding=1)) <= 2e-5
    assert _rel_err(without, F.conv2d(x.double(), weight.double(), padding=1)) <= 2e-5


def test_winograd_rejects_bad_tiles_and_shapes():
    weight = torch.randn(4, 3, 3, 3)
    with pytest.raises(ValueError, match="output tile must be one of"):
        winograd_filter(weight, 3)
    with pytest.raises(ValueError, match=r"needs a \(K, C, 3, 3\) weight"):
        winograd_filter(torch.randn(4, 3, 5, 5))
    with pytest.raises(ValueError, match="does not fit 5 input channels"):
        winograd_conv2d(torch.randn(1, 5, 8, 8), winograd_filter(weight), None)


def test_eligibility_is_geometry():
    assert winograd_eligible(nn.Conv2d(4, 4, 3, padding=1))
    for conv in (
        nn.Conv2d(4, 4, 3, padding=1, stride=2),
        nn.Conv2d(4, 4, 1),
        nn.Conv2d(4, 4, 3, padding=0),
        nn.Conv2d(4, 4, 3, padding=1, groups=2),
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
    ):
        assert not winograd_eligible(conv)


def _module(channels: int = 64) -> tuple[nn.Conv2d, WinogradConv2d]:
    torch.manual_seed(0)
    plain = nn.Conv2d(channels, channels, 3, padding=1)
    fast = nn.Conv2d(channels, channels, 3, padding=1)
    fast.load_state_dict(plain.state_dict())
    assert use_winograd(fast) == 1 and type(fast) is WinogradConv2d
    return plain, fast


def test_module_uses_winograd_in_fp32_inference_and_follows_weight_updates(monkeypatch):
    plain, fast = _module()
    calls = []
    monkeypatch.setattr(
        "ldm.inference.winograd.winograd_conv2d",
        lambda *a, **k: calls.append(1) or winograd_conv2d(*a, **k),
    )
    x = torch.randn(2, 64, 16, 20)
    with torch.no_grad():
        assert _rel_err(fast(x), F.conv2d(x.double(), plain.weight.double(), plain.bias.double(), padding=1)) <= 2e-5
        assert len(calls) == 1
        for conv in (plain, fast):
            conv.weight.mul_(-0.5)  # an in-place update (optimizer step, load_state_dict): new transformed filter
        assert (fast(x) - plain(x)).abs().max().item() <= 1e-4
        assert len(calls) == 2
        fast(torch.randn(1, 64, 8, 8))  # below min_size: the prepacked oneDNN convolution
        fast.max_pixels = 16 * 16
        big = torch.randn(1, 64, 16, 20)  # above max_pixels: the same
        assert (fast(big) - plain(big)).abs().max().item() <= 1e-4
    assert len(calls) == 2


def test_module_falls_back_to_the_plain_paths():
    plain, fast = _module()
    x = torch.randn(2, 64, 16, 16, requires_grad=True)
    assert torch.equal(fast(x), plain(x))  # autograd: exactly nn.Conv2d
    packed = nn.Conv2d(64, 64, 3, padding=1)
    packed.load_state_dict(plain.state_dict())
    prepack_weights(packed)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # bf16: the prepacked path
        assert torch.equal(fast(x), packed(x))
    _, narrow = _module(channels=32)  # below min_channels: the prepacked path
    with torch.no_grad():
        packed32 = nn.Conv2d(32, 32, 3, padding=1)
        packed32.load_state_dict(narrow.state_dict())
        prepack_weights(packed32)
        y = torch.randn(1, 32, 16, 16)
        assert torch.equal(narrow(y), packed32(y))


def _build():
    torch.manual_seed(0)
    model = build_model(load_config("configs/tiny/humansd-tiny.yaml")).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def test_unet_with_winograd_equals_plain_and_keeps_keys():
    model = _build()
    unet = model.unet
    g = torch.Generator().manual_seed(1)
    x, t, ctx = torch.randn(2, 8, 16, 24, generator=g), torch.tensor([3, 901]), torch.randn(2, 77, 32, generator=g)
    keys = {k: v.shape for k, v in unet.state_dict().items()}
    with torch.no_grad():
        plain = unet(x, t, ctx)
        apply_fast_path(model, FastPathOptions(winograd=True))
        kinds = {type(m) for m in unet.modules() if isinstance(m, nn.Conv2d)}
        assert kinds == {WinogradConv2d, PrepackedConv2d}  # the strided downsampling convolutions stay packed
        assert {k: v.shape for k, v in unet.state_dict().items()} == keys
        use_winograd(unet, min_size=8, min_channels=1)  # the tiny UNet is below the defaults: run every layer so
        fast = unet(x, t, ctx)
    assert (plain - fast).abs().max().item() <= 1e-4


def test_winograd_option_is_exclusive_with_compile():
    with pytest.raises(ValueError, match="exclusive"):
        FastPathOptions(winograd=True, compile_unet=True)


def test_pipeline_winograd_gives_the_same_image():
    kwargs = {"num_inference_steps": 3, "seed": 7, "guidance_scale": 5.0}
    plain = PoseToImagePipeline(_build(), default_size=(128, 128), skeleton_width=2)
    fast = PoseToImagePipeline(_build(), default_size=(128, 128), skeleton_width=2, winograd=True)
    use_winograd(fast.model.unet, min_size=8, min_channels=1)
    assert fast.fast_path.enabled() == {"winograd": True}
    a = np.asarray(plain("a dancer", None, **kwargs).images[0], dtype=np.int16)
    b = np.asarray(fast("a dancer", None, **kwargs).images[0], dtype=np.int16)
    assert np.abs(a - b).max() <= 1
