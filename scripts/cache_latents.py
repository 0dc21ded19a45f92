"""Encode a dataset once with the frozen VAE of a model and write a latent cache (see ldm/data/latent_cache.py).

Training on the cache (`ldm.data.latent_cache.LatentCacheDataModule`) skips the two VAE encodes of every step;
it fits datasets whose only augmentation is a horizontal flip (both orientations are stored).

Example (the mannequin world, after `scripts/build_mannequin_models.py init`):
    python scripts/cache_latents.py --model-config configs/tiny/mannequin-humansd.yaml \\
        --ckpt humansd_data/checkpoints/tiny/base-tiny.safetensors \\
        --map-file humansd_data/datasets/Mannequin/mapping_file_training.json \\
        --out humansd_data/datasets/Mannequin/latents-train.safetensors
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
from ldm.data.latent_cache import build_latent_cache
from ldm.inference.loading import build_model

logger = logging.getLogger("cache_latents")

VAE_PREFIX = "first_stage_model."


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-config", type=Path, required=True, help="the model YAML (its VAE is used)")
    p.add_argument("--ckpt", type=Path, nargs="+", required=True, help="checkpoint file(s) holding the VAE weights")
    p.add_argument("--map-file", type=Path, required=True, help="mapping JSON of the dataset")
    p.add_argument("--out", type=Path, required=True, help="cache file to write (.safetensors)")
    p.add_argument("--image-size", type=int, help="image side (default: the model config's defaults.size)")
    p.add_argument("--skeleton-width", type=int, help="limb width (default: the config's defaults.skeleton_width)")
    p.add_argument("--max-person-num", type=int, default=10, help="persons read per image")
    p.add_argument("--no-flips", action="store_true", help="store only the unflipped orientation")
    p.add_argument(
        "--no-swap-flipped-joints", action="store_true", help="keep left/right labels when mirroring (the original)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per VAE call")
    p.add_argument("--device", default="cpu", help="torch device of the VAE")
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes reading and rendering the items")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        for path in (args.model_config, args.map_file):
            if not path.is_file():
                raise FileNotFoundError(f"No such file: {path}")
        cfg = load_config(args.model_config)
        defaults = cfg.get("defaults", {})
        model = build_model(cfg)
        load_prefixed(model.vae, args.ckpt, VAE_PREFIX)
        options = {
            "map_file": str(args.map_file),
            "image_size": args.image_size or int(defaults.get("size", 512)),
            "skeleton_width": args.skeleton_width or int(defaults.get("skeleton_width", 10)),
            "max_person_num": args.max_person_num,
            "swap_flipped_joints": not args.no_swap_flipped_joints,
        }
        start = time.perf_counter()
        build_latent_cache(
            model.vae,
            options,
            args.out,
            flips=not args.no_flips,
            batch_size=args.batch_size,
            device=args.device,
            num_workers=args.workers,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"cache_latents: error: {err}", file=sys.stderr)
        return 2
    logger.info("Done in %.0f s.", time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
