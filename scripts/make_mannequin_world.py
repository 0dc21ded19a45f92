"""Generate the mannequin world: captioned, pose-labelled synthetic images in the Human-Art layout.

Example:
    python scripts/make_mannequin_world.py --out humansd_data/datasets/Mannequin --n 2000 --size 128 --seed 0
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import NoReturn

from ldm.cli import HelpFormatter
from ldm.data.mannequin.world import MAX_VAL_FRACTION, check_world_options, write_mannequin_world

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="dataset root to create")
    parser.add_argument("--n", type=int, default=2000, help="number of images")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (multiple of 8, 32 to 1024)")
    parser.add_argument("--seed", type=int, default=0, help="world seed; image i depends only on (seed, i)")
    parser.add_argument(
        "--val-fraction", type=float, default=0.1, help=f"share of validation images, 0 to {MAX_VAL_FRACTION}"
    )
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (output does not depend on it)")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous world in a non-empty --out")
    parser.add_argument(
        "--mark-left",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draw each figure's left arm and leg in a darker (on black figures, lighter) tone of its colour, as the "
        "shipped world does; --no-mark-left draws the unmarked figures of earlier worlds",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; exits with code 2 and a one-line message on bad input, writing nothing."""
    parser = _parser()
    args = parser.parse_args(argv)

    def fail(message: str) -> NoReturn:
        parser.exit(2, f"{parser.prog}: error: {message}\n")

    try:
        check_world_options(args.n, args.size, args.val_fraction)
    except ValueError as err:
        fail(str(err))
    if args.workers < 1:
        fail(f"--workers must be at least 1; got {args.workers}.")
    if args.out.exists() and not args.out.is_dir():
        fail(f"--out {args.out} exists and is not a directory.")
    if args.out.is_dir() and any(args.out.iterdir()) and not args.overwrite:
        fail(f"--out {args.out} is not empty; pass --overwrite to replace it or choose another folder.")

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    summary = write_mannequin_world(
        args.out,
        args.n,
        size=args.size,
        seed=args.seed,
        val_fraction=args.val_fraction,
        workers=args.workers,
        overwrite=args.overwrite,
        mark_left=args.mark_left,
    )
    logger.info(
        "%d training + %d validation images in %s (%.0f images/s): %s",
        summary.n_train,
        summary.n_val,
        summary.out_dir,
        summary.images_per_second,
        ", ".join(f"{k} {v}" for k, v in summary.scenarios.items()),
    )


if __name__ == "__main__":
    main()
