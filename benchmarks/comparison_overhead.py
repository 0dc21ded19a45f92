"""Cost of the pose baselines relative to plain Stable Diffusion 1.5: ControlNet / SD and T2I-Adapter / SD.

All three run in this one process on the same SD-1.x model (random weights: timing only, no checkpoint is read):

* per guided denoising step (classifier-free guidance, both branches in one batch of 2 x batch-size):
  SD = the UNet; ControlNet = ControlNet + UNet (`ControlNetDenoiser`); T2I-Adapter = UNet with the adapter
  features added (`T2IAdapterDenoiser`; the adapter itself runs once per image, outside the step);
* optionally per image (`--images`): the whole pipeline call (text encoding, `--steps` DDIM steps, VAE decode)
  of `PoseToImagePipeline` (SD, text only), `ControlNetPipeline` and `T2IAdapterPipeline`.

``warmup`` untimed runs, then ``repeats`` timed ones; medians are reported with the ratios to SD. HumanSD's table
reports 6.37 s (ControlNet) and 5.28 s (T2I-Adapter) vs 3.88 s (SD) per image, i.e. 1.64x and 1.36x (GPU unknown).

On a CPU shared with other jobs use ``--threads 1``: oversubscribed thread pools distort small models badly.

Presets: ``tiny`` (configs/tiny, 64 px), ``mid`` (the SD-1.5 layout at model_channels 64, 256 px: the same block
structure and relative costs at a CPU-friendly size), ``full`` (SD-1.5 itself, 512 px; use a GPU).

Examples:
    python -m benchmarks comparison_overhead --preset mid
    python -m benchmarks comparison_overhead --preset full --device cuda --precision fp16 --images
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig

from comparison_models.denoisers import ControlNetDenoiser, T2IAdapterDenoiser
from comparison_models.pipelines import (
    ControlNetPipeline,
    T2IAdapterPipeline,
    build_comparison_models,
    load_comparison_config,
)
from ldm.cli import HelpFormatter
from ldm.conditioning import Conditioning
from ldm.inference.pipeline import PRECISIONS, PoseToImagePipeline
from ldm.samplers import ClassifierFreeGuidance

logger = logging.getLogger("comparison_overhead")

PRESETS: dict[str, dict] = {
    "tiny": {"controlnet": "configs/tiny/controlnet-tiny.yaml", "adapter": "configs/tiny/t2iadapter-tiny.yaml"},
    "mid": {
        "controlnet": "configs/comparison/controlnet-v11-openpose-sd15.yaml",
        "adapter": "configs/comparison/t2iadapter-openpose-sd14.yaml",
        "model_channels": 64,
        "size": 256,
    },
    "full": {
        "controlnet": "configs/comparison/controlnet-v11-openpose-sd15.yaml",
        "adapter": "configs/comparison/t2iadapter-openpose-sd14.yaml",
    },
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="mid", help="model size")
    p.add_argument("--size", type=int, help="image side in pixels (default: the preset's native size)")
    p.add_argument("--batch-size", type=int, default=1, help="images per call (the CFG batch is twice this)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32", help="autocast precision")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs per variant")
    p.add_argument("--images", action="store_true", help="also time whole pipeline calls (per image)")
    p.add_argument("--steps", type=int, default=10, help="sampler steps of a pipeline call (with --images)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    return p


def _shrink(cfg: DictConfig, model_channels: int) -> None:
    """Scale the UNet, the control model and the adapter to `model_channels` (same block structure)."""
    cfg.base_config.model.params.unet.params.model_channels = model_channels
    params = cfg.control_model.params
    if "channels" in params:  # adapter: one width per UNet level
        mult = cfg.base_config.model.params.unet.params.channel_mult
        params.channels = [model_channels * m for m in mult]
    else:
        params.model_channels = model_channels


def build(preset: dict) -> tuple:
    """(SD-1.x model, ControlNet, Adapter, native size) with random weights, eval mode."""
    models = []
    for key in ("controlnet", "adapter"):
        cfg = load_comparison_config(preset[key])
        if "model_channels" in preset:
            _shrink(cfg, preset["model_channels"])
        models.append(build_comparison_models(cfg))
    (model, controlnet), (_, adapter) = models
    size = preset.get("size", int(cfg.get("defaults", {}).get("size", 512)))
    return model.eval(), controlnet.eval(), adapter.eval(), size


def median_seconds(
    fns: dict[str, Callable[[], object]], *, warmup: int, repeats: int, device: torch.device
) -> dict[str, float]:
    """Median wall time of each function, timed round-robin (one run of each per round) so that load from other
    processes on a shared machine affects every variant alike."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


@torch.no_grad()
def time_steps(model, controlnet, adapter, size: int, args: argparse.Namespace, device: torch.device) -> dict:
    """Median seconds of one guided denoising step for SD, ControlNet and T2I-Adapter."""
    gen = torch.Generator().manual_seed(0)
    b, f = args.batch_size, model.downsample_factor
    x = torch.randn(b, model.vae.embed_dim, size // f, size // f, generator=gen).to(device)
    width = model.unet.config["context_dim"]
    cond = Conditioning(torch.randn(b, 77, width, generator=gen).to(device))
    guidance = ClassifierFreeGuidance(7.5, Conditioning(torch.randn(1, 77, width, generator=gen).to(device)))
    t = torch.full((b,), 500, dtype=torch.long, device=device)
    hint = torch.rand(1, 3, size, size, generator=gen).to(device)
    autocast = (
        torch.autocast(device.type, dtype=PRECISIONS[args.precision])
        if args.precision != "fp32"
        else contextlib.nullcontext()
    )
    with autocast:
        denoisers = {
            "SD": model,
            "ControlNet": ControlNetDenoiser(model, controlnet, hint),
            "T2I-Adapter": T2IAdapterDenoiser(model, adapter, hint),
        }
        fns = {name: (lambda den=den: guidance(den, x, t, cond)) for name, den in denoisers.items()}
        return median_seconds(fns, warmup=args.warmup, repeats=args.repeats, device=device)


def time_images(model, controlnet, adapter, size: int, args: argparse.Namespace) -> dict:
    """Median seconds per image of whole pipeline calls (text, `steps` DDIM steps, decode)."""
    common = {"device": args.device, "precision": args.precision, "default_size": (size, size)}
    pipes = {
        "SD": PoseToImagePipeline(model, **common),
        "ControlNet": ControlNetPipeline(model, controlnet, **common),
        "T2I-Adapter": T2IAdapterPipeline(model, adapter, **common),
    }
    pose = torch.tensor([[[size / 2, size / 4, 1.0]] * 17]).numpy()  # one degenerate person: content is irrelevant
    call = {"num_inference_steps": args.steps, "seed": 0, "num_images": args.batch_size}
    fns = {
        name: (lambda pipe=pipe, name=name: pipe("a person dancing", None if name == "SD" else pose, **call))
        for name, pipe in pipes.items()
    }
    repeats = max(1, args.repeats // 2)
    seconds = median_seconds(fns, warmup=1, repeats=repeats, device=torch.device(args.device))
    return {name: s / args.batch_size for name, s in seconds.items()}


def report(title: str, seconds: dict[str, float]) -> dict:
    base = seconds["SD"]
    lines = [f"{title}:"]
    for name, s in seconds.items():
        lines.append(f"  {name:<12} {s * 1000:10.2f} ms   x{s / base:.2f} vs SD")
    logger.info("\n".join(lines))
    return {name: {"seconds": s, "ratio_to_sd": s / base} for name, s in seconds.items()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, controlnet, adapter, size = build(PRESETS[args.preset])
    size = args.size or size
    model.to(device), controlnet.to(device), adapter.to(device)
    logger.info(
        "preset %s, %d px, batch %d (CFG batch %d), %s %s, %d threads",
        args.preset,
        size,
        args.batch_size,
        2 * args.batch_size,
        device,
        args.precision,
        torch.get_num_threads(),
    )
    results = {"preset": args.preset, "size": size, "batch_size": args.batch_size, "device": str(device)}
    results["step"] = report(
        "median seconds per guided step", time_steps(model, controlnet, adapter, size, args, device)
    )
    if args.images:
        per_image = time_images(model, controlnet, adapter, size, args)
        results["image"] = report(f"median seconds per image ({args.steps} steps)", per_image)
    results["paper_per_image_ratio"] = {"ControlNet": 6.37 / 3.88, "T2I-Adapter": 5.28 / 3.88}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
