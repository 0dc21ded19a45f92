"""CPU speed of the UNet (issue #9): prepacked oneDNN / MKL weights, channels-last transformer output, bf16 GroupNorm.

Equality with the plain path in fp32 and bf16 autocast, unchanged state-dict keys, cache invalidation when the
weights change, and exact fallback to `nn.Conv2d` when autograd is on. Tiny model, CPU.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from ldm.config import load_config
from ldm.inference.fast_path import (
    FastPathOptions,
    PrepackedConv2d,
    PrepackedLinear,
    apply_fast_path,
    prepack_weights,
)
from ldm.inference.loading import build_model
from ldm.models.attention import SpatialTransformer, group_norm

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN (mkldnn)")

CONFIG = "configs/tiny/humansd-tiny.yaml"


def _build():
    torch.manual_seed(0)
    model = build_model(load_config(CONFIG)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)  # zero-initialised layers must not hide differences
    return model


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 8, 16, 24, generator=g), torch.tensor([3, 901]), torch.randn(2, 77, 32, generator=g)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def test_prepacked_unet_equals_plain_and_keeps_keys():
    model = _build()
    unet = model.unet
    x, t, ctx = _inputs()
    keys = {k: v.shape for k, v in unet.state_dict().items()}
    with torch.no_grad():
        plain = unet(x, t, ctx)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain_bf16 = unet(x, t, ctx)
        apply_fast_path(model, FastPathOptions(prepack_weights=True))
        assert all(type(m) is PrepackedConv2d for m in unet.modules() if isinstance(m, nn.Conv2d))
        assert all(type(m) is PrepackedLinear for m in unet.modules() if isinstance(m, nn.Linear))
        assert {k: v.shape for k, v in unet.state_dict().items()} == keys
        fast = unet(x, t, ctx)
        fast_again = unet(x, t, ctx)  # from the cache
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast_bf16 = unet(x, t, ctx)
    assert fast.dtype == torch.float32 and fast_bf16.dtype == torch.bfloat16
    assert _max_diff(plain, fast) <= 1e-5
    assert torch.equal(fast, fast_again)
    # bf16 keeps 8 mantissa bits; the packed kernel rounds in a different order than the plain one.
    assert _max_diff(plain_bf16, fast_bf16) <= 0.02 * plain.abs().max().item()


def test_prepacked_conv_follows_weight_updates_and_shapes():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    packed = copy.deepcopy(conv)
    assert prepack_weights(packed) == 1
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        assert _max_diff(conv(x), packed(x)) <= 1e-5
        for m in (conv, packed):
            m.weight.mul_(-2.0)  # in-place update (optimizer step, load_state_dict) must invalidate the cache
        assert _max_diff(conv(x), packed(x)) <= 1e-5
        y = torch.randn(1, 8, 7, 9)  # another input shape repacks
        assert _max_diff(conv(y), packed(y)) <= 1e-5
        clone = copy.deepcopy(packed)  # the opaque packed tensor is dropped, not copied
        buffer = io.BytesIO()
        torch.save(packed, buffer)
        assert clone._packed is None and _max_diff(conv(y), clone(y)) <= 1e-5


def test_prepacked_linear_follows_weight_updates():
    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    packed = copy.deepcopy(linear)
    assert prepack_weights(packed) == 1
    x = torch.randn(2, 5, 16)
    bf16 = torch.autocast("cpu", dtype=torch.bfloat16)
    with torch.no_grad():
        with bf16:
            assert torch.equal(linear(x), packed(x))  # fp32 -> bf16 weights, one matmul: same rounding
        for m in (linear, packed):
            m.weight.mul_(-2.0)  # outside autocast: autocast caches its weight casts for the whole region
        with bf16:
            assert torch.equal(linear(x), packed(x))
        assert _max_diff(linear(x), packed(x)) <= 1e-5  # fp32: MKL's packed sgemm
        assert _max_diff(linear(x[0]), packed(x[0])) <= 1e-5  # another shape repacks


def test_prepacked_conv_is_plain_conv_under_autograd():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, padding=1)
    packed = copy.deepcopy(conv)
    prepack_weights(packed)
    x = torch.randn(1, 4, 6, 6)
    out = packed(x)
    assert packed._packed is None  # grad enabled: the plain nn.Conv2d path, nothing cached
    out.sum().backward()
    conv(x).sum().backward()
    assert torch.equal(packed.weight.grad, conv.weight.grad)


@pytest.mark.parametrize("channels_last", [False, True])
def test_spatial_transformer_keeps_input_memory_format(channels_last):
    torch.manual_seed(0)
    st = SpatialTransformer(64, 2, 32, context_dim=16, use_linear=True).eval()
    x = torch.randn(2, 64, 4, 6)
    ctx = torch.randn(2, 5, 16)
    with torch.no_grad():
        ref = st(x, ctx)
        y = st(x.contiguous(memory_format=torch.channels_last) if channels_last else x, ctx)
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert torch.equal(ref, y)


def test_prepack_and_compile_are_exclusive():
    with pytest.raises(ValueError, match="freezing"):
        FastPathOptions(prepack_weights=True, compile_unet=True)


def test_group_norm32_bf16_on_cpu_matches_float32_upcast():
    """The native bf16 CPU kernel (no explicit upcast) rounds like normalising in float32 and casting back."""
    torch.manual_seed(0)
    norm = group_norm(320)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
        x = (torch.randn(2, 320, 16, 16) * 3 + 1).bfloat16()
        out = norm(x)
        upcast = nn.GroupNorm.forward(norm, x.float()).bfloat16()
    assert out.dtype == torch.bfloat16
    # bf16 has 8 mantissa bits: at most one rounding step (2 ** -8 relative) apart, and almost always equal.
    assert ((out.float() - upcast.float()).abs() <= upcast.float().abs() * 2**-7 + 1e-6).all()
    assert (out != upcast).float().mean() < 1e-3
