"""Render a pose file in both skeleton styles side by side (HumanSD's and ControlNet's OpenPose-18).

Writes the README picture `assets/pose_styles.png` from `assets/poses/two_people.json` by default.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ldm.cli import HelpFormatter
from ldm.pose.io import load_pose
from ldm.pose.render import SkeletonStyle, render_pose_map

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
LABELS = {SkeletonStyle.HUMANSD: "HumanSD", SkeletonStyle.OPENPOSE: "OpenPose-18 (ControlNet)"}


def render_styles(pose_path: Path, *, threshold: float, gap: int = 8) -> np.ndarray:
    """Both styles of one pose, labelled, side by side.

    Args:
        pose_path: any file `ldm.pose.io.load_pose` reads.
        threshold: person and joint score threshold.
        gap: white pixels between the panels.

    Returns:
        (H, 2 W + gap, 3) uint8 RGB image.
    """
    pose = load_pose(pose_path)
    panels = []
    for style, label in LABELS.items():
        panel = render_pose_map(pose, style=style, threshold=threshold)
        cv2.putText(panel, label, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
        panels.append(panel)
    spacer = np.full((pose.height, gap, 3), 255, dtype=np.uint8)
    return np.concatenate([panels[0], spacer, panels[1]], axis=1)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "--pose", type=Path, default=REPO_ROOT / "assets/poses/two_people.json", help="pose file to render"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "assets/pose_styles.png", help="output PNG")
    parser.add_argument("--threshold", type=float, default=0.05, help="person and joint score threshold")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    picture = render_styles(args.pose, threshold=args.threshold)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(args.out, optimize=True)
    logger.info(
        "Wrote %s (%dx%d, %.1f kB).", args.out, picture.shape[1], picture.shape[0], args.out.stat().st_size / 1e3
    )


if __name__ == "__main__":
    main()
