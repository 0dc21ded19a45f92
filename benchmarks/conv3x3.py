"""Seconds per 3x3 convolution layer on the CPU: oneDNN's direct convolution on a prepacked weight (the
`prepack_weights` path) vs Winograd F(2x2, 3x3) and F(4x4, 3x3) (`ldm.inference.winograd`), fp32, no grad.

The default shapes are the 3x3 stride-1 convolutions of SD-2.1's UNet at 512 px (64² latents: 320 channels at
64², 640 at 32², 1280 at 16² and 8²) and at 256 px (320 at 32², 640 at 16²), batch 2 (one CFG step). Every
variant's output is checked against a float64 convolution first (relative error to the output's range); calls
alternate between the variants; medians of ``--iters`` calls. This is what `WinogradConv2d`'s thresholds
(``min_size``, ``min_channels``) and its tile are chosen from.

Example:
    python -m benchmarks conv3x3 --threads 1
    python -m benchmarks conv3x3 --shapes 128x512 256x256 --batch 1      # e.g. an SD VAE decoder's layers
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ldm.cli import HelpFormatter
from ldm.inference.winograd import winograd_conv2d, winograd_filter

SD_SHAPES = ["320x64", "640x32", "1280x16", "1280x8", "320x32", "640x16"]


def _shape(text: str) -> tuple[int, int]:
    try:
        channels, side = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CHANNELSxSIDE, e.g. 320x64; got {text!r}") from None
    if channels < 1 or side < 1:
        raise argparse.ArgumentTypeError(f"channels and side must be >= 1; got {text!r}")
    return channels, side


def time_layer(channels: int, side: int, batch: int, iters: int) -> dict[str, Any]:
    """Median seconds and relative error of each variant for one (channels -> channels, side x side) layer."""
    gen = torch.Generator().manual_seed(channels * 1000 + side)
    x = torch.randn(batch, channels, side, side, generator=gen).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, channels, 3, 3, generator=gen) / (9 * channels) ** 0.5
    bias = torch.randn(channels, generator=gen)
    geometry = ([1, 1], [1, 1], [1, 1], 1)
    packed = torch.ops.mkldnn._reorder_convolution_weight(weight, *geometry, list(x.shape))
    filters = {tile: winograd_filter(weight, tile) for tile in (2, 4)}
    variants = {
        "onednn_prepacked": lambda: torch.ops.mkldnn._convolution_pointwise(x, packed, bias, *geometry, "none", [], ""),
        "winograd_f2": lambda: winograd_conv2d(x, filters[2], bias, 2),
        "winograd_f4": lambda: winograd_conv2d(x, filters[4], bias, 4),
    }
    row: dict[str, Any] = {"channels": channels, "side": side, "batch": batch}
    with torch.no_grad():
        ref = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
        for name, call in variants.items():
            row[f"{name}_rel_err"] = ((call().double() - ref).abs().max() / ref.abs().max()).item()
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(iters):
            for name, call in variants.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["onednn_prepacked"])
    for name, values in times.items():
        row[f"{name}_s"] = statistics.median(values)
        row[f"ratio_{name}"] = statistics.median(values) / base
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| channels | side | batch | oneDNN prepacked ms | F(2x2) ms | F(4x4) ms | F(2x2) / oneDNN | F(4x4) / oneDNN "
        "| rel. error oneDNN / F(2x2) / F(4x4) |",
        "|---" * 9 + "|",
    ]
    for r in rows:
        errs = " / ".join(f"{r[f'{n}_rel_err']:.1e}" for n in ("onednn_prepacked", "winograd_f2", "winograd_f4"))
        lines.append(
            f"| {r['channels']} | {r['side']}² | {r['batch']} | {r['onednn_prepacked_s'] * 1e3:.1f} "
            f"| {r['winograd_f2_s'] * 1e3:.1f} | {r['winograd_f4_s'] * 1e3:.1f} | {r['ratio_winograd_f2']:.2f} "
            f"| **{r['ratio_winograd_f4']:.2f}** | {errs} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--shapes", type=_shape, nargs="+", default=[_shape(s) for s in SD_SHAPES], help="CxSIDE")
    p.add_argument("--batch", type=int, default=2, help="batch (2: one CFG step)")
    p.add_argument("--iters", type=int, default=5, help="timed calls per variant (after one warm-up call)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = p.parse_args(argv)
    if args.batch < 1 or args.iters < 1:
        p.error(f"--batch and --iters must be >= 1; got {args.batch}, {args.iters}")
    if not torch.backends.mkldnn.is_available():
        print(
            "conv3x3: error: needs a torch build with oneDNN (torch.backends.mkldnn.is_available()).", file=sys.stderr
        )
        return 2
    torch.set_num_threads(args.threads)
    rows = [time_layer(c, s, args.batch, args.iters) for c, s in args.shapes]
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "torch": torch.__version__, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
