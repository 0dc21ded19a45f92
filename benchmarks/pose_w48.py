"""Time HigherHRNet-W48 ``PoseEstimator.detect`` on one image on CPU (random weights, no checkpoint needed).

Reports the median wall time of ``--runs`` calls after one warm-up call. With MMPose-style random weights the
heatmaps stay below the detection threshold, so the time is the two network passes (image + flipped image),
the resize and a trivially short decoding; a trained network adds the grouping/refinement of the found persons.

Example:
    python -m benchmarks pose_w48 --runs 3 --size 512
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np
import torch

from ldm.cli import HelpFormatter
from ldm.pose.estimator import POSE_ESTIMATOR_PRESETS, PoseEstimator

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--config", default="w48", choices=sorted(POSE_ESTIMATOR_PRESETS), help="network preset")
    parser.add_argument("--size", type=int, default=512, help="square test image side in pixels")
    parser.add_argument("--runs", type=int, default=3, help="timed detect() calls (after one warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and image")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    estimator = PoseEstimator.from_config(args.config)
    image = np.random.default_rng(args.seed).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    estimator.detect(image)  # warm-up (oneDNN primitive creation, allocator)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        persons = estimator.detect(image)
        times.append(time.perf_counter() - start)
    logger.info(
        "%s detect %dx%d on CPU (%d threads): median %.3f s over %d runs (min %.3f, max %.3f), %d persons",
        args.config, args.size, args.size, torch.get_num_threads(), statistics.median(times), args.runs,
        min(times), max(times), len(persons),
    )  # fmt: skip


if __name__ == "__main__":
    main()
