"""Export a training checkpoint to inference weights (.safetensors, EMA if present, config in metadata).

Examples:
    python scripts/export_checkpoint.py logs/<run>/checkpoints/last.ckpt humansd_data/checkpoints/my-humansd.safetensors
    python scripts/export_checkpoint.py logs/<run>/checkpoints/last.ckpt out.safetensors --no-ema --dtype fp16
    # only the UNet, for models that load a shared base file with it (the tiny layout: [base-tiny, unet])
    python scripts/export_checkpoint.py logs/<run>/checkpoints/last.ckpt unet.safetensors --unet-only --dtype fp16

The result loads with ``ldm.inference.loading.load_model(config, path)`` where ``config`` is the JSON stored under
the ``config`` metadata key (``ldm.checkpoint.read_checkpoint`` returns it decoded).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ldm.cli import HelpFormatter
from ldm.training.export import DTYPES, export_inference_weights


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("checkpoint", type=Path, help="Lightning training checkpoint (.ckpt) written by scripts/train.py")
    p.add_argument("output", type=Path, help="destination .safetensors file")
    p.add_argument("--no-ema", action="store_true", help="export the trained weights even if EMA weights exist")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="dtype of the network weights")
    p.add_argument("--config", type=Path, help="inference config to embed; the one stored in the checkpoint if omitted")
    p.add_argument("--unet-only", action="store_true", help="write only the UNet (model.diffusion_model.*) weights")
    p.add_argument(
        "--trust-checkpoint", action="store_true", help="allow checkpoints that need full (unsafe) unpickling"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        export_inference_weights(
            args.checkpoint,
            args.output,
            use_ema=not args.no_ema,
            dtype=args.dtype,
            config=args.config,
            trust_pickle=True if args.trust_checkpoint else None,
            unet_only=args.unet_only,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"export_checkpoint: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
