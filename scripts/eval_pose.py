"""COCO keypoint AP (OKS, maxDets 20) of a HigherHRNet pose checkpoint on a COCO-annotated image folder.

Example:
    python scripts/eval_pose.py --checkpoint humansd_data/checkpoints/tiny/pose-tiny.safetensors \\
        --pose-config configs/pose/higherhrnet_tiny_mannequin.yaml --data-root humansd_data/datasets/Mannequin \\
        --num-threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
import yaml

from ldm.cli import HelpFormatter
from ldm.pose.estimator import PoseEstimator
from ldm.training.pose_eval import collect_detections
from ldm.training.pose_module import read_exported_pose_config

logger = logging.getLogger("eval_pose")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help=".safetensors (or .pth) HigherHRNet weights")
    p.add_argument(
        "--pose-config", help="preset or YAML (configs/pose/*.yaml); default: the config stored in the checkpoint"
    )
    p.add_argument("--data-root", type=Path, default=Path("humansd_data/datasets/Mannequin"), help="image root")
    p.add_argument(
        "--annotations", type=Path, help="COCO keypoint JSON (default: DATA_ROOT/annotations/validation_coco.json)"
    )
    p.add_argument(
        "--num-threads", type=int, help="torch intra-op threads (1 is fastest on a CPU shared with other jobs)"
    )
    p.add_argument("--max-images", type=int, help="evaluate only the first N images")
    p.add_argument(
        "--area-bins",
        type=float,
        nargs="+",
        default=[],
        metavar="PX2",
        help="also score persons by area (px²) in the ranges 0-b1, b1-b2, ..., bn-inf (COCOeval: edges inclusive), "
        "one JSON line each",
    )
    p.add_argument(
        "--test",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="decoder settings that replace the config's `test` ones (e.g. nms_kernel=3 nms_padding=1 flip_test=false)",
    )
    p.add_argument(
        "--errors",
        action="store_true",
        help="also print a keypoint error diagnosis (Ronchi & Perona 2017): joints that are good / jitter / "
        "inversion (left-right) / swap (another person's) / miss, and the AP with each error type corrected",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.num_threads is not None:
        torch.set_num_threads(max(1, args.num_threads))
    annotations = args.annotations or args.data_root / "annotations" / "validation_coco.json"
    try:
        config = args.pose_config or read_exported_pose_config(args.checkpoint)
        estimator = PoseEstimator.from_checkpoint(args.checkpoint, config)
        if args.test:
            estimator.test_config = estimator.test_config.with_changes(_parse_settings(args.test))
            logger.info("Decoder settings: %s", estimator.test_config)
        edges = [0.0, *args.area_bins, float("inf")]
        if any(hi <= lo for lo, hi in zip(edges, edges[1:])):
            raise ValueError(f"--area-bins must be increasing and > 0; got {args.area_bins}.")
        start = time.perf_counter()
        evaluator = collect_detections(estimator, annotations, args.data_root, max_images=args.max_images)
        result = evaluator.compute()
        pairs = zip(edges, edges[1:]) if args.area_bins else ()
        by_area = {(lo, hi): evaluator.compute(area_range=(lo, hi)) for lo, hi in pairs}
        errors = evaluator.error_analysis() if args.errors else None
    except (ValueError, FileNotFoundError) as err:
        print(f"eval_pose: error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    logger.info("%d images, %d detections in %.1f s", result.num_images, result.num_detections, seconds)
    print(json.dumps({k: round(v, 4) for k, v in result.as_dict().items()}))
    for (lo, hi), ap in by_area.items():
        figures = {k: round(v, 4) for k, v in ap.as_dict().items() if k in ("ap", "ap50", "ap75", "ar")}
        print(json.dumps({"area": [lo, None if hi == float("inf") else hi], **figures}))
    if errors is not None:
        print(json.dumps({"errors": errors.as_dict()}))
    return 0


def _parse_settings(items: list[str]) -> dict[str, object]:
    """``["nms_kernel=3", "flip_test=false"]`` -> ``{"nms_kernel": 3, "flip_test": False}`` (YAML scalars)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--test takes KEY=VALUE items; got {item!r}.")
        out[key] = yaml.safe_load(value)
    return out


if __name__ == "__main__":
    sys.exit(main())
