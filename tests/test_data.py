"""Tests of the HumanSD dataset, its augmentations, the data module and the synthetic dataset writer."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader

from ldm.config import instantiate
from ldm.data import humansd
from ldm.data.augment import build_transform
from ldm.data.humansd import HumanPoseDataModule, HumanPoseDataset, collate_batch, seed_worker
from ldm.data.keys import BatchKey
from ldm.data.synthetic import BACKGROUND_COLORS, VALIDATION_MAPPING, write_tiny_dataset
from ldm.pose.keypoints import COCO_FLIP_INDEX, HUMANSD_LIMBS

SIZE = 64
NO_AUG = dict(hflip_p=0.0, vflip_p=0.0, rotate_p=0.0, color_p=0.0, brightness_contrast_p=0.0)


@pytest.fixture(scope="module")
def train_map(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"), n=8, size=SIZE, seed=0)


def _dataset(map_file, **kwargs) -> HumanPoseDataset:
    return HumanPoseDataset(map_file=map_file, image_size=SIZE, **kwargs)


def _mapping(map_file: Path) -> dict:
    return json.loads(Path(map_file).read_text())


def _assert_items_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
        else:
            assert a[key] == b[key]


def _items_differ(a: dict, b: dict) -> bool:
    return not (
        torch.equal(a[BatchKey.IMAGE], b[BatchKey.IMAGE]) and torch.equal(a[BatchKey.KEYPOINTS], b[BatchKey.KEYPOINTS])
    )


# --- synthetic writer and layout -------------------------------------------------------------------------------


def test_tiny_dataset_layout_and_determinism(train_map: Path, tmp_path: Path) -> None:
    root = train_map.parent
    train, val = _mapping(train_map), _mapping(root / VALIDATION_MAPPING)
    assert (len(train), len(val)) == (6, 2) and not train.keys() & val.keys()
    entry = train["000000000001"]
    assert entry["img_path"] == "images/2D_virtual_human/watercolor/000000000001.jpg"
    assert entry["pose_path"] == "pose/2D_virtual_human/watercolor/000000000001.npz"
    assert all((root / e["img_path"]).is_file() and (root / e["pose_path"]).is_file() for e in train.values())
    again = write_tiny_dataset(tmp_path, n=8, size=SIZE, seed=0)
    assert again.read_bytes() == train_map.read_bytes()
    for rel in (entry["img_path"], entry["pose_path"]):
        assert (tmp_path / rel).read_bytes() == (root / rel).read_bytes()


def test_tiny_dataset_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        write_tiny_dataset(tmp_path, n=1)
    with pytest.raises(ValueError, match="persons must be"):
        write_tiny_dataset(tmp_path, persons=(2, 1))


def test_reads_layout_prompts_paths_and_scenarios(train_map: Path) -> None:
    ds = _dataset(train_map, augment=False)
    mapping = list(_mapping(train_map).values())
    assert len(ds) == 6
    for i in (0, 1):
        item = ds[i]
        assert item[BatchKey.CAPTION] == mapping[i]["prompt"]
        assert item[BatchKey.PATH] == mapping[i]["img_path"]
    assert [ds.scenario(i) for i in range(3)] == ["sketch", "watercolor", "sketch"]
    assert ds.scenario(-1) == "watercolor"
    with pytest.raises(IndexError, match="out of range"):
        ds.scenario(6)
    assert len(_dataset(train_map, max_items=2)) == 2


def test_combines_mapping_files_with_their_own_base_paths(train_map: Path, tmp_path: Path) -> None:
    root = train_map.parent
    other = write_tiny_dataset(tmp_path / "other", n=4, size=SIZE, seed=1, scenarios=("cosplay",))
    ds = HumanPoseDataset(
        map_file=[str(train_map), {"map_file": root / VALIDATION_MAPPING, "base_path": root}, other],
        image_size=SIZE,
        augment=False,
    )
    assert len(ds) == 6 + 2 + 3
    first_val = next(iter(_mapping(root / VALIDATION_MAPPING).values()))
    assert ds[6][BatchKey.PATH] == first_val["img_path"]
    assert ds[8][BatchKey.PATH].startswith("images/real_human/cosplay/")
    assert ds.scenario(8) == "cosplay"


# --- items ------------------------------------------------------------------------------------------------------


def test_item_keys_shapes_dtypes_and_ranges(train_map: Path) -> None:
    item = _dataset(train_map, seed=0)[1]
    assert set(item) == set(BatchKey) - {BatchKey.IMAGE_MOMENTS, BatchKey.POSE_MOMENTS}  # those are a latent cache's
    for key in (BatchKey.IMAGE, BatchKey.POSE_MAP):
        assert item[key].shape == (3, SIZE, SIZE) and item[key].dtype == torch.float32
        assert item[key].min() >= -1 and item[key].max() <= 1
    assert item[BatchKey.POSE_MAP].min() == -1  # black background
    kpts = item[BatchKey.KEYPOINTS]
    assert kpts.shape == (10, 17, 3) and kpts.dtype == torch.float32
    missing = kpts[..., 2] == 0
    assert torch.all(kpts[missing][:, :2] == -1)
    assert torch.all((kpts[~missing][:, :2] >= 0) & (kpts[~missing][:, :2] < SIZE))
    assert isinstance(item[BatchKey.CAPTION], str) and isinstance(item[BatchKey.PATH], str)


def _drawn_joints(kpts: np.ndarray) -> list[tuple[int, int]]:
    """(x, y) of joints that are an endpoint of a limb whose two joints are both present."""
    points = []
    for person in kpts:
        for a, b in HUMANSD_LIMBS:
            if person[a, 2] > 0.02 and person[b, 2] > 0.02:
                points += [(int(person[j, 0]), int(person[j, 1])) for j in (a, b)]
    return points


@pytest.mark.parametrize("forced", ["hflip_p", "vflip_p", "rotate_p"])
def test_keypoints_follow_the_image(train_map: Path, forced: str) -> None:
    ds = _dataset(train_map, seed=1, **{**NO_AUG, forced: 1.0})
    mapping = list(_mapping(train_map).values())
    n_checked = 0
    for i in range(len(ds)):
        item = ds[i]
        kpts = item[BatchKey.KEYPOINTS].numpy()
        present = kpts[..., 2] > 0
        assert np.all((kpts[present][:, :2] >= 0) & (kpts[present][:, :2] < SIZE)), "keypoints outside the crop"
        image = ((item[BatchKey.IMAGE].permute(1, 2, 0).numpy() + 1) * 127.5).round()
        pose_map = item[BatchKey.POSE_MAP].permute(1, 2, 0).numpy()
        background = np.array(
            next(c for name, c in BACKGROUND_COLORS.items() if f"a {name} background" in mapping[i]["prompt"])
        )
        for x, y in _drawn_joints(kpts):
            assert pose_map[y, x].max() > -1, f"item {i}: black pose map at joint ({x}, {y})"
            assert np.abs(image[y, x] - background).max() > 40, f"item {i}: joint ({x}, {y}) not on the figure"
            n_checked += 1
    assert n_checked > 100


def test_rotation_moves_each_joint_once_and_rigidly(train_map: Path) -> None:
    # albumentations 2.x Rotate would add mirrored copies of keypoints for a reflecting border; a slot keeps one.
    transform = build_transform(SIZE, **{**NO_AUG, "rotate_p": 1.0}, seed=0)
    edge_midpoints = np.array([[32.0, 3.0], [3.0, 32.0], [60.0, 32.0], [32.0, 60.0]])  # copies would land in view
    out = transform(image=np.zeros((SIZE, SIZE, 3), np.uint8), keypoints=edge_midpoints, slot=np.arange(4))
    assert out["slot"].tolist() == [0, 1, 2, 3]
    plain = _dataset(train_map, augment=False)[0][BatchKey.KEYPOINTS]  # item 0 is square: no resize, no crop
    rotated = _dataset(train_map, seed=2, **{**NO_AUG, "rotate_p": 1.0})[0][BatchKey.KEYPOINTS]
    for before, after in zip(plain, rotated):
        both = (before[:, 2] > 0) & (after[:, 2] > 0)
        if before[:, 2].sum() == 0:
            continue
        assert both.sum() >= 2
        torch.testing.assert_close(torch.pdist(after[both, :2]), torch.pdist(before[both, :2]), atol=0.05, rtol=0)
    assert not torch.allclose(rotated[..., :2], plain[..., :2])


def test_horizontal_flip_mirrors_x_and_optionally_swaps_joints(train_map: Path) -> None:
    plain = _dataset(train_map, augment=False)[0][BatchKey.KEYPOINTS]
    flipped = _dataset(train_map, seed=0, **{**NO_AUG, "hflip_p": 1.0})[0][BatchKey.KEYPOINTS]
    present = plain[..., 2] > 0
    assert torch.equal(flipped[..., 2], plain[..., 2])  # original behaviour: labels are not swapped
    torch.testing.assert_close(flipped[..., 0][present], SIZE - 1 - plain[..., 0][present])
    torch.testing.assert_close(flipped[..., 1][present], plain[..., 1][present])
    swapped = _dataset(train_map, seed=0, swap_flipped_joints=True, **{**NO_AUG, "hflip_p": 1.0})[0]
    torch.testing.assert_close(swapped[BatchKey.KEYPOINTS], flipped[:, list(COCO_FLIP_INDEX)])
    # Two flips are a rotation by 180 degrees, not a mirror: no swap.
    both = _dataset(train_map, seed=0, swap_flipped_joints=True, **{**NO_AUG, "hflip_p": 1.0, "vflip_p": 1.0})[0]
    torch.testing.assert_close(both[BatchKey.KEYPOINTS][..., 2], plain[..., 2])


def test_joint_selection_threshold_person_limit_and_out_of_image(tmp_path: Path) -> None:
    root = write_tiny_dataset(tmp_path, n=2, size=SIZE).parent
    entry = next(iter(_mapping(root / "mapping_file_training.json").values()))
    kpts = np.full((3, 17, 3), 0.9, dtype=np.float32)
    kpts[..., :2] = np.linspace(5, 50, 17)[None, :, None]
    kpts[0, 0, :2] = (-4.0, 10.0)  # outside: dropped (the original kept it at (0, 0))
    kpts[0, 1, 0] = SIZE + 3  # outside
    kpts[0, 2, 2] = 0.02  # not above the threshold
    # The original's file format: an object array of MMPose person dicts, no image size stored.
    records = np.empty(3, dtype=object)
    records[:] = [{"keypoints": k, "score": np.float32(0.8), "area": np.float32(1.0)} for k in kpts]
    with (root / entry["pose_path"]).open("wb") as f:
        np.savez(f, records)
    out = _dataset(root / "mapping_file_training.json", augment=False, max_person_num=2)[0][BatchKey.KEYPOINTS]
    assert out.shape == (2, 17, 3)
    for joint in (0, 1, 2):
        assert out[0, joint].tolist() == [-1.0, -1.0, 0.0]
    torch.testing.assert_close(out[0, 3:], torch.from_numpy(kpts[0, 3:]))
    torch.testing.assert_close(out[1], torch.from_numpy(kpts[1]))


# --- determinism --------------------------------------------------------------------------------------------


def test_deterministic_mode_gives_identical_items(train_map: Path) -> None:
    a, b = _dataset(train_map, augment=False), _dataset(train_map, augment=False, seed=123)
    for i in (0, 1):
        _assert_items_equal(a[i], a[i])
        _assert_items_equal(a[i], b[i])


def test_seeded_augmentation_reproduces(train_map: Path) -> None:
    strong = dict(hflip_p=0.5, vflip_p=0.5, rotate_p=0.5, color_p=0.5)
    a, b, c = (_dataset(train_map, seed=s, **strong) for s in (7, 7, 8))
    items_a = [a[i] for i in range(len(a))]
    for i, item in enumerate(items_a):
        _assert_items_equal(item, b[i])
    assert any(_items_differ(item, c[i]) for i, item in enumerate(items_a))
    a.reseed(7)
    _assert_items_equal(a[0], items_a[0])


def test_seed_worker_reseeds_wrapped_datasets(train_map: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _dataset(train_map, seed=123, rotate_p=1.0)[0]
    ds = _dataset(train_map, seed=5, rotate_p=1.0)
    info = SimpleNamespace(id=0, seed=2**32 + 123, dataset=ConcatDataset([ds]))
    monkeypatch.setattr(humansd, "get_worker_info", lambda: info)
    seed_worker(0)
    _assert_items_equal(ds[0], reference)


# --- unreadable files ---------------------------------------------------------------------------------------


def test_corrupt_image_and_missing_pose_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    map_file = write_tiny_dataset(tmp_path, n=8, size=SIZE)
    entries = list(_mapping(map_file).values())
    (tmp_path / entries[1]["img_path"]).write_bytes(b"not a jpeg")
    (tmp_path / entries[3]["pose_path"]).unlink()
    ds = _dataset(map_file, augment=False)
    with caplog.at_level(logging.WARNING, logger="ldm.data.humansd"):
        batches = list(DataLoader(ds, batch_size=2, num_workers=0, collate_fn=collate_batch))
    assert ds.skipped == 2
    paths = [p for batch in batches for p in batch[BatchKey.PATH]]
    assert paths == [entries[i]["img_path"] for i in (0, 2, 2, 4, 4, 5)]  # deterministic: the next index
    assert entries[1]["img_path"] in caplog.text and entries[3]["pose_path"] in caplog.text


def test_all_unreadable_raises(tmp_path: Path) -> None:
    map_file = write_tiny_dataset(tmp_path, n=2, size=SIZE)
    entry = next(iter(_mapping(map_file).values()))
    (tmp_path / entry["img_path"]).unlink()
    with pytest.raises(RuntimeError, match="No readable item"):
        _dataset(map_file)[0]


# --- validation errors --------------------------------------------------------------------------------------


def test_missing_map_file_and_base_path(train_map: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Mapping file not found: .*nope.json"):
        _dataset(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match="base path not found.*no_such_dir"):
        _dataset(train_map, base_path=tmp_path / "no_such_dir")
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        _dataset([{"map_file": train_map, "base_path": tmp_path / "no_such_dir"}])


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({}, "is empty"),
        ([], "must hold a JSON object"),
        ({"k1": {"img_path": "a.jpg", "pose_path": "a.npz"}}, r"entry 'k1' lacks \['prompt'\]"),
        ({"k2": {"img_path": "a.jpg", "pose_path": "a.npz", "prompt": 3}}, r"entry 'k2' fields \['prompt'\]"),
    ],
)
def test_bad_mapping_content(tmp_path: Path, content: object, match: str) -> None:
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=match):
        _dataset(path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"skeleton_width": 0}, "skeleton_width must be a positive integer; got 0"),
        ({"image_size": 60}, "multiple of 8"),
        ({"hflip_p": 1.5}, r"hflip_p must be a probability in \[0, 1\]; got 1.5"),
        ({"max_items": 0}, "max_items must be a positive integer"),
        ({"map_file": []}, "empty list"),
    ],
)
def test_bad_options(train_map: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HumanPoseDataset(**{"map_file": train_map, "image_size": SIZE, **kwargs})


# --- data module --------------------------------------------------------------------------------------------


def test_data_module_batches(train_map: Path) -> None:
    val_map = train_map.parent / VALIDATION_MAPPING
    dm = HumanPoseDataModule(
        {"map_file": str(train_map), "image_size": SIZE},
        {"map_file": str(val_map), "image_size": SIZE, "augment": False},
        batch_size=4,
        seed=0,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch[BatchKey.IMAGE].shape == (4, 3, SIZE, SIZE) and batch[BatchKey.IMAGE].dtype == torch.float32
    assert batch[BatchKey.POSE_MAP].shape == (4, 3, SIZE, SIZE)
    assert batch[BatchKey.KEYPOINTS].shape == (4, 10, 17, 3)
    assert len(batch[BatchKey.CAPTION]) == 4 and all(isinstance(c, str) for c in batch[BatchKey.CAPTION])
    val_paths = [p for b in dm.val_dataloader() for p in b[BatchKey.PATH]]
    assert val_paths == [e["img_path"] for e in _mapping(val_map).values()]

    again = HumanPoseDataModule({"map_file": str(train_map), "image_size": SIZE}, batch_size=4, seed=0)
    again.setup("fit")
    _assert_items_equal(batch, next(iter(again.train_dataloader())))
    assert again.val_dataloader() == []


def test_data_module_rejects_unknown_dataset_keys(train_map: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['size'\]"):
        HumanPoseDataModule({"map_file": str(train_map), "size": SIZE})
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        HumanPoseDataModule({"map_file": str(train_map)}, batch_size=0)


def test_data_module_workers_are_reproducible_and_distinct(train_map: Path, tmp_path: Path) -> None:
    # Four copies of one item: batch 0 comes from worker 0 and batch 1 from worker 1, so equal batches would mean
    # both workers inherited the same augmentation stream.
    entry = next(iter(_mapping(train_map).values()))
    map_file = tmp_path / "same.json"
    map_file.write_text(json.dumps({f"k{i}": entry for i in range(4)}))
    config = {"map_file": str(map_file), "base_path": str(train_map.parent), "image_size": SIZE, "rotate_p": 1.0}

    def batches() -> list[dict]:
        dm = HumanPoseDataModule(config, batch_size=2, num_workers=2, seed=3)
        dm.setup("fit")
        return list(dm.train_dataloader())

    first, second = batches(), batches()
    for batch_a, batch_b in zip(first, second, strict=True):
        _assert_items_equal(batch_a, batch_b)
    assert not torch.equal(first[0][BatchKey.IMAGE], first[1][BatchKey.IMAGE])


def test_data_module_from_config(train_map: Path) -> None:
    cfg = {
        "target": "ldm.data.humansd.HumanPoseDataModule",
        "params": {"train": {"map_file": str(train_map), "image_size": SIZE, "max_items": 2}, "batch_size": 2},
    }
    dm = instantiate(cfg)
    dm.setup("fit")
    assert len(dm.train_dataset) == 2 and dm.train_dataset.augment
