"""The KL-regularised autoencoder of Stable Diffusion (kl-f8), inference and frozen use only.

Parameter names follow the original `ldm.modules.diffusionmodules.model` Encoder/Decoder so
`first_stage_model.*` keys of SD checkpoints load key-for-key.

References:
    Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022, §3.
    Kingma & Welling, "Auto-Encoding Variational Bayes", 2014 (diagonal Gaussian posterior).
    Stability-AI/stablediffusion (cf8f7b6), ldm/models/autoencoder.py, ldm/modules/diffusionmodules/model.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class VAEResBlock(nn.Module):
    """Residual block without time conditioning (`norm1/conv1/norm2/conv2/nin_shortcut`)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class VAEAttention(nn.Module):
    """Single-head self-attention over pixels with 1x1-conv projections (`q/k/v/proj_out`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        y = self.norm(x)
        q, k, v = (rearrange(t(y), "b c h w -> b 1 (h w) c") for t in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(rearrange(out, "b 1 (h w) c -> b c h w", h=h, w=w))


class _Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric padding, as the original


class _Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = VAEResBlock(channels, channels)
        self.attn_1 = VAEAttention(channels)
        self.block_2 = VAEResBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """Image (B, 3, H, W) in [-1, 1] -> moments (B, 2*z, H/f, W/f) with f = 2 ** (len(ch_mult) - 1)."""

    def __init__(self, *, ch: int, ch_mult: Sequence[int], num_res_blocks: int, in_channels: int, z_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        block_in = ch
        for level, mult in enumerate(ch_mult):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(num_res_blocks):
                stage.block.append(VAEResBlock(block_in, ch * mult))
                block_in = ch * mult
            stage.attn = nn.ModuleList()
            if level != len(ch_mult) - 1:
                stage.downsample = _Downsample(block_in)
            self.down.append(stage)
        self.mid = _Mid(block_in)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent (B, z, h, w) -> image (B, 3, h*f, w*f), roughly in [-1, 1]."""

    def __init__(self, *, ch: int, ch_mult: Sequence[int], num_res_blocks: int, out_ch: int, z_channels: int):
        super().__init__()
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = _Mid(block_in)
        up = []
        for level in reversed(range(len(ch_mult))):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                stage.block.append(VAEResBlock(block_in, ch * ch_mult[level]))
                block_in = ch * ch_mult[level]
            stage.attn = nn.ModuleList()
            if level != 0:
                stage.upsample = _Upsample(block_in)
            up.insert(0, stage)  # keep the original indexing: up[0] is the full-resolution stage
        self.up = nn.ModuleList(up)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class DiagonalGaussianDistribution:
    """Posterior q(z|x) = N(mean, diag(exp(logvar))), logvar clamped to [-30, 20] as the original.

    Args:
        moments: (B, 2*z, h, w) encoder output, mean then logvar along channels.
    """

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised sample mean + std * N(0, I), randomness from `generator`."""
        # Noise is drawn on the generator's device so a CPU generator gives the same sample on any device.
        device = generator.device if generator is not None else self.mean.device
        noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=torch.float32)
        return self.mean + self.std * noise.to(self.mean.device, self.mean.dtype)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """(B,) KL divergence to N(0, I), summed over latent elements (as the original `kl()`)."""
        var = torch.exp(self.logvar)
        return 0.5 * torch.sum(self.mean.pow(2) + var - 1.0 - self.logvar, dim=[1, 2, 3])


class AutoencoderKL(nn.Module):
    """KL autoencoder (frozen in this project: SD's VAE is never trained by HumanSD).

    Args:
        embed_dim: latent channels (4).
        ddconfig: the original `ddconfig` mapping: double_z, z_channels, resolution, in_channels, out_ch, ch,
            ch_mult, num_res_blocks, attn_resolutions (must be empty, as kl-f8), dropout (0).
    """

    def __init__(self, *, embed_dim: int, ddconfig: dict[str, Any]):
        super().__init__()
        cfg = dict(ddconfig)
        known = {"double_z", "z_channels", "resolution", "in_channels", "out_ch", "ch", "ch_mult", "num_res_blocks"}
        known |= {"attn_resolutions", "dropout"}
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"AutoencoderKL.ddconfig: unknown keys {sorted(unknown)}; valid keys: {sorted(known)}.")
        if list(cfg.get("attn_resolutions", [])) or not cfg.get("double_z", True) or cfg.get("dropout", 0.0):
            raise ValueError(
                "AutoencoderKL supports the SD kl-f8 layout only: attn_resolutions [], double_z, dropout 0."
            )
        z = cfg["z_channels"]
        common = {"ch": cfg["ch"], "ch_mult": list(cfg["ch_mult"]), "num_res_blocks": cfg["num_res_blocks"]}
        self.encoder = Encoder(in_channels=cfg["in_channels"], z_channels=z, **common)
        self.decoder = Decoder(out_ch=cfg["out_ch"], z_channels=z, **common)
        self.quant_conv = nn.Conv2d(2 * z, 2 * embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z, 1)
        self.embed_dim = embed_dim
        self.ddconfig = cfg
        self.downsample_factor = 2 ** (len(cfg["ch_mult"]) - 1)

    def encode(self, x: torch.Tensor) -> DiagonalGaussianDistribution:
        """x: (B, 3, H, W) in [-1, 1], H and W multiples of the downsample factor."""
        return DiagonalGaussianDistribution(self.encode_moments(x))

    def encode_moments(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior's raw moments (B, 2*embed_dim, H/f, W/f), mean then logvar (what latent caches store)."""
        f = self.downsample_factor
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"Image size {tuple(x.shape[-2:])} must be a multiple of {f} for the VAE.")
        return self.quant_conv(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, embed_dim, h, w) unscaled latents. Returns (B, 3, h*f, w*f), roughly [-1, 1]."""
        return self.decoder(self.post_quant_conv(z))

    def decode_sliced(self, z: torch.Tensor, *, slice_size: int = 1) -> torch.Tensor:
        """Decode a few latents at a time to bound peak memory (same result as `decode`)."""
        return torch.cat([self.decode(chunk) for chunk in z.split(slice_size)])

    def decode_tiled(self, z: torch.Tensor, *, tile: int = 64, overlap: int = 16) -> torch.Tensor:
        """Decode overlapping latent tiles and blend them linearly, to bound peak memory at large sizes.

        Each tile is decoded on its own, so GroupNorm statistics and the mid-block attention see one tile,
        not the whole latent (as diffusers' tiled VAE): the result is close to, not bit-equal with, `decode`
        when there is more than one tile, and equal when the latent fits in one tile.

        Args:
            z: (B, embed_dim, h, w) unscaled latents, any h and w (they need not be multiples of the tile).
            tile: tile side in latent pixels.
            overlap: latent pixels shared by neighbouring tiles (blended with linear ramps), < tile.

        Returns:
            (B, 3, h*f, w*f), as `decode`.
        """
        return tiled_map(self.decode, z, tile=tile, overlap=overlap, scale=self.downsample_factor)


def _tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of side `tile` covering [0, size), the last one flush with the end."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def _ramp(length: int, overlap: int, *, left: bool, right: bool) -> torch.Tensor:
    """1-D blending weights at the edges shared with a neighbour: over `overlap` samples, 0 on the outer quarter
    (where a tile's own border effects live), a linear ramp on the middle half, 1 inside."""
    w = torch.ones(length)
    margin = overlap // 4
    n = overlap - 2 * margin
    if n > 0:
        ramp = torch.cat([torch.zeros(margin), (torch.arange(n) + 0.5) / n])
        if left:
            w[: margin + n] = ramp
        if right:
            w[length - margin - n :] = ramp.flip(0)
    return w


def tiled_map(
    fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, *, tile: int, overlap: int, scale: int = 1
) -> torch.Tensor:
    """Apply `fn` ((B, C, th, tw) -> (B, C', th*scale, tw*scale)) on overlapping tiles of `z` and blend.

    Overlaps are blended with linear ramps (weight 0 on the outer quarter of each overlap, normalised per
    pixel), so a local `fn` whose receptive field is at most a quarter of the overlap gives the same result as
    `fn(z)`; any size works, the last tile of a row or column is shifted to end flush with the input.

    Args:
        fn: the per-tile function (e.g. `AutoencoderKL.decode`).
        z: (B, C, h, w) input.
        tile: tile side in input pixels.
        overlap: input pixels shared by neighbouring tiles, in [0, tile).
        scale: output pixels per input pixel.
    """
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"Need tile > 0 and 0 <= overlap < tile; got tile={tile}, overlap={overlap}.")
    h, w = z.shape[-2:]
    if h <= tile and w <= tile:
        return fn(z)
    rows, cols = _tile_starts(h, tile, tile - overlap), _tile_starts(w, tile, tile - overlap)
    out = weight = None
    for i, y in enumerate(rows):
        for j, x in enumerate(cols):
            part = fn(z[..., y : y + tile, x : x + tile])
            th, tw = part.shape[-2:]
            wy = _ramp(th, overlap * scale, left=i > 0, right=i < len(rows) - 1)
            wx = _ramp(tw, overlap * scale, left=j > 0, right=j < len(cols) - 1)
            mask = (wy[:, None] * wx[None, :]).to(part.device, torch.float32)
            if out is None:
                out = part.new_zeros((*part.shape[:-2], h * scale, w * scale), dtype=torch.float32)
                weight = out.new_zeros((h * scale, w * scale))
            ys, xs = slice(y * scale, y * scale + th), slice(x * scale, x * scale + tw)
            out[..., ys, xs] += part.float() * mask
            weight[ys, xs] += mask
    return (out / weight).to(part.dtype)
