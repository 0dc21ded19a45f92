"""Attention blocks of the Stable Diffusion UNet (spatial transformer with cross-attention).

Parameter names follow the original `ldm.modules.attention` so SD-1.x/2.x checkpoints load key-for-key.
All attention goes through `torch.nn.functional.scaled_dot_product_attention`, which picks flash /
memory-efficient kernels on GPU and a fused math kernel on CPU; `set_attention_backend("math")` switches to the
explicit reference softmax(q k^T / sqrt(d)) v (the plain path the fused kernels are tested against).

References:
    Vaswani et al., "Attention Is All You Need", 2017.
    Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022.
    Stability-AI/stablediffusion (cf8f7b6), ldm/modules/attention.py (key layout).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

ATTENTION_BACKENDS = ("auto", "math")
_backend = "auto"


def set_attention_backend(name: str) -> None:
    """Select how `CrossAttention` computes attention, process-wide.

    Args:
        name: "auto" (default): `F.scaled_dot_product_attention`, torch picks a fused kernel (flash /
            memory-efficient on GPU, flash on CPU); "math": the explicit reference
            softmax(q k^T / sqrt(d)) v, the plain path the fused kernels are checked against.
    """
    global _backend
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"Unknown attention backend {name!r}; choose one of {list(ATTENTION_BACKENDS)}.")
    _backend = name


def get_attention_backend() -> str:
    """The current attention backend ("auto" or "math")."""
    return _backend


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Context manager form of `set_attention_backend` (restores the previous backend on exit)."""
    previous = _backend
    set_attention_backend(name)
    try:
        yield
    finally:
        set_attention_backend(previous)


def tile_batch(t: torch.Tensor, n: int) -> torch.Tensor:
    """`t` (B, ...) repeated to n = k * B rows in `torch.cat` order (k whole copies); `t` itself if it has n rows.

    The shared-input form of classifier-free guidance: latents computed once for k conditionings (see
    `UNetModel.forward`) are tiled where the conditionings start to differ.
    """
    if t.shape[0] == n:
        return t
    if n % t.shape[0]:
        raise ValueError(f"Cannot tile a batch of {t.shape[0]} to {n} rows (not a multiple).")
    return torch.cat([t] * (n // t.shape[0]))  # keeps a channels-last layout (`Tensor.repeat` would not)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, H, N, D) x (B, H, M, D) x (B, H, M, D) -> (B, H, N, D), scale D ** -0.5, with the current backend."""
    if _backend == "math":
        weights = torch.softmax((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5, dim=-1)
        return weights.to(v.dtype) @ v
    return F.scaled_dot_product_attention(q, k, v)


def group_norm(channels: int, *, eps: float = 1e-5) -> nn.GroupNorm:
    """The 32-group GroupNorm used throughout SD (computed in float32, see `GroupNorm32`)."""
    return GroupNorm32(32, channels, eps=eps)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm that normalises in float32 and casts back, as the original does for fp16 stability.

    On CPU, bf16 inputs go straight to the kernel: it accumulates reduced-precision inputs in float32 and takes the
    float32 affine parameters as they are, so the result is the upcast one (measured: equal up to a few 1-ulp bf16
    roundings per million values) without the two full-tensor casts (~3% of a bf16 UNet call at 512 px).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and x.device.type == "cpu"):
            return super().forward(x)
        return super().forward(x.float()).type(x.dtype)


class CrossAttention(nn.Module):
    """Multi-head (cross-)attention; self-attention when `context` is None.

    Args:
        query_dim: channels of the query tokens.
        context_dim: channels of the context tokens (None = self-attention).
        heads: number of heads.
        dim_head: channels per head.
    """

    def __init__(self, query_dim: int, *, context_dim: int | None = None, heads: int = 8, dim_head: int = 64):
        super().__init__()
        inner = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, N, query_dim); context: (B, M, context_dim) or None. Returns (B, N, query_dim)."""
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (q, k, v))
        out = attention(q, k, v)  # scale = dim_head ** -0.5, as the original
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class GEGLU(nn.Module):
    """Gated GELU projection (Shazeer 2020): proj to 2x width, gelu-gate one half with the other."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU MLP with 4x expansion (`net.0.proj`, `net.2` in checkpoints)."""

    def __init__(self, dim: int, *, mult: int = 4):
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-norm block: self-attention, cross-attention on the text context, feed-forward."""

    def __init__(self, dim: int, heads: int, dim_head: int, *, context_dim: int, use_checkpoint: bool = False):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads=heads, dim_head=dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim=context_dim, heads=heads, dim_head=dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.use_checkpoint = use_checkpoint

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, context, use_reentrant=False)
        return self._forward(x, context)

    def _forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = tile_batch(x, context.shape[0])  # shared input: the branches part here (cross-attention)
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Transformer over the pixels of a feature map, conditioned on a token context.

    Args:
        channels: feature-map channels.
        heads: attention heads.
        dim_head: channels per head (heads * dim_head == channels in SD).
        depth: number of transformer blocks.
        context_dim: channels of the context tokens (768 for SD-1.x CLIP, 1024 for SD-2.x OpenCLIP).
        use_linear: Linear proj_in/proj_out (SD-2.x) instead of 1x1 convolutions (SD-1.x).
        use_checkpoint: gradient checkpointing of each block during training.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        dim_head: int,
        *,
        depth: int = 1,
        context_dim: int,
        use_linear: bool = False,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        inner = heads * dim_head
        self.use_linear = use_linear
        self.norm = group_norm(channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner) if use_linear else nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, dim_head, context_dim=context_dim, use_checkpoint=use_checkpoint)
            for _ in range(depth)
        )
        self.proj_out = nn.Linear(inner, channels) if use_linear else nn.Conv2d(inner, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W); context: (B, M, context_dim), or (k * B, M, context_dim) for an input shared by k
        conditionings (`UNetModel.forward`). Returns (B, C, H, W) (resp. k * B rows)."""
        _, _, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = rearrange(x, "b c h w -> b (h w) c")
        if self.use_linear:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context)
        if self.use_linear:
            x = self.proj_out(x)
        x = rearrange(x, "b (h w) c -> b c h w", h=h, w=w)
        if not self.use_linear:
            x = self.proj_out(x)
        # Output in the input's memory format: the rearranged view is channels-last in memory, and plain (NCHW)
        # convolutions fed such a view re-copy their weights on every call (measured: 1.5x slower full-size UNet on
        # CPU). A channels-last input (channels_last / prepacked fast path) stays channels-last: no copy at all.
        return (x + tile_batch(x_in, x.shape[0])).contiguous(memory_format=_memory_format(x_in))


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a (B, C, H, W) tensor stored NHWC (and not also NCHW-contiguous), else contiguous_format."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
