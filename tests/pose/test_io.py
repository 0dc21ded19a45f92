"""Pose file formats: round trips, compatibility with the original loader, and every bad-input path."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ldm.pose.io import (
    PoseFormat,
    detect_pose_format,
    load_pose,
    read_coco_pose,
    read_coco_poses,
    read_humansd_npz,
    read_openpose_json,
    read_plain_json,
    save_pose,
    write_coco_poses,
    write_humansd_npz,
    write_openpose_json,
    write_plain_json,
)
from ldm.pose.keypoints import Person, Pose

REPO = Path(__file__).resolve().parents[2]


def make_pose(width: int = 640, height: int = 480, seed: int = 0) -> Pose:
    """Two persons inside the image; one hidden joint stored as (0, 0, 0)."""
    rng = np.random.default_rng(seed)
    persons = []
    for score in (0.9, 0.35):
        kpts = np.stack(
            [rng.uniform(0, width - 1, 17), rng.uniform(0, height - 1, 17), rng.uniform(0.1, 1, 17)], axis=1
        ).astype(np.float32)
        kpts[3] = 0
        persons.append(Person(kpts, score=score))
    return Pose(persons, width=width, height=height)


def assert_pose_equal(a: Pose, b: Pose, *, person_scores: bool = True) -> None:
    assert (a.width, a.height, len(a.persons)) == (b.width, b.height, len(b.persons))
    np.testing.assert_array_equal(a.to_array(), b.to_array())
    if person_scores:
        assert [p.score for p in a.persons] == pytest.approx([p.score for p in b.persons], rel=1e-7)


def write_npz(path: Path, records: object, **extra: object) -> Path:
    """A pose file the way MMPose / HumanSD wrote them: np.savez(path, list_of_dicts)."""
    arr = np.empty(len(records), dtype=object)  # type: ignore[arg-type]
    for i, r in enumerate(records):  # type: ignore[arg-type]
        arr[i] = r
    np.savez(path, arr, **extra)
    return path


def record(kpts: object, score: float = 0.8) -> dict:
    return {"keypoints": np.asarray(kpts, dtype=np.float32), "score": np.float32(score), "area": np.float32(1)}


# ------------------------------------------------------------------------------------------------- round trips


def test_plain_json_round_trip(tmp_path: Path) -> None:
    pose = make_pose()
    pose.persons[0].bbox = (1.5, 2.0, 30.25, 40.0)
    write_plain_json(pose, tmp_path / "p.json")
    back = read_plain_json(tmp_path / "p.json")
    assert_pose_equal(back, pose)
    assert back.persons[0].bbox == (1.5, 2.0, 30.25, 40.0) and back.persons[1].bbox is None
    data = json.loads((tmp_path / "p.json").read_text())
    assert set(data) == {"width", "height", "persons"} and len(data["persons"][0]["keypoints"]) == 17


def test_npz_round_trip_and_original_loader(tmp_path: Path) -> None:
    pose = make_pose()
    write_humansd_npz(pose, tmp_path / "p.npz")
    assert_pose_equal(read_humansd_npz(tmp_path / "p.npz"), pose)
    # The way HumanSD's dataset and pose2img.py read it.
    results = np.load(tmp_path / "p.npz", allow_pickle=True)["arr_0"]
    assert len(results) == 2
    for i, person in enumerate(pose.persons):
        kpts = results[i]["keypoints"]
        assert kpts.dtype == np.float32 and kpts.shape == (17, 3)
        np.testing.assert_array_equal(kpts, person.keypoints)
        assert results[i]["score"] == np.float32(person.score) and "area" in results[i]
    # numpy 1.x (the original environment) has no numpy._core: the pickle must name numpy.core globals.
    with zipfile.ZipFile(tmp_path / "p.npz") as archive:
        payload = archive.read("arr_0.npy")
    assert b"numpy.core.multiarray" in payload and b"numpy._core" not in payload


def test_npz_empty_pose(tmp_path: Path) -> None:
    write_humansd_npz(Pose(width=300, height=200), tmp_path / "e.npz")
    assert len(np.load(tmp_path / "e.npz", allow_pickle=True)["arr_0"]) == 0
    back = load_pose(tmp_path / "e.npz")
    assert back.persons == [] and (back.width, back.height) == (300, 200)


def test_coco_round_trip_and_pycocotools(tmp_path: Path) -> None:
    pose = make_pose()
    write_coco_poses({3: pose, 7: Pose(width=10, height=20)}, tmp_path / "c.json")
    poses = read_coco_poses(tmp_path / "c.json")
    assert list(poses) == [3, 7] and poses[7].persons == [] and (poses[7].width, poses[7].height) == (10, 20)
    expected = pose.to_array()
    expected[..., 2] = (expected[..., 2] > 0).astype(np.float32)  # COCO keeps visibility only
    np.testing.assert_array_equal(poses[3].to_array(), expected)
    assert [p.score for p in poses[3].persons] == pytest.approx([0.9, 0.35])
    assert_pose_equal(read_coco_pose(tmp_path / "c.json", 3), poses[3])
    visibility = read_coco_poses(tmp_path / "c.json", keep_visibility=True)[3].to_array()[..., 2]
    assert set(np.unique(visibility)) == {0.0, 2.0}

    from pycocotools.coco import COCO

    coco = COCO(str(tmp_path / "c.json"))
    assert len(coco.getAnnIds(imgIds=[3])) == 2 and coco.loadAnns(1)[0]["num_keypoints"] == 16


def test_openpose_round_trip(tmp_path: Path) -> None:
    pose = make_pose()
    write_openpose_json(pose, tmp_path / "o.json")
    assert_pose_equal(read_openpose_json(tmp_path / "o.json"), pose, person_scores=False)
    person = json.loads((tmp_path / "o.json").read_text())["people"][0]["pose_keypoints_2d"]
    kpts = pose.persons[0].keypoints
    np.testing.assert_allclose(person[3:6], (kpts[5] + kpts[6]) / 2, rtol=1e-6)  # neck = shoulders' mean


def test_openpose_body25(tmp_path: Path) -> None:
    body25 = np.zeros((25, 3))
    body25[:, 0], body25[:, 1], body25[:, 2] = np.arange(25), 5, 0.5
    path = tmp_path / "b25.json"
    path.write_text(json.dumps({"people": [{"pose_keypoints_2d": body25.ravel().tolist()}]}))
    pose = read_openpose_json(path, width=100, height=100)
    assert pose.persons[0].keypoints[5, 0] == 5 and pose.persons[0].keypoints[11, 0] == 12  # l_shoulder, l_hip


@pytest.mark.parametrize("fmt", ["plain", "openpose", "coco", "humansd-npz"])
def test_save_and_load_pose_dispatch(tmp_path: Path, fmt: str) -> None:
    pose = make_pose()
    path = tmp_path / ("p.npz" if fmt == "humansd-npz" else "p.json")
    save_pose(pose, path, format=fmt)
    assert detect_pose_format(path) is PoseFormat(fmt)
    back = load_pose(path)
    assert (back.width, back.height, len(back.persons)) == (pose.width, pose.height, 2)
    np.testing.assert_array_equal(back.to_array()[..., :2], pose.to_array()[..., :2])


def test_save_pose_by_suffix(tmp_path: Path) -> None:
    save_pose(make_pose(), tmp_path / "a.json")
    save_pose(make_pose(), tmp_path / "sub" / "a.npz")
    assert detect_pose_format(tmp_path / "a.json") is PoseFormat.PLAIN
    assert detect_pose_format(tmp_path / "sub" / "a.npz") is PoseFormat.HUMANSD_NPZ
    with pytest.raises(ValueError, match=r"cannot tell the format of .*a\.txt from its suffix"):
        save_pose(make_pose(), tmp_path / "a.txt")
    with pytest.raises(ValueError, match="unknown format 'yaml'; expected one of"):
        save_pose(make_pose(), tmp_path / "a.json", format="yaml")


def test_shipped_example_poses() -> None:
    for name, persons in (("two_people.json", 2), ("demo_single.json", 1)):
        pose = load_pose(REPO / "assets" / "poses" / name)
        assert (pose.width, pose.height, len(pose.persons)) == (512, 512, persons)
        assert all(p.visible.all() and p.score > 0.05 for p in pose.persons)


# ------------------------------------------------------------------------------------------- size and clipping


def test_npz_size_inferred_from_extent(tmp_path: Path) -> None:
    kpts = np.full((17, 3), [10.0, 20.0, 0.9], dtype=np.float32)
    kpts[0] = [1100.0, 875.5, 0.9]
    kpts[1] = [5000.0, 5000.0, 0.0]  # hidden joints do not count
    path = write_npz(tmp_path / "mm.npz", [record(kpts)])
    pose = read_humansd_npz(path)
    assert (pose.width, pose.height) == (1101, 876)  # floor(max) + 1 keeps every visible joint inside
    assert pose.persons[0].visible.sum() == 16 and pose.persons[0].score == pytest.approx(0.8)
    assert (load_pose(path, width=2000, height=1000).width, read_humansd_npz(path, height=900).height) == (2000, 900)


def test_joints_outside_image_get_score_zero_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    kpts = np.full((17, 3), [10.0, 20.0, 0.9], dtype=np.float32)
    kpts[0], kpts[1], kpts[2] = [-0.5, 20, 0.9], [512.0, 20, 0.9], [10, 600, 0.0]  # the hidden one is not counted
    path = write_npz(tmp_path / "out.npz", [record(kpts)])
    with caplog.at_level(logging.WARNING, logger="ldm.pose.io"):
        pose = load_pose(path, width=512, height=512)
    assert "2 visible joint(s) outside the 512x512 image set to score 0" in caplog.text and str(path) in caplog.text
    np.testing.assert_array_equal(pose.persons[0].keypoints[:2], [[-0.5, 20, 0], [512, 20, 0]])  # coords kept
    assert pose.persons[0].visible.sum() == 14


def test_zero_persons_is_a_valid_empty_pose(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text('{"width": 64, "height": 32, "persons": []}')
    (tmp_path / "o.json").write_text('{"people": []}')
    assert load_pose(tmp_path / "p.json") == Pose(width=64, height=32)
    assert load_pose(tmp_path / "o.json").persons == []
    assert read_humansd_npz(write_npz(tmp_path / "e.npz", [])).persons == []


# ----------------------------------------------------------------------------------------------- bad input: npz


def _npz_from_npy_bytes(path: Path, npy: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("arr_0.npy", npy)
    return path


def test_npz_numpy1_pickles_load(tmp_path: Path) -> None:
    """Files written by numpy 1.x reference numpy.core.multiarray (renamed numpy._core in numpy 2)."""
    arr = np.empty(1, dtype=object)
    arr[0] = record(np.ones((17, 3)))
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(arr))
    # Protocol 3 names globals as plain text lines, so the module can be renamed in place.
    body = pickle.dumps(arr, protocol=3).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in body
    old = buf.getvalue() + body
    pose = read_humansd_npz(_npz_from_npy_bytes(tmp_path / "old.npz", old))
    np.testing.assert_array_equal(pose.persons[0].keypoints, np.ones((17, 3)))


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def test_npz_refuses_arbitrary_pickles(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write_npz(tmp_path / "evil.npz", [{"keypoints": np.zeros((17, 3)), "score": _Exploit(marker)}])
    with pytest.raises(ValueError, match=r"evil\.npz: 'arr_0' is not a plain array of pose dicts.*refusing"):
        read_humansd_npz(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("records", "match"),
    [
        (
            [record(np.zeros((17, 2)))],
            r"person 0 'keypoints' must have shape \(17, 3\) as \(x, y, score\); got \(17, 2\)",
        ),
        ([record(np.zeros((16, 3)))], r"got \(16, 3\)"),
        ([record(np.full((17, 3), np.nan))], "person 0 'keypoints' contains NaN or infinite values"),
        ([record(np.full((17, 3), np.inf))], "NaN or infinite"),
        ([record(np.zeros((17, 3)), score=float("nan"))], "person 0 'score' must be finite"),
        ([{"score": 1.0}], "person 0 must be a dict with a 'keypoints' entry"),
        ([np.zeros((17, 3))], "person 0 must be a dict with a 'keypoints' entry; got ndarray"),
    ],
)
def test_npz_bad_records(tmp_path: Path, records: list, match: str) -> None:
    path = write_npz(tmp_path / "bad.npz", records)
    with pytest.raises(ValueError, match=r"bad\.npz: .*" + match):
        read_humansd_npz(path)


def test_npz_bad_containers(tmp_path: Path) -> None:
    np.savez(tmp_path / "named.npz", poses=np.zeros(3))
    with pytest.raises(ValueError, match=r"named\.npz: no 'arr_0' array \(found \['poses'\]\)"):
        read_humansd_npz(tmp_path / "named.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk\.npz: not a readable \.npz archive"):
        load_pose(tmp_path / "junk.npz")
    np.savez(tmp_path / "numeric.npz", np.zeros((2, 17, 2)))
    with pytest.raises(ValueError, match=r"numeric 'arr_0' must have shape \(persons, 17, 3\); got \(2, 17, 2\)"):
        read_humansd_npz(tmp_path / "numeric.npz")
    with pytest.raises(ValueError, match="width must be a positive integer; got 0"):
        read_humansd_npz(write_npz(tmp_path / "ok.npz", []), width=0)
    with pytest.raises(FileNotFoundError, match="Pose file not found"):
        load_pose(tmp_path / "missing.npz")


def test_npz_numeric_array_is_accepted(tmp_path: Path) -> None:
    np.savez(tmp_path / "numeric.npz", np.full((2, 17, 3), [1, 2, 0.5]))
    pose = read_humansd_npz(tmp_path / "numeric.npz", width=8, height=8)
    assert len(pose.persons) == 2 and pose.persons[1].score == 1.0


# ---------------------------------------------------------------------------------------------- bad input: JSON


def _json(tmp_path: Path, data: object, name: str = "bad.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


ROW = [1.0, 2.0, 0.5]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"width": 8, "height": 8, "persons": [{"keypoints": [ROW] * 16}]}, r"persons\[0\] 'keypoints' must have"),
        ({"width": 8, "height": 8, "persons": [{"keypoints": [[1, 2]] * 17}]}, r"got \(17, 2\)"),
        ({"width": 8, "height": 8, "persons": [{"keypoints": [ROW] * 16 + [[1, 2]]}]}, "non-numeric or ragged"),
        ({"width": 8, "height": 8, "persons": [{"keypoints": [["a", 2, 3]] * 17}]}, "non-numeric or ragged"),
        ('{"width": 8, "height": 8, "persons": [{"keypoints": [[NaN, 2, 1]' + ", [1, 2, 1]" * 16 + "]}]}", "NaN"),
        ({"width": 8, "height": 8, "persons": [{"keypoints": [ROW] * 17, "score": "x"}]}, "'score' must be a number"),
        ({"width": 8, "height": 8, "persons": [{"keypoints": [ROW] * 17, "bbox": [1, 2]}]}, "'bbox' must be 4 finite"),
        ({"width": 8.5, "height": 8, "persons": []}, "width must be a positive integer; got 8.5"),
        ({"height": 8, "persons": []}, "'width' and 'height' are required"),
        ({"width": 8, "height": 8, "persons": [[ROW] * 17]}, r"persons\[0\] must be an object with 'keypoints'"),
    ],
)
def test_plain_json_bad_input(tmp_path: Path, data: object, match: str) -> None:
    with pytest.raises(ValueError, match=r"bad\.json: .*" + match):
        load_pose(_json(tmp_path, data))


def _coco(keypoints: list, **ann: object) -> dict:
    return {
        "images": [{"id": 1, "width": 64, "height": 64}],
        "annotations": [{"id": 1, "image_id": 1, "keypoints": keypoints, **ann}],
    }


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_coco([1, 2, 2] * 16 + [1, 2]), r"annotations\[0\] 'keypoints' must have shape \(51,\)"),
        (_coco([1, 2, 3] * 17), r"visibility flags must be 0, 1 or 2; got \[3.0\]"),
        (_coco([1, 2, 2] * 17, image_id=5), "refers to image_id 5, which is not in 'images'"),
        (_coco([1, 2, 2] * 17, bbox="x"), "'bbox' must be 4 finite numbers"),
        ({"images": [{"id": 1}], "annotations": []}, r"images\[0\] must have 'id', 'width' and 'height'"),
        ({"images": [{"id": "a", "width": 2, "height": 2}], "annotations": []}, "'id' must be an integer >= 0"),
        ({"images": [], "annotations": [{"image_id": 1}]}, "has no 'keypoints'"),
        ({"annotations": []}, "needs an 'images' list"),
    ],
)
def test_coco_bad_input(tmp_path: Path, data: dict, match: str) -> None:
    with pytest.raises(ValueError, match=r"bad\.json: .*" + match):
        read_coco_poses(_json(tmp_path, data))


def test_coco_crowd_skipped_and_image_selection(tmp_path: Path) -> None:
    data = _coco([10, 20, 2] * 17)
    data["annotations"].append({"id": 2, "image_id": 1, "keypoints": [0] * 51, "iscrowd": 1})
    data["images"].append({"id": 2, "width": 32, "height": 32})
    path = _json(tmp_path, data)
    assert len(read_coco_pose(path, 1).persons) == 1
    with pytest.raises(ValueError, match=r"bad\.json: holds 2 images; pass image_id="):
        read_coco_pose(path)
    with pytest.raises(ValueError, match="has no image with id 9"):
        read_coco_pose(path, 9)
    with pytest.raises(ValueError, match="COCO file holds 2 images; use read_coco_pose"):
        load_pose(path)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"people": [{"pose_keypoints_2d": [1.0] * 57}]}, r"54 \(BODY-18\) or 75 \(BODY_25\) numbers; got 57"),
        ({"people": [{"face_keypoints_2d": []}]}, "got NoneType"),
        ({"people": [{"pose_keypoints_2d": ["x"] * 54}]}, "non-numeric"),
        ({"people": [{"pose_keypoints_2d": [1] * 54}], "canvas_width": -4}, "width must be a positive integer"),
        ({"people": "none"}, "an OpenPose file needs a 'people' list"),
    ],
)
def test_openpose_bad_input(tmp_path: Path, data: dict, match: str) -> None:
    with pytest.raises(ValueError, match=r"bad\.json: .*" + match):
        read_openpose_json(_json(tmp_path, data))


def test_unknown_and_invalid_json(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown pose JSON \(top level: \['foo'\]\); expected a 'persons'"):
        load_pose(_json(tmp_path, {"foo": 1}))
    with pytest.raises(ValueError, match=r"x\.json: not valid UTF-8 JSON"):
        load_pose(_json(tmp_path, "{oops", name="x.json"))
    with pytest.raises(ValueError, match=r"unknown pose JSON \(top level: list\)"):
        load_pose(_json(tmp_path, [1, 2]))


def test_openpose_canvas_size_and_override(tmp_path: Path) -> None:
    path = _json(tmp_path, {"people": [], "canvas_width": 320, "canvas_height": 240}, name="c.json")
    assert (load_pose(path).width, load_pose(path).height) == (320, 240)
    assert load_pose(path, width=100).width == 100


def test_pickle_module_is_not_used_for_json(tmp_path: Path) -> None:
    """A .json that is really a pickle is rejected as JSON, never unpickled."""
    path = tmp_path / "p.json"
    path.write_bytes(pickle.dumps({"persons": []}))
    with pytest.raises(ValueError, match="not valid UTF-8 JSON"):
        load_pose(path)
