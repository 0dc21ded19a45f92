"""Tests of the caption colour-adherence metric on synthetic images and on generated mannequin images."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest

from ldm.data.mannequin import COLOR_RGB, ColorName, Style, build_caption, parse_caption, write_mannequin_world
from ldm.data.mannequin.world import VALIDATION_MAPPING
from ldm.metrics.color_adherence import caption_adherence, dominant_colors, mean_adherence, nearest_colors
from ldm.pose.io import read_humansd_npz
from ldm.pose.keypoints import Person, Pose

N_VALIDATION = 50


@pytest.fixture(scope="module")
def validation_set(tmp_path_factory):
    """50 generated validation images (JPEG, read back) with their captions and poses."""
    root = tmp_path_factory.mktemp("adherence") / "world"
    write_mannequin_world(root, 2 * N_VALIDATION, size=128, seed=11, val_fraction=0.5)
    entries = json.loads((root / VALIDATION_MAPPING).read_text()).values()
    images = [cv2.cvtColor(cv2.imread(str(root / e["img_path"])), cv2.COLOR_BGR2RGB) for e in entries]
    poses = [read_humansd_npz(root / e["pose_path"]) for e in entries]
    return images, [e["prompt"] for e in entries], poses


def _stick_figure(size: int = 64) -> Pose:
    kpts = np.zeros((17, 3), dtype=np.float32)
    joints = {0: (32, 10), 5: (38, 20), 6: (26, 20), 7: (40, 30), 8: (24, 30), 9: (41, 38), 10: (23, 38)}
    joints |= {11: (36, 36), 12: (28, 36), 13: (37, 46), 14: (27, 46), 15: (37, 56), 16: (27, 56)}
    for joint, (x, y) in joints.items():
        kpts[joint] = (x, y, 1.0)
    return Pose([Person(kpts)], width=size, height=size)


def _draw(pose: Pose, figure_rgb: tuple[int, int, int], background_rgb: tuple[int, int, int]) -> np.ndarray:
    image = np.empty((pose.height, pose.width, 3), dtype=np.uint8)
    image[:] = background_rgb
    kpts = pose.persons[0].keypoints
    for a, b in ((5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16), (5, 11), (6, 12)):
        cv2.line(image, tuple(int(v) for v in kpts[a, :2]), tuple(int(v) for v in kpts[b, :2]), figure_rgb, 5)
    cv2.circle(image, tuple(int(v) for v in kpts[0, :2]), 5, figure_rgb, -1)
    return image


def test_nearest_colour_of_every_anchor_is_itself():
    names = list(COLOR_RGB)
    labels = nearest_colors(np.array([list(COLOR_RGB.values())], dtype=np.uint8))
    assert [names[i] for i in labels[0]] == names


def test_synthetic_figure_with_and_without_pose():
    pose = _stick_figure()
    image = _draw(pose, COLOR_RGB[ColorName.RED], COLOR_RGB[ColorName.BLUE])
    good = "a photo of a red figure standing on a blue background"
    assert caption_adherence(image, good, pose=pose) == {"figure_match": 1.0, "background_match": 1.0, "score": 1.0}
    assert caption_adherence(image, good)["score"] == 1.0
    wrong_figure = "a photo of a green figure standing on a blue background"
    assert caption_adherence(image, wrong_figure, pose=pose) == {
        "figure_match": 0.0,
        "background_match": 1.0,
        "score": 0.5,
    }
    swapped = "a photo of a blue figure standing on a red background"
    assert caption_adherence(image, swapped, pose=pose)["score"] == 0.0
    big = cv2.resize(image, (128, 128), interpolation=cv2.INTER_NEAREST)  # pose of a 64 px image is rescaled
    assert dominant_colors(big, pose=pose) == (ColorName.RED, ColorName.BLUE)


def test_shadow_play_accepts_any_near_black_silhouette():
    pose = _stick_figure()
    image = _draw(pose, (45, 28, 12), COLOR_RGB[ColorName.ORANGE])  # dark brown, not the black anchor
    caption = "a shadow play of a black figure standing on an orange glowing background"
    assert caption_adherence(image, caption, pose=pose)["score"] == 1.0
    lit = _draw(pose, COLOR_RGB[ColorName.RED], COLOR_RGB[ColorName.ORANGE])
    assert caption_adherence(lit, caption, pose=pose)["figure_match"] == 0.0


def test_generated_images_adhere_and_swapped_captions_do_not(validation_set):
    images, captions, poses = validation_set
    assert len(images) == N_VALIDATION
    with_pose = mean_adherence(images, captions, poses)
    without_pose = mean_adherence(images, captions)
    assert with_pose["n"] == N_VALIDATION
    assert with_pose["score"] >= 0.95, with_pose
    assert without_pose["score"] >= 0.9, without_pose
    swapped = []
    for caption in captions:
        spec = parse_caption(caption)
        if spec.style is Style.SHADOW_PLAY:  # black figures are fixed: name another light instead
            light = ColorName.PINK if spec.background_color != ColorName.PINK else ColorName.YELLOW
            wrong = replace(spec, background_color=light)
        else:
            wrong = replace(spec, figure_color=spec.background_color, background_color=spec.figure_color)
        swapped.append(build_caption(wrong))
    wrong_scores = mean_adherence(images, swapped, poses)
    assert wrong_scores["background_match"] <= 0.1 and wrong_scores["score"] <= 0.3, wrong_scores


def test_bad_inputs_raise_clear_errors():
    pose = _stick_figure()
    image = _draw(pose, COLOR_RGB[ColorName.RED], COLOR_RGB[ColorName.BLUE])
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        caption_adherence(image.astype(np.float32), "a photo of a red figure standing on a blue background")
    with pytest.raises(ValueError, match="not a mannequin caption"):
        caption_adherence(image, "a red thing")
    with pytest.raises(ValueError, match="1 images, 2 captions"):
        mean_adherence([image], ["x", "y"])
    with pytest.raises(ValueError, match="empty"):
        mean_adherence([], [])
