"""Winograd 3x3 convolution for CPU inference in fp32 (the `winograd` fast path).

A stride-1 3x3 convolution computes each m x m block of outputs from an (m + 2) x (m + 2) input tile. Winograd's
minimal filtering algorithm F(m x m, 3 x 3) does it in three steps: transform each input tile (V = B^T d B),
multiply elementwise with the transformed filter (U = G g G^T) and sum over input channels, which for all tiles
and channels is (m + 2)^2 independent matrix products, then transform back (Y = A^T M A). With m = 4 that is
36 multiplications per 16 outputs and channel pair instead of 144 (4x fewer), and the products are large GEMMs
(MKL) instead of a direct convolution. The transforms are a few additions per element, done here with strided
tensor views in channels-last layout; the filter transform is computed once per weight and cached.

Cost: the transformed filter is (m + 2)^2 / 9 times the weight (4x for m = 4). Accuracy: fp32 rounding error of
~6e-6 of the output's range for m = 4 (3e-7 for m = 2; a direct fp32 convolution ~2e-6).

References:
    A. Lavin, S. Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016 (F(2x2, 3x3), F(4x4, 3x3) and
    their B, G, A matrices).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ldm.inference.prepack import PrepackedConv2d, _packed_dtype

# (B^T, G, A^T) of F(m x m, 3 x 3) for the output tile sizes m (Lavin & Gray 2016, interpolation points 0, +-1,
# +-2 and infinity for m = 4).
WINOGRAD_MATRICES: dict[int, tuple[list[list[float]], list[list[float]], list[list[float]]]] = {
    2: (
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]],
    ),
    4: (
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
    ),
}


def _check_tile(tile: int) -> None:
    if tile not in WINOGRAD_MATRICES:
        raise ValueError(f"Winograd output tile must be one of {sorted(WINOGRAD_MATRICES)}; got {tile}.")


def winograd_filter(weight: torch.Tensor, tile: int = 4) -> torch.Tensor:
    """3x3 convolution weight (K, C, 3, 3) -> transformed filter U ((tile + 2)^2, C, K), in the weight's dtype.

    Computed in float64, so U carries no rounding beyond its final cast.
    """
    _check_tile(tile)
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"winograd_filter needs a (K, C, 3, 3) weight; got shape {tuple(weight.shape)}.")
    g = torch.tensor(WINOGRAD_MATRICES[tile][1], dtype=torch.float64, device=weight.device)
    u = torch.einsum("ai,kcij,bj->abck", g, weight.detach().double(), g)
    side = tile + 2
    return u.reshape(side * side, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def _combine(coeffs: Sequence[float], terms: Sequence[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """out = sum_k coeffs[k] * terms[k] over the non-zero coefficients, written into `out` (any strides)."""
    pairs = [(c, t) for c, t in zip(coeffs, terms, strict=True) if c != 0]
    (c0, t0), rest = pairs[0], pairs[1:]
    if c0 == 1 and rest:
        torch.add(t0, rest[0][1], alpha=rest[0][0], out=out)
        rest = rest[1:]
    else:
        torch.mul(t0, c0, out=out)
    for c, t in rest:
        out.add_(t, alpha=c)
    return out


def winograd_conv2d(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None, tile: int = 4) -> torch.Tensor:
    """`F.conv2d(x, w, bias, padding=1)` for a 3x3 weight w given as `u = winograd_filter(w, tile)`.

    `x` (N, C, H, W), any size (edge tiles are zero-padded and cropped). Returns (N, K, H, W) in channels-last
    memory format. Inference only (no autograd graph is meant to pass through the `out=` writes).
    """
    _check_tile(tile)
    bt, _, at = WINOGRAD_MATRICES[tile]
    side, m = tile + 2, tile
    n, c, h, w = x.shape
    k = u.shape[-1]
    if u.shape != (side * side, c, k):
        raise ValueError(f"Transformed filter of shape {tuple(u.shape)} does not fit {c} input channels, tile {tile}.")
    th, tw = -(-h // m), -(-w // m)
    xp = F.pad(x, (1, 1 + tw * m - w, 1, 1 + th * m - h)).permute(0, 2, 3, 1)  # N, H', W', C
    # input transform V = B^T d B: along rows (tiles overlap by 2), then along columns
    row_terms = [xp[:, i : i + m * th : m] for i in range(side)]
    rows = x.new_empty(side, n, th, tw * m + 2, c)
    for i in range(side):
        _combine(bt[i], row_terms, rows[i])
    v = x.new_empty(side, side, n, th, tw, c)
    for i in range(side):
        col_terms = [rows[i][:, :, j : j + m * tw : m] for j in range(side)]
        for j in range(side):
            _combine(bt[j], col_terms, v[i, j])
    # (tile + 2)^2 GEMMs over the input channels
    prod = torch.bmm(v.view(side * side, n * th * tw, c), u).view(side, side, n, th, tw, k)
    if bias is not None:
        prod[1, 1] += bias  # every row of A^T has a 1 in column 1: the bias reaches each output exactly once
    # output transform Y = A^T M A, written into the interleaved (N, th, m, tw, m, K) = NHWC output
    half = x.new_empty(m, side, n, th, tw, k)
    for i in range(m):
        _combine(at[i], list(prod), half[i])
    out = x.new_empty(n, th, m, tw, m, k)
    for i in range(m):
        for j in range(m):
            _combine(at[j], list(half[i]), out[:, :, i, :, j])
    out = out.view(n, th * m, tw * m, k)
    if (th * m, tw * m) != (h, w):
        out = out[:, :h, :w].contiguous()  # edge tiles padded: crop
    return out.permute(0, 3, 1, 2)


class WinogradConv2d(PrepackedConv2d):
    """A 3x3 stride-1 `nn.Conv2d` that, in no-grad CPU fp32 inference, runs `winograd_conv2d` with F(4x4, 3x3).

    Used where it is measured faster than oneDNN's direct convolution (`python -m benchmarks conv3x3`): feature
    maps of at least `min_size` pixels on each side and at most `max_pixels` pixels, with at least `min_channels`
    input and output channels. SD-2.1's UNet at 256-512 px: 0.40-0.57x of the prepacked convolution's time per
    layer from 16² to 64² maps; at 8² the transforms cost more than they save (1.08x), and so they do on large maps
    with few channels, where they stream from memory (an SD VAE decoder's 256 channels at 256²: 1.01x, 128 at
    512²: 1.7x). Elsewhere, under bf16 autocast and outside inference it is `PrepackedConv2d` (and so `nn.Conv2d`).
    The transformed filter is cached like the packed weight (one copy, 4x the weight's size). Parameters and
    state-dict keys are `nn.Conv2d`'s.
    """

    tile: int = 4
    min_size: int = 16
    max_pixels: int = 128 * 128
    min_channels: int = 64

    def _winograd_applies(self, x: torch.Tensor) -> bool:
        return (
            _packed_dtype(x, (torch.float32,)) is not None
            and x.dtype == torch.float32
            and x.dim() == 4
            and min(x.shape[-2:]) >= self.min_size
            and x.shape[-2] * x.shape[-1] <= self.max_pixels
            and min(self.in_channels, self.out_channels) >= self.min_channels
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._winograd_applies(x):
            return super().forward(x)
        u = self._packed_weight(
            None, torch.float32, lambda w: winograd_filter(w, self.tile), kind=f"winograd{self.tile}"
        )
        return winograd_conv2d(x, u, self.bias, self.tile)


def winograd_eligible(conv: torch.nn.Module) -> bool:
    """Whether a convolution module has the geometry `WinogradConv2d` computes (3x3, stride 1, padding 1, ...)."""
    return (
        isinstance(conv, torch.nn.Conv2d)
        and tuple(conv.kernel_size) == (3, 3)
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.padding) == (1, 1)
        and tuple(conv.dilation) == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


def use_winograd(
    module: torch.nn.Module, *, tile: int | None = None, min_size: int | None = None, min_channels: int | None = None
) -> int:
    """Turn every 3x3 stride-1 `nn.Conv2d` / `PrepackedConv2d` in `module` into `WinogradConv2d` (in place).

    As `prepack_weights`, only the classes change (parameters, state-dict keys and training are untouched); combine
    the two (`prepack_weights` first) to pack the other convolutions and the linear layers too. `tile`, `min_size`
    and `min_channels` override `WinogradConv2d`'s defaults for these modules (tile 2: F(2x2, 3x3), transformed
    filters 16/9 of the weights instead of 4x, fewer savings). Returns the number converted.
    """
    if tile is not None:
        _check_tile(tile)
    count = 0
    for m in module.modules():
        if type(m) in (torch.nn.Conv2d, PrepackedConv2d) and winograd_eligible(m):
            m.__class__ = WinogradConv2d
            m._packed = None
            if tile is not None:
                m.tile = tile
            if min_size is not None:
                m.min_size = min_size
            if min_channels is not None:
                m.min_channels = min_channels
            count += 1
    return count
