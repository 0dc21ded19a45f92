"""End-to-end sampling: seconds per image and peak resident memory, plain path vs fast-path options.

Every variant is a `PoseToImagePipeline` built in this one process from the same config and seed (random weights
unless ``--ckpt``), called with the same prompt, pose and seed. Calls alternate between variants (plain, fast, ...,
plain, fast, ...) so background load hits all alike; the median seconds per image of ``--iters`` calls and the
ratio plain / variant (> 1: faster than plain) are reported. Peak memory is the resident set size polled every
5 ms during the variant's calls (CPU), or `torch.cuda.max_memory_allocated` (CUDA): the process total and the
increase over the start of the call (all variants' models stay loaded, so the total includes all of them).
The first call of each variant is an untimed warm-up (it includes `torch.compile` for the "compile" variant).

Examples:
    python -m benchmarks sampling --iters 3 --threads 1                         # tiny model, 64 px
    python -m benchmarks sampling --full-size --size 512 --steps 20 --iters 2   # SD-2.1-size HumanSD, random
    python -m benchmarks sampling --full-size --device cuda --variants plain compile bf16 --threads 16
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, open_dict

from ldm.cli import HelpFormatter
from ldm.config import load_config
from ldm.inference.pipeline import PoseToImagePipeline

logger = logging.getLogger("sampling")

TINY_CONFIG = Path("configs/tiny/humansd-tiny.yaml")
FULL_CONFIG = Path("configs/humansd/humansd-inference.yaml")
# name -> (precision, pipeline fast-path keywords)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "plain": ("fp32", {}),
    "channels_last": ("fp32", {"channels_last": True}),
    "vae_slicing": ("fp32", {"vae_slicing": True}),
    "vae_tiling": ("fp32", {"vae_tiling": True}),
    "bf16": ("bf16", {}),
    "bf16_channels_last": ("bf16", {"channels_last": True}),
    "compile": ("fp32", {"compile_unet": True}),
    "bf16_weights": ("bf16", {"unet_dtype": "bf16"}),
    "bf16_weights_cuda_graphs": (
        "bf16",
        {"unet_dtype": "bf16", "compile_unet": True, "compile_mode": "reduce-overhead"},
    ),
    "bf16_weights_cuda_graphs_shared_cfg": (
        "bf16",
        {"unet_dtype": "bf16", "compile_unet": True, "compile_mode": "reduce-overhead", "share_cfg_input": True},
    ),
    "prepack": ("fp32", {"prepack_weights": True}),
    "bf16_prepack": ("bf16", {"prepack_weights": True}),
    "shared_cfg": ("fp32", {"share_cfg_input": True}),
    "prepack_shared_cfg": ("fp32", {"prepack_weights": True, "share_cfg_input": True}),
    "winograd": ("fp32", {"winograd": True}),
    "winograd_shared_cfg": ("fp32", {"winograd": True, "share_cfg_input": True}),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--config", type=Path, help=f"model config (default: {TINY_CONFIG}, or {FULL_CONFIG})")
    p.add_argument("--full-size", action="store_true", help=f"use {FULL_CONFIG} (SD-2.1-size HumanSD)")
    p.add_argument("--ckpt", type=Path, help="weights (default: random weights, timing only)")
    p.add_argument("--size", type=int, help="image side (default: the config's defaults.size)")
    p.add_argument("--steps", type=int, default=10, help="sampler steps per image")
    p.add_argument(
        "--scale",
        type=float,
        default=10.0,
        help="guidance scale (10: both CFG branches per step, as the original; 1: the conditional branch only)",
    )
    p.add_argument("--batch-size", type=int, default=1, help="images per call")
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["plain", "channels_last", "bf16"])
    p.add_argument("--iters", type=int, default=3, help="timed calls per variant")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (keep 1 on a shared machine)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    return p


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory during a `with` block: polled RSS (CPU) or the CUDA allocator's peak, minus the start."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0
        self.peak_total = 0
        self._stop = threading.Event()

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            rss = _rss_bytes()
            self.peak_total = max(self.peak_total, rss)
            self.peak = max(self.peak, rss - self.start)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.start = _rss_bytes()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak_total = torch.cuda.max_memory_allocated(self.device)
            self.peak = self.peak_total - self.start
        else:
            self._stop.set()
            self._thread.join()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _config(args: argparse.Namespace) -> DictConfig:
    """The model config; without ``--ckpt`` its ``checkpoint`` entry is dropped (random weights, timing only)."""
    config = load_config(args.config or (FULL_CONFIG if args.full_size else TINY_CONFIG))
    if args.ckpt is None:
        with open_dict(config):
            config.checkpoint = None
    return config


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    config = _config(args)
    device = torch.device(args.device)
    pipes = {}
    for name in args.variants:
        precision, options = VARIANTS[name]
        torch.manual_seed(0)  # same random weights for every variant
        pipes[name] = PoseToImagePipeline.from_config(
            config, args.ckpt, device=args.device, precision=precision, allow_random=args.ckpt is None, **options
        )
    size = args.size or pipes[args.variants[0]].default_size[0]
    call = {"num_inference_steps": args.steps, "guidance_scale": args.scale, "seed": 1, "height": size, "width": size}
    call["num_images"] = args.batch_size
    keypoints = np.array([[[0.5, 0.2, 1.0]] * 17]) * [size, size, 1]  # a degenerate pose: timing only
    times: dict[str, list[float]] = {name: [] for name in pipes}
    peaks: dict[str, int] = {}
    totals: dict[str, int] = {}
    images = {}
    for i in range(args.iters + 1):
        for name, pipe in pipes.items():
            with PeakMemory(device) as mem:
                _sync(device)
                start = time.perf_counter()
                images[name] = np.asarray(pipe("a person dancing", keypoints, **call).images[0], np.int16)
                _sync(device)
            if i == 0:
                logger.info("%s: warm-up call %.2f s", name, time.perf_counter() - start)
                continue
            times[name].append((time.perf_counter() - start) / args.batch_size)
            peaks[name] = max(peaks.get(name, 0), mem.peak)
            totals[name] = max(totals.get(name, 0), mem.peak_total)
    base = statistics.median(times[args.variants[0]])
    rows = []
    for name in pipes:
        med = statistics.median(times[name])
        diff = int(np.abs(images[name] - images[args.variants[0]]).max())
        rows.append(
            {
                "variant": name,
                "s_per_image": med,
                "ratio_vs_first": base / med,
                "peak_mem_mib": peaks[name] / 2**20,
                "peak_total_mib": totals[name] / 2**20,
                "max_pixel_diff_vs_first": diff,
                "all_s": times[name],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    first = args.variants[0]
    print(f"| variant | s/image | {first}/variant | peak +MiB | peak total MiB | max pixel diff vs {first} |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['s_per_image']:.3f} | {r['ratio_vs_first']:.2f} | {r['peak_mem_mib']:.0f} | "
            f"{r['peak_total_mib']:.0f} | "
            f"{r['max_pixel_diff_vs_first']} |"
        )
    if args.json:
        meta = {"argv": sys.argv, "threads": torch.get_num_threads(), "torch": torch.__version__}
        args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
