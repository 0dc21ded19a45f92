"""``python -m benchmarks <name> [options]``: run one benchmark (``python -m benchmarks`` lists them).

Each benchmark is a module of this package with ``main(argv) -> int | None``; ``<name> --help`` shows its options.
``benchmarks/gpu.sh`` is the GPU suite (a shell script, run it directly).
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "unet_vs_diffusers": "UNet seconds/call, ours vs diffusers with the same weights (outputs checked first)",
    "conv3x3": "3x3 convolution layers: oneDNN prepacked vs Winograd F(2x2) / F(4x4) (CPU fp32)",
    "sampling": "end-to-end sampling seconds/image and peak RSS, plain vs fast-path options",
    "train_step": "training step time: plain vs heatmap-guided loss",
    "comparison_overhead": "HumanSD vs ControlNet vs T2I-Adapter sampling overhead",
    "pose_w48": "HigherHRNet-W48 pose-estimation forward time",
    "metrics_1000": "evaluation metrics over 1000 images",
}


def usage() -> str:
    width = max(map(len, BENCHMARKS))
    lines = [f"  {name:<{width}}  {text}" for name, text in BENCHMARKS.items()]
    return "usage: python -m benchmarks <name> [options]   (<name> --help for options)\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name = argv[0].replace("-", "_")
    if name not in BENCHMARKS:
        print(f"Unknown benchmark {argv[0]!r}.\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{name}")
    sys.argv = [f"python -m benchmarks {name}", *argv[1:]]
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
