"""Seconds per training step: plain loss vs heatmap-guided loss (reference and paper modes), same model and batch.

Every variant runs in this one process on the same model, batch and precision: ``warmup`` untimed steps, then
``steps`` timed ones (forward + backward + AdamW step, as ``LatentDiffusionModule.training_step``); the median is
reported. Weights are random (no checkpoint is read except the pose net's, when configured and present): timing only.

Examples:
    python -m benchmarks train_step                                   # tiny model on CPU
    python -m benchmarks train_step --config configs/humansd/humansd-finetune.yaml --device cuda \\
        --precision bf16-mixed --batch-size 4 --random-pose-net
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

from ldm.cli import HelpFormatter
from ldm.data.keys import BatchKey
from ldm.training.build import build_loss, build_model, build_module
from ldm.training.config import HeatmapLossConfig, LossConfig, PoseNetConfig, load_train_config, parse_train_config

logger = logging.getLogger("train_step")

VARIANTS = ("plain", "heatmap-reference", "heatmap-paper")
AUTOCAST = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument(
        "--config",
        type=Path,
        default=Path("configs/tiny/train-heatmap-reference.yaml"),
        help="training config (model, module options, pose net of loss.heatmap)",
    )
    p.add_argument("overrides", nargs="*", default=[], help="dotted config overrides")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--precision", choices=sorted(AUTOCAST), default="32", help="autocast mode")
    p.add_argument("--batch-size", type=int, default=2, help="images per step")
    p.add_argument("--size", type=int, help="image side (default: data.params.train.image_size of the config)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="losses to time")
    p.add_argument("--random-pose-net", action="store_true", help="random pose-net weights (no checkpoint needed)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    return p


def loss_config(variant: str, base: HeatmapLossConfig | None, random_pose_net: bool) -> LossConfig:
    if variant == "plain":
        return LossConfig(heatmap=None)
    heatmap = base or HeatmapLossConfig(pose_estimator=PoseNetConfig(config="w48"))
    if random_pose_net:
        heatmap = dataclasses.replace(
            heatmap, pose_estimator=dataclasses.replace(heatmap.pose_estimator, checkpoint=None)
        )
    return LossConfig(heatmap=dataclasses.replace(heatmap, mode=variant.removeprefix("heatmap-")))


def synthetic_batch(size: int, batch_size: int, device: torch.device) -> dict:
    gen = torch.Generator().manual_seed(0)
    return {
        BatchKey.IMAGE: (torch.rand(batch_size, 3, size, size, generator=gen) * 2 - 1).to(device),
        BatchKey.POSE_MAP: (torch.rand(batch_size, 3, size, size, generator=gen) * 2 - 1).to(device),
        BatchKey.CAPTION: ["a person dancing on a beige background"] * batch_size,
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variant(module, batch: dict, *, steps: int, warmup: int, dtype: torch.dtype | None) -> list[float]:
    device = next(module.parameters()).device
    params = [p for p in module.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-6)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    module.train()
    times = []
    for i in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        with autocast:
            out = module._common_step(batch, i, "train")
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = ["data.params.train.map_file=unused", *args.overrides]
    config = parse_train_config(load_train_config([args.config], overrides))
    size = args.size or int(config.data["params"]["train"].get("image_size", 512))
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(config, init_checkpoint=None)
    batch = synthetic_batch(size, args.batch_size, device)
    results = {}
    for variant in args.variants:
        loss_fn = build_loss(loss_config(variant, config.loss.heatmap, args.random_pose_net))
        module = build_module(config, model, loss_fn, seed=0).to(device)
        times = time_variant(module, batch, steps=args.steps, warmup=args.warmup, dtype=AUTOCAST[args.precision])
        results[variant] = {"median_s": statistics.median(times), "min_s": min(times), "steps": len(times)}
    base = results.get("plain", {}).get("median_s")
    print(
        f"{args.config} | {size}x{size} batch {args.batch_size} | {device} | precision {args.precision} | "
        f"threads {torch.get_num_threads()}"
    )
    print(f"{'loss':<20}{'median s/step':>15}{'min s/step':>12}{'vs plain':>10}")
    for variant, r in results.items():
        ratio = f"{r['median_s'] / base:.2f}x" if base else "-"
        print(f"{variant:<20}{r['median_s']:>15.4f}{r['min_s']:>12.4f}{ratio:>10}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "config": str(args.config),
                    "size": size,
                    "batch_size": args.batch_size,
                    "device": str(device),
                    "precision": args.precision,
                    "results": results,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
