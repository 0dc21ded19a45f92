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

from ldm.pose.estimator import PoseEstimator
from ldm.training.pose_eval import evaluate_detector
from ldm.training.pose_module import read_exported_pose_config

logger = logging.getLogger("eval_pose")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
        start = time.perf_counter()
        result = evaluate_detector(estimator, annotations, args.data_root, max_images=args.max_images)
    except (ValueError, FileNotFoundError) as err:
        print(f"eval_pose: error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    logger.info("%d images, %d detections in %.1f s", result.num_images, result.num_detections, seconds)
    print(json.dumps({k: round(v, 4) for k, v in result.as_dict().items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
