"""Run the main job (prompt + pose -> image) end to end on the embedded tiny model and save a grid.

Each row of the grid is: pose map | pose overlaid on the first sample | samples. Uses the shipped tiny weights of
the mannequin world when they exist (humansd_data/checkpoints/tiny/), otherwise random weights, and says so.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ldm.cli import HelpFormatter
from ldm.inference.defaults import embedded_model, resolve_model
from ldm.inference.pipeline import PoseToImagePipeline
from ldm.pose.io import load_pose
from ldm.pose.render import overlay_skeleton

logger = logging.getLogger("demo")

EXAMPLES = [
    ("assets/poses/demo_single.json", "a photo of a red figure standing on a blue background"),
    ("assets/poses/two_people.json", "a watercolor of two yellow figures dancing on a green background"),
]


def build_grid(rows: list[list[np.ndarray]], *, scale: int) -> Image.Image:
    """Tile equally sized (H, W, 3) uint8 panels row by row, upscaled by `scale` (nearest) for visibility."""
    h, w = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    grid = np.zeros((len(rows) * h, cols * w, 3), np.uint8)
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            grid[i * h : (i + 1) * h, j * w : (j + 1) * w] = panel
    image = Image.fromarray(grid)
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--outdir", type=Path, default=Path("outputs/demo"), help="where the grid is written")
    parser.add_argument("--config", type=Path, help="model config (default: the embedded tiny model)")
    parser.add_argument("--ckpt", type=Path, action="append", help="weights; repeat for a base + UNet pair")
    parser.add_argument("--samples", type=int, default=3, help="samples per pose")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the model config's)")
    parser.add_argument("--scale", type=float, help="classifier-free guidance scale (default: the model config's)")
    parser.add_argument("--seed", type=int, default=1234, help="random seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    if args.config is None and args.ckpt is None:
        config, ckpt, notice = embedded_model()
    else:
        config, ckpt, notice = resolve_model(args.config, args.ckpt)
    pipe = PoseToImagePipeline.from_config(config, ckpt, allow_random=ckpt is None)
    note = notice or f"weights: {ckpt}"
    logger.info(note)
    size = pipe.default_size
    rows = []
    for pose_path, prompt in EXAMPLES:
        pose = load_pose(pose_path)
        out = pipe(
            prompt,
            pose,
            num_inference_steps=args.steps,
            guidance_scale=args.scale,
            seed=args.seed,
            num_images=args.samples,
            height=size[0],
            width=size[1],
            negative_prompt="",
        )
        pose_map = np.asarray(out.pose_map)
        samples = [np.asarray(im) for im in out.images]
        rows.append([pose_map, overlay_skeleton(samples[0], pose_map), *samples])
    args.outdir.mkdir(parents=True, exist_ok=True)
    path = args.outdir / "demo_grid.png"
    build_grid(rows, scale=max(1, 256 // size[0])).save(path)
    logger.info(
        "Wrote %s (rows: pose | overlay | %d samples) in %.1f s. %s",
        path,
        args.samples,
        time.perf_counter() - start,
        note,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
