"""Render chosen mannequin-world scenes as a captioned grid (the README picture `assets/mannequin_examples.png`).

Scenes are `make_scene(index, seed=seed, size=size)` of the generator, so the picture shows exactly what
`scripts/make_mannequin_world.py --seed SEED` writes for those images (at `--size` pixels).

Example:
    python scripts/render_mannequin_examples.py --out assets/mannequin_examples.png
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np

from ldm.data.mannequin import make_scene, render_scene
from ldm.data.mannequin.scene import check_size

logger = logging.getLogger(__name__)

DEFAULT_INDICES = (17, 18, 23, 36, 21, 40, 31, 37)  # one of each style and 1-3 figures, from world seed 0
_FONT, _FONT_SCALE, _LINE = cv2.FONT_HERSHEY_SIMPLEX, 0.36, 13


def _tile(image: np.ndarray, caption: str, width: int, caption_lines: int) -> np.ndarray:
    """The image with its caption written below it on white, wrapped to the tile width."""
    block = np.full((caption_lines * _LINE + 12, width, 3), 255, dtype=np.uint8)
    chars = max(10, int(width / 5.6))
    for row, line in enumerate(textwrap.wrap(caption, chars)[:caption_lines]):
        cv2.putText(block, line, (3, 14 + row * _LINE), _FONT, _FONT_SCALE, (40, 40, 40), 1, cv2.LINE_AA)
    return np.concatenate([image, block], axis=0)


def render_examples(
    indices: list[int], *, seed: int, size: int, columns: int, mark_left: bool, gap: int = 4
) -> np.ndarray:
    """(H, W, 3) uint8 RGB grid of the scenes with their captions, `columns` per row."""
    tiles = []
    for index in indices:
        scene = make_scene(index, seed=seed, size=size, mark_left=mark_left)
        tiles.append(_tile(render_scene(scene), scene.caption, size, caption_lines=2))
    blank = np.full_like(tiles[0], 255)
    tiles += [blank] * (-len(tiles) % columns)
    pad = np.full((tiles[0].shape[0], gap, 3), 255, dtype=np.uint8)
    rows = []
    for start in range(0, len(tiles), columns):
        cells = [t for tile in tiles[start : start + columns] for t in (tile, pad)][:-1]
        rows.append(np.concatenate(cells, axis=1))
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("assets/mannequin_examples.png"), help="PNG to write")
    parser.add_argument("--seed", type=int, default=0, help="world seed")
    parser.add_argument("--indices", type=int, nargs="+", default=list(DEFAULT_INDICES), help="image indices")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (multiple of 8, 32 to 1024)")
    parser.add_argument("--columns", type=int, default=4, help="images per row")
    parser.add_argument(
        "--mark-left", action=argparse.BooleanOptionalAction, default=True, help="as make_mannequin_world.py"
    )
    args = parser.parse_args(argv)
    try:
        check_size(args.size)
    except ValueError as err:
        parser.error(str(err))
    if args.columns < 1 or any(i < 0 for i in args.indices):
        parser.error("--columns must be >= 1 and --indices >= 0.")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    grid = render_examples(args.indices, seed=args.seed, size=args.size, columns=args.columns, mark_left=args.mark_left)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise SystemExit(f"OpenCV could not write {args.out}.")
    logger.info("Wrote %s (%d x %d).", args.out, grid.shape[1], grid.shape[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
