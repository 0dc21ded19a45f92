"""A tiny, deterministic pose dataset in the Human-Art layout, for tests and smoke runs.

Each image shows one or more stick figures: the 16 HumanSD limbs drawn thick in a named colour on a plain
background of another named colour, both named in the prompt. Every joint of a figure lies on the figure's
strokes and strictly inside the image, so augmentation tests can check that transformed keypoints still land on
figure pixels. Even-numbered images are square (`size` x `size`); odd-numbered ones are landscape
(`size` x `3 * size // 2`), which exercises resizing and cropping.

Layout written under `root` (spec 3.8):

    images/<category>/<scenario>/<12-digit id>.jpg
    pose/<category>/<scenario>/<12-digit id>.npz      (HumanSD npz, `ldm.pose.io.write_humansd_npz`)
    mapping_file_training.json                        (the first n - max(1, n // 4) items)
    mapping_file_validation.json                      (the last max(1, n // 4) items)

References:
    HumanSD README, https://github.com/IDEA-Research/HumanSD (c5db29d) (dataset layout and mapping files).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ldm.data.humansd import HUMANART_SCENARIOS
from ldm.pose.io import write_humansd_npz
from ldm.pose.keypoints import HUMANSD_LIMBS, Person, Pose

logger = logging.getLogger(__name__)

TRAINING_MAPPING = "mapping_file_training.json"
VALIDATION_MAPPING = "mapping_file_validation.json"

FIGURE_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 30),
    "green": (30, 150, 50),
    "blue": (30, 60, 200),
    "purple": (120, 30, 150),
}
BACKGROUND_COLORS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "beige": (235, 220, 180),
    "light blue": (180, 215, 245),
    "pale yellow": (250, 245, 170),
}

# A standing person facing the camera in a unit box (x right, y down); COCO-17 order, so "left" joints
# (the person's left) are on the image's right.
_TEMPLATE = np.array(
    [
        (0.50, 0.10),
        (0.55, 0.06),
        (0.45, 0.06),
        (0.60, 0.09),
        (0.40, 0.09),
        (0.70, 0.26),
        (0.30, 0.26),
        (0.78, 0.44),
        (0.22, 0.44),
        (0.84, 0.60),
        (0.16, 0.60),
        (0.62, 0.58),
        (0.38, 0.58),
        (0.64, 0.78),
        (0.36, 0.78),
        (0.66, 0.96),
        (0.34, 0.96),
    ],
    dtype=np.float64,
)


def _category(scenario: str) -> str:
    for category, names in HUMANART_SCENARIOS.items():
        if scenario in names:
            return category
    return "2D_virtual_human"


def _random_person(rng: np.random.Generator, height: int, width: int) -> Person:
    """A jittered template figure scaled into a random box strictly inside the image."""
    margin = 3.0
    box_h = rng.uniform(0.55, 0.9) * (height - 2 * margin)
    box_w = min(box_h * 0.6, width - 2 * margin)
    x0 = rng.uniform(margin, width - margin - box_w)
    y0 = rng.uniform(margin, height - margin - box_h)
    unit = np.clip(_TEMPLATE + rng.uniform(-0.03, 0.03, size=_TEMPLATE.shape), 0.0, 1.0)
    xy = unit * (box_w, box_h) + (x0, y0)
    scores = rng.uniform(0.3, 1.0, size=(len(xy), 1))
    return Person(np.hstack([xy, scores]).astype(np.float32), score=float(rng.uniform(0.5, 1.0)))


def _draw(persons: Sequence[Person], height: int, width: int, figure: tuple, background: tuple) -> np.ndarray:
    """(height, width, 3) uint8 RGB image of the figures' limbs, thick, on a plain background."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = background
    thickness = max(3, round(min(height, width) * 0.06))
    for person in persons:
        xy = np.round(person.keypoints[:, :2]).astype(int)
        for a, b in HUMANSD_LIMBS:
            cv2.line(image, tuple(map(int, xy[a])), tuple(map(int, xy[b])), figure, thickness)
    return image


def _prompt(n_persons: int, figure: str, background: str, scenario: str) -> str:
    subject = f"a {figure} stick figure" if n_persons == 1 else f"{n_persons} {figure} stick figures"
    if n_persons == 0:
        subject = "an empty scene"
    return f"{subject} on a {background} background, {scenario.replace('_', ' ')}"


def _check_args(n: int, size: int, persons: tuple[int, int], scenarios: Sequence[str]) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (one training and one validation item at least); got {n!r}.")
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an integer >= 16 pixels; got {size!r}.")
    if len(persons) != 2 or not 0 <= persons[0] <= persons[1]:
        raise ValueError(f"persons must be (min, max) with 0 <= min <= max; got {persons!r}.")
    if not scenarios or not all(isinstance(s, str) and s and "/" not in s for s in scenarios):
        raise ValueError(f"scenarios must be a non-empty list of folder names; got {scenarios!r}.")


def write_tiny_dataset(
    root: str | Path,
    n: int = 8,
    size: int = 64,
    seed: int = 0,
    persons: tuple[int, int] = (1, 2),
    scenarios: Sequence[str] = ("sketch", "watercolor"),
) -> Path:
    """Write a small synthetic dataset in the Human-Art layout (see module doc); same seed, same bytes.

    Args:
        root: dataset folder (created; existing files of the same names are overwritten).
        n: number of items (>= 2), split into training and validation mappings.
        size: short image side in pixels (>= 16).
        seed: random seed of figures, colours and scores.
        persons: (min, max) persons per image, inclusive.
        scenarios: scenario folder names, assigned round-robin; known Human-Art names go to their category,
            others to `2D_virtual_human`.

    Returns:
        Path of `mapping_file_training.json` (the validation mapping is next to it).
    """
    _check_args(n, size, tuple(persons), scenarios)
    root = Path(root)
    rng = np.random.default_rng(seed)
    figures, backgrounds = list(FIGURE_COLORS), list(BACKGROUND_COLORS)
    mapping = {}
    for i in range(n):
        scenario = scenarios[i % len(scenarios)]
        folder = f"{_category(scenario)}/{scenario}"
        item_id = f"{i:012d}"
        height, width = (size, size) if i % 2 == 0 else (size, 3 * size // 2)
        people = [_random_person(rng, height, width) for _ in range(int(rng.integers(persons[0], persons[1] + 1)))]
        figure, background = figures[int(rng.integers(len(figures)))], backgrounds[int(rng.integers(len(backgrounds)))]
        image = _draw(people, height, width, FIGURE_COLORS[figure], BACKGROUND_COLORS[background])
        image_rel, pose_rel = f"images/{folder}/{item_id}.jpg", f"pose/{folder}/{item_id}.npz"
        (root / image_rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / image_rel, quality=95)
        write_humansd_npz(Pose(people, width=width, height=height), root / pose_rel)
        mapping[item_id] = {
            "img_path": image_rel,
            "pose_path": pose_rel,
            "prompt": _prompt(len(people), figure, background, scenario),
        }
    keys = list(mapping)
    n_val = max(1, n // 4)
    for name, part in ((TRAINING_MAPPING, keys[:-n_val]), (VALIDATION_MAPPING, keys[-n_val:])):
        (root / name).write_text(json.dumps({k: mapping[k] for k in part}, indent=1), encoding="utf-8")
    logger.debug("Wrote %d synthetic items (%d validation) under %s", n, n_val, root)
    return root / TRAINING_MAPPING
