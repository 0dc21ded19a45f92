"""Write a copy of a dataset whose images are their VAE round trips (encode, decode); poses and prompts unchanged.

Used to teach the tiny pose net to read decoder output (see ldm/data/vae_roundtrip.py): train it on the real world
and its round trips together. Interrupted runs resume (finished images are kept).

Example (the mannequin world's training split through the shipped tiny VAE, ~10 min on one core):
    python scripts/make_vae_roundtrip_world.py \\
        --map-file humansd_data/datasets/Mannequin/mapping_file_training.json \\
        --out humansd_data/datasets/MannequinRoundTrip --threads 1
    python scripts/make_vae_roundtrip_world.py \\
        --map-file humansd_data/datasets/Mannequin/mapping_file_validation.json \\
        --annotations humansd_data/datasets/Mannequin/annotations/validation_coco.json \\
        --out outputs/MannequinRoundTripVal      # then: scripts/eval_pose.py --data-root outputs/MannequinRoundTripVal
    python scripts/train_pose.py ... \\
        'data.params.train.map_file=[humansd_data/datasets/Mannequin/mapping_file_training.json,humansd_data/datasets/MannequinRoundTrip/mapping_file_training.json]'
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from ldm.checkpoint import load_prefixed
from ldm.config import load_config
from ldm.data.humansd import read_mappings
from ldm.data.vae_roundtrip import roundtrip_coco, write_roundtrip_dataset
from ldm.inference.loading import build_model

logger = logging.getLogger("make_vae_roundtrip_world")

TINY = Path("humansd_data/checkpoints/tiny")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--map-file", type=Path, required=True, help="mapping JSON of the source dataset")
    p.add_argument("--out", type=Path, required=True, help="folder of the round-trip dataset")
    p.add_argument(
        "--model-config",
        type=Path,
        default=Path("configs/tiny/mannequin-humansd.yaml"),
        help="model YAML whose VAE architecture is used",
    )
    p.add_argument(
        "--ckpt",
        type=Path,
        nargs="+",
        default=[TINY / "base-tiny.safetensors"],
        help="file(s) holding first_stage_model.* weights",
    )
    p.add_argument("--split", default=None, help="name of the written mapping file (default: the source's split)")
    p.add_argument("--limit", type=int, help="first N entries only")
    p.add_argument("--batch-size", type=int, default=32, help="images per VAE call")
    p.add_argument("--device", default="cpu", help="torch device of the VAE")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--overwrite", action="store_true", help="redo images that already exist")
    p.add_argument(
        "--annotations",
        type=Path,
        help="COCO keypoint JSON of the source split: copied to OUT/annotations/ pointing at the round trips "
        "(e.g. humansd_data/datasets/Mannequin/annotations/validation_coco.json, for scripts/eval_pose.py)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    split = args.split or args.map_file.stem.removeprefix("mapping_file_")
    try:
        for path in (args.model_config, args.map_file, *([args.annotations] if args.annotations else [])):
            if not path.is_file():
                raise FileNotFoundError(f"No such file: {path}")
        records = read_mappings(args.map_file)[: args.limit]
        vae = build_model(load_config(args.model_config)).vae
        load_prefixed(vae, args.ckpt, "first_stage_model.")
        vae = vae.to(args.device).eval()
        start = time.perf_counter()
        map_file = write_roundtrip_dataset(
            records, vae, args.out, split=split, batch_size=args.batch_size, overwrite=args.overwrite
        )
        if args.annotations:
            logger.info("Wrote %s.", roundtrip_coco(args.annotations, args.out))
    except (FileNotFoundError, ValueError) as err:
        print(f"make_vae_roundtrip_world: error: {err}", file=sys.stderr)
        return 2
    logger.info("Wrote %s (%d items) in %.0f s.", map_file, len(records), time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
