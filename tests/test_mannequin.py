"""Tests of the mannequin world: captions, kinematics, labels vs pixels, rendering, the writer and its script."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from ldm.data.mannequin import (
    COLOR_RGB,
    Action,
    CaptionSpec,
    ColorName,
    Pattern,
    Style,
    build_caption,
    make_scene,
    parse_caption,
    render_scene,
    sample_caption_spec,
    sample_scene,
    write_mannequin_world,
)
from ldm.data.mannequin.draw import MARK_DARKEN, draw_part, marking_tone, rasterize_ids
from ldm.data.mannequin.kinematics import (
    ANGLE_LIMITS,
    BodyShape,
    JointAngles,
    View,
    pose_skeleton,
    project,
    sample_angles,
    sample_body_shape,
)
from ldm.data.mannequin.world import INFO_FILE, TRAIN_MAPPING, VALIDATION_COCO, VALIDATION_MAPPING, is_validation
from ldm.pose.io import read_humansd_npz

REPO = Path(__file__).resolve().parents[1]
N_WORLD, SIZE_WORLD, VAL_WORLD = 30, 64, 0.2


def _load_script():
    spec = importlib.util.spec_from_file_location("make_mannequin_world", REPO / "scripts/make_mannequin_world.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    root = tmp_path_factory.mktemp("mannequin")
    for name, seed in (("a", 0), ("a_again", 0), ("b", 1)):
        write_mannequin_world(root / name, N_WORLD, size=SIZE_WORLD, seed=seed, val_fraction=VAL_WORLD)
    write_mannequin_world(root / "a_plain", N_WORLD, size=SIZE_WORLD, seed=0, val_fraction=VAL_WORLD, mark_left=False)
    return root


# ---------------------------------------------------------------------------------------------------- captions


def test_caption_round_trip_is_exact():
    rng = np.random.default_rng(0)
    specs = [sample_caption_spec(rng) for _ in range(300)]
    specs.append(CaptionSpec(Style.OIL_PAINTING, ColorName.ORANGE, ColorName.BLUE, 1, Action.SITTING))
    for spec in specs:
        assert parse_caption(build_caption(spec)) == spec
    assert {s.style for s in specs} == set(Style) and {s.count for s in specs} == {1, 2, 3}
    assert build_caption(specs[-1]) == "an oil painting of an orange figure sitting on a blue background"
    spec = CaptionSpec(Style.WATERCOLOR, ColorName.RED, ColorName.BLUE, 2, Action.DANCING, Pattern.STRIPED)
    assert build_caption(spec) == "a watercolor of two red figures dancing on a blue striped background"
    assert parse_caption("  A Watercolor of two red figures dancing on a blue striped background. ") == spec


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("a cat on a mat", "not a mannequin caption"),
        ("a photo of two red figure standing on a blue background", "singular and plural"),
        ("a photo of a orange figure standing on a blue background", "canonical form"),
        ("a photo of a red figure standing on a red background", "both red"),
        ("a shadow play of a red figure standing on a white glowing background", "black silhouettes"),
    ],
)
def test_parse_caption_rejects_bad_text(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_caption(text)


def test_caption_spec_validates():
    with pytest.raises(ValueError, match="count must be between 1 and 3"):
        CaptionSpec(Style.PHOTO, ColorName.RED, ColorName.BLUE, 4)
    with pytest.raises(ValueError, match="style='comic'"):
        CaptionSpec("comic", ColorName.RED, ColorName.BLUE, 1)


def test_named_colours_are_far_apart_in_cielab():
    rgb = np.array([list(COLOR_RGB.values())], dtype=np.float32) / 255.0
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)[0]
    distances = [np.linalg.norm(a - b) for a, b in itertools.combinations(lab, 2)]
    assert min(distances) >= 40.0


# -------------------------------------------------------------------------------------------------- kinematics


def test_sampled_angles_respect_anatomical_limits():
    rng = np.random.default_rng(1)
    for action in Action:
        for _ in range(50):
            angles = sample_angles(rng, action)
            assert angles.within_limits()
    assert JointAngles(elbow_flexion=(170.0, -5.0)).clipped().elbow_flexion == (150.0, 0.0)
    assert ANGLE_LIMITS["elbow_flexion"] == (0.0, 150.0)


def test_forward_kinematics_keeps_segment_lengths():
    rng = np.random.default_rng(2)
    for action in Action:
        shape = sample_body_shape(rng)
        points = pose_skeleton(shape, sample_angles(rng, action)).points
        for (a, b), length in {(5, 7): shape.upper_arm, (8, 10): shape.forearm, (11, 13): shape.thigh}.items():
            assert np.linalg.norm(points[a] - points[b]) == pytest.approx(length)
        assert np.linalg.norm(points[14] - points[16]) == pytest.approx(shape.shank)


def test_coco_left_is_image_right_when_facing_the_viewer():
    skeleton = pose_skeleton(BodyShape(), JointAngles())
    xy, _, face = project(skeleton, View(yaw=0.0, roll=0.0))
    for left, right in ((5, 6), (7, 8), (11, 12), (15, 16), (1, 2), (3, 4)):
        assert xy[left, 0] > xy[right, 0]
    assert face.all() and xy[0, 1] < xy[5, 1] < xy[11, 1] < xy[15, 1]  # head up, feet down
    xy, _, face = project(skeleton, View(yaw=180.0, roll=0.0))  # seen from behind: mirrored, face hidden
    assert xy[5, 0] < xy[6, 0] and face.tolist() == [False, False, False, True, True]
    xy, _, face = project(skeleton, View(yaw=90.0, roll=0.0))  # profile facing right: left ear hidden
    assert face.tolist() == [True, False, True, False, True] and xy[0, 0] > xy[17, 0]
    xy, _, _ = project(skeleton, View(yaw=0.0, roll=180.0))
    assert xy[0, 1] > xy[15, 1]  # upside down


# ------------------------------------------------------------------------------------------------------ scenes


@pytest.fixture(scope="module")
def scenes():
    return [make_scene(i, seed=3, size=128) for i in range(150)]


def test_scene_labels_follow_the_rules(scenes):
    ears_hidden = truncated = occluded = tilted = 0
    for scene in scenes:
        assert len(scene.figures) == scene.spec.count
        for figure in scene.figures:
            kpts = figure.keypoints
            labelled = kpts[:, 2] > 0
            assert set(np.unique(kpts[:, 2])) <= {0.0, 1.0}
            inside = (kpts[:, 0] >= 0) & (kpts[:, 0] < scene.size) & (kpts[:, 1] >= 0) & (kpts[:, 1] < scene.size)
            assert inside[labelled].all()
            assert (labelled & ~figure.occluded).sum() >= 3
            assert not (figure.occluded & ~labelled).any()
            assert 0.3 * scene.size <= figure.height <= 0.95 * scene.size
            ears_hidden += int((inside[[3, 4]] & ~labelled[[3, 4]]).any())
            truncated += int((~inside).any())
            occluded += int(figure.occluded.any())
            tilted += int(abs((figure.view.roll + 180) % 360 - 180) > 12)
    assert min(ears_hidden, truncated, occluded, tilted) >= 5, (ears_hidden, truncated, occluded, tilted)


def test_every_visible_joint_lands_on_a_figure(scenes):
    checked, smallest = 0, 255
    for scene in scenes[:80]:
        image = render_scene(scene).astype(np.int16)
        background = render_scene(scene, with_figures=False).astype(np.int16)
        for figure in scene.figures:
            for x, y in figure.keypoints[(figure.keypoints[:, 2] > 0) & ~figure.occluded, :2]:
                difference = int(np.abs(image[int(y), int(x)] - background[int(y), int(x)]).max())
                smallest = min(smallest, difference)
                checked += 1
    assert checked > 500 and smallest >= 12, (checked, smallest)


def test_rendering_is_deterministic_and_any_size_works(scenes):
    for scene in scenes[:10]:
        assert np.array_equal(render_scene(scene), render_scene(scene))
    a = sample_scene(np.random.default_rng(7), size=72)
    b = sample_scene(np.random.default_rng(7), size=72)
    assert np.array_equal(render_scene(a), render_scene(b)) and render_scene(a).shape == (72, 72, 3)
    for size in (32, 256):
        image = render_scene(sample_scene(np.random.default_rng(5), size=size))
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
    for size in (30, 100, 2048):
        with pytest.raises(ValueError, match="multiple of 8 between 32 and 1024"):
            sample_scene(np.random.default_rng(0), size=size)


def test_marking_tone_darkens_colours_and_lightens_black():
    red = np.array(COLOR_RGB[ColorName.RED], dtype=float)
    assert np.allclose(marking_tone(red), red * MARK_DARKEN)
    black = np.array(COLOR_RGB[ColorName.BLACK], dtype=float)
    assert (marking_tone(black) > black + 50).all()
    for figure, background in itertools.product(COLOR_RGB.values(), COLOR_RGB.values()):
        if figure != background:  # the tone stays apart from any other caption colour behind it
            assert np.abs(marking_tone(figure, background) - background).max() >= 45, (figure, background)


def test_mark_left_changes_only_the_tone_of_the_left_limbs():
    luma = np.array([0.299, 0.587, 0.114])
    checked = 0
    for index in range(40):
        plain, marked = make_scene(index, seed=3, mark_left=False), make_scene(index, seed=3)
        assert marked.caption == plain.caption
        for f, g in zip(plain.figures, marked.figures, strict=True):
            assert np.array_equal(f.keypoints, g.keypoints) and np.array_equal(f.occluded, g.occluded)
        assert not any(p.marked for p in plain.parts)
        assert [p.marked for p in marked.parts] == [p.name.startswith("left_") for p in plain.parts]
        ids = rasterize_ids(marked.parts, marked.size)
        owned = np.array([False] + [p.marked for p in marked.parts])[ids].astype(np.uint8)  # visible marked pixels
        inside = cv2.erode(owned, np.ones((3, 3), np.uint8)) > 0
        footprint = np.zeros_like(owned)  # everything the marked parts cover, hidden or not
        for part in marked.parts:
            if part.marked:
                draw_part(footprint, part, 1, grow=1.0)
        far = cv2.dilate(footprint, np.ones((7, 7), np.uint8)) == 0
        a, b = render_scene(plain).astype(float), render_scene(marked).astype(float)
        assert np.abs(a - b)[far].max() <= 1  # the rest of the image is untouched
        if inside.sum() < 15:
            continue
        ratio = (b[inside] @ luma).mean() / (a[inside] @ luma).mean()
        assert ratio > 1.3 or ratio < 0.8, (index, marked.caption, ratio)
        checked += 1
    assert checked >= 25


# ------------------------------------------------------------------------------------------------------ writer


def test_same_seed_gives_identical_bytes_other_seed_differs(worlds):
    a, a_again, b = _files(worlds / "a"), _files(worlds / "a_again"), _files(worlds / "b")
    assert a == a_again
    assert len(a) == 2 * N_WORLD + 4
    jpegs = [k for k in a if k.endswith(".jpg")]
    assert not any(a[k] == b.get(k) for k in jpegs)


def test_marked_world_has_the_same_labels_and_other_images(worlds):
    marked, a = _files(worlds / "a"), _files(worlds / "a_plain")
    assert a.keys() == marked.keys()
    for name in a:
        if name.endswith(".jpg"):
            continue
        if name == INFO_FILE:
            info = json.loads(marked[name])
            assert info["mark_left"] is True and json.loads(a[name])["mark_left"] is False
        else:
            assert a[name] == marked[name], name
    assert sum(a[k] != marked[k] for k in a if k.endswith(".jpg")) >= N_WORLD - 2


def test_layout_mapping_and_pose_files(worlds):
    root = worlds / "a"
    train = json.loads((root / TRAIN_MAPPING).read_text())
    val = json.loads((root / VALIDATION_MAPPING).read_text())
    assert len(val) == math.floor(N_WORLD * VAL_WORLD) and len(train) + len(val) == N_WORLD
    assert not set(train) & set(val)
    pattern = re.compile(r"images/(real_human|2D_virtual_human)/(\w+)/(\d{12})\.jpg")
    for key, entry in {**train, **val}.items():
        match = pattern.fullmatch(entry["img_path"])
        assert match and match[3] == key
        style = parse_caption(entry["prompt"]).style
        assert (match[1], match[2]) == (style.category, style.scenario)
        assert entry["pose_path"] == "pose/" + entry["img_path"][len("images/") : -len(".jpg")] + ".npz"
        image = cv2.imread(str(root / entry["img_path"]))
        assert image.shape == (SIZE_WORLD, SIZE_WORLD, 3)
        pose = read_humansd_npz(root / entry["pose_path"])
        assert (pose.width, pose.height) == (SIZE_WORLD, SIZE_WORLD)
        assert 1 <= len(pose.persons) <= 3 and all(p.score == 1.0 for p in pose.persons)
        records = np.load(root / entry["pose_path"], allow_pickle=True)["arr_0"]  # the original loader
        assert records[0]["keypoints"].shape == (17, 3) and records[0]["keypoints"].dtype == np.float32
        assert {"keypoints", "score", "area"} <= set(records[0])
    assert json.loads((root / INFO_FILE).read_text())["n_val"] == len(val)


def test_validation_coco_matches_the_npz_labels(worlds):
    root = worlds / "a"
    coco = json.loads((root / VALIDATION_COCO).read_text())
    val = json.loads((root / VALIDATION_MAPPING).read_text())
    assert [img["id"] for img in coco["images"]] == [int(k) for k in val]
    by_image: dict[int, list] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for key, entry in val.items():
        pose = read_humansd_npz(root / entry["pose_path"])
        anns = by_image[int(key)]
        assert len(anns) == len(pose.persons)
        for ann, person in zip(anns, pose.persons):
            kpts = np.array(ann["keypoints"], dtype=np.float32).reshape(17, 3)
            assert np.array_equal(kpts[:, 2] > 0, person.keypoints[:, 2] > 0)
            labelled = kpts[:, 2] > 0
            np.testing.assert_allclose(kpts[labelled, :2], person.keypoints[labelled, :2], atol=1e-4)
            assert ann["area"] > 0 and ann["num_keypoints"] == labelled.sum()


def test_extending_n_keeps_earlier_images(worlds, tmp_path):
    write_mannequin_world(tmp_path / "short", 12, size=SIZE_WORLD, seed=0, val_fraction=VAL_WORLD)
    short, full = _files(tmp_path / "short"), _files(worlds / "a")
    media = [k for k in short if k.endswith((".jpg", ".npz"))]
    assert len(media) == 24 and all(short[k] == full[k] for k in media)
    assert [i for i in range(12) if is_validation(i, VAL_WORLD)] == [4, 9]


# ------------------------------------------------------------------------------------------------------ script


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--size", "30"], "multiple of 8 between 32 and 1024; got 30"),
        (["--size", "100"], "got 100"),
        (["--size", "2048"], "got 2048"),
        (["--n", "0"], "n must be a positive number of images; got 0"),
        (["--val-fraction", "0.6"], "val_fraction must be between 0 and 0.5; got 0.6"),
        (["--val-fraction", "-0.1"], "got -0.1"),
        (["--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_script_rejects_bad_input(tmp_path, capsys, args, fragment):
    out = tmp_path / "world"
    with pytest.raises(SystemExit) as exit_info:
        _load_script().main(["--out", str(out), "--n", "4", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_script_refuses_non_empty_dir_then_overwrites(tmp_path, capsys):
    script = _load_script()
    out = tmp_path / "world"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--out", str(out), "--n", "3", "--size", "32"])
    assert exit_info.value.code == 2 and "is not empty; pass --overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    script.main(["--out", str(out), "--n", "3", "--size", "32", "--val-fraction", "0.5", "--overwrite"])
    assert (out / "keep.txt").read_text() == "mine"
    assert json.loads((out / INFO_FILE).read_text())["mark_left"] is True  # the shipped world's look by default
    unmarked = ["--out", str(out), "--n", "3", "--size", "32", "--val-fraction", "0.5", "--overwrite", "--no-mark-left"]
    script.main(unmarked)
    assert json.loads((out / INFO_FILE).read_text())["mark_left"] is False
    assert len(json.loads((out / VALIDATION_MAPPING).read_text())) == 1


def test_examples_script_writes_the_captioned_grid(tmp_path):
    spec = importlib.util.spec_from_file_location("examples", REPO / "scripts/render_mannequin_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "grid.png"
    assert module.main(["--out", str(out), "--indices", "1", "2", "3", "--size", "64", "--columns", "2"]) == 0
    grid = cv2.imread(str(out))
    assert grid.shape == (2 * (64 + 2 * 13 + 12), 2 * 64 + 4, 3)
    with pytest.raises(SystemExit):
        module.main(["--out", str(out), "--size", "60"])
