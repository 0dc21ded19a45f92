"""Pose-estimator training: heatmap/tag targets, the AE loss, the Lightning module, export and the script."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ldm.data.humansd import HumanPoseDataset, collate_batch
from ldm.data.keys import BatchKey
from ldm.data.synthetic import write_tiny_dataset
from ldm.pose.estimator import PoseEstimator, load_pose_config
from ldm.pose.keypoints import NUM_KEYPOINTS, Person
from ldm.pose.resize import compute_resize, map_keypoints_to_network, resize_batch_for_network
from ldm.training.pose_eval import CocoKeypointEvaluator
from ldm.training.pose_module import (
    PoseNetModule,
    check_pose_train_config,
    export_pose_weights,
    init_from_scratch,
    read_exported_pose_config,
)
from ldm.training.pose_targets import ae_loss, bottom_up_loss, compute_pose_targets, udp_scale

REPO = Path(__file__).resolve().parents[1]
TRAIN_CONFIG = REPO / "configs/tiny/mannequin-pose.yaml"
W16_POSE_CONFIG = REPO / "configs/pose/higherhrnet_tiny_mannequin_w16.yaml"  # what TRAIN_CONFIG trains
SHIPPED_POSE_CONFIG = REPO / "configs/pose/higherhrnet_tiny_mannequin.yaml"  # grown 1.5x wider from it


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: tiny convolutions gain nothing from more, and on a CPU shared with other jobs the
    OpenMP barriers of a second thread make every step several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _keypoints(joints: dict[int, tuple[float, float]], persons: int = 1) -> torch.Tensor:
    """(1, persons, 17, 3) with the given joints of person 0 labelled (score 1), everything else (-1, -1, 0)."""
    kpts = torch.tensor([-1.0, -1.0, 0.0]).repeat(1, persons, NUM_KEYPOINTS, 1)
    for joint, (x, y) in joints.items():
        kpts[0, 0, joint] = torch.tensor([x, y, 1.0])
    return kpts


# ---------------------------------------------------------------------------------------------------------------------
# Targets


def test_heatmap_peak_is_one_at_the_joint_on_both_outputs() -> None:
    # 129 px images with 33 / 65 px outputs: UDP scales 32/128 = 1/4 and 64/128 = 1/2, so the joint is on a pixel.
    targets = compute_pose_targets(_keypoints({5: (40.0, 60.0)}), (129, 129), [(33, 33), (65, 65)])
    for heatmaps, (x, y) in zip(targets.heatmaps, [(10, 15), (20, 30)]):
        channel = heatmaps[0, 5]
        assert channel[y, x] == pytest.approx(1.0)
        assert divmod(int(channel.argmax()), channel.shape[1]) == (y, x)
        assert channel[y, x + 2] == pytest.approx(math.exp(-4 / (2 * 2.0**2)))  # sigma 2 heatmap pixels
        assert heatmaps[0, [k for k in range(NUM_KEYPOINTS) if k != 5]].abs().max() == 0
    assert targets.tag_index[0, 0, 5] == 15 * 33 + 10
    assert all(
        m.shape == (1, 1, *h.shape[-2:]) and bool((m == 1).all()) for m, h in zip(targets.masks, targets.heatmaps)
    )


def test_udp_coordinate_mapping_sub_pixel() -> None:
    assert udp_scale(128, 32) == pytest.approx(31 / 127)
    x, y = 50.3, 71.9
    targets = compute_pose_targets(_keypoints({0: (x, y)}), (128, 128), [(32, 32), (64, 64)], sigma=(2.0, 2.0))
    for heatmaps, size in zip(targets.heatmaps, (32, 64)):
        channel = heatmaps[0, 0].double()
        grid = torch.arange(size, dtype=torch.float64)
        cx = float((channel.sum(0) * grid).sum() / channel.sum())  # centroid of the Gaussian
        cy = float((channel.sum(1) * grid).sum() / channel.sum())
        assert cx == pytest.approx(x * (size - 1) / 127, abs=1e-4)
        assert cy == pytest.approx(y * (size - 1) / 127, abs=1e-4)
    corner = compute_pose_targets(_keypoints({0: (127.0, 127.0)}), (128, 128), [(32, 32)])
    assert corner.heatmaps[0][0, 0, 31, 31] == pytest.approx(1.0)  # last image pixel -> last heatmap pixel


def test_invisible_and_out_of_image_joints_are_masked() -> None:
    kpts = _keypoints({0: (10.0, 10.0), 1: (200.0, 10.0), 2: (20.0, 20.0)}, persons=2)
    kpts[0, 0, 2, 2] = 0.0  # labelled position but score 0: not a joint
    targets = compute_pose_targets(kpts, (64, 64), [(16, 16), (32, 32)])
    weights = targets.joint_weights[0]
    assert weights[0, 0] == 1 and weights[0, 1] == 0 and weights[0, 2] == 0
    assert weights[1].sum() == 0  # the padding person
    for heatmaps in targets.heatmaps:
        assert heatmaps[0, 0].max() == pytest.approx(1.0, abs=0.05)
        assert heatmaps[0, 1].max() == 0 and heatmaps[0, 2].max() == 0
    ignore = torch.zeros(1, 64, 64, dtype=torch.bool)
    ignore[:, :, 32:] = True  # right half ignored
    masks = compute_pose_targets(kpts, (64, 64), [(16, 16)], ignore=ignore).masks[0]
    assert masks[0, 0, :, :8].min() == 1 and masks[0, 0, :, 9:].max() == 0


def test_overlapping_persons_take_the_maximum() -> None:
    kpts = _keypoints({3: (20.0, 20.0)}, persons=2)
    kpts[0, 1, 3] = torch.tensor([22.0, 20.0, 1.0])
    both = compute_pose_targets(kpts, (64, 64), [(64, 64)], sigma=2.0).heatmaps[0][0, 3]
    assert both.max() == pytest.approx(1.0) and both[20, 20] == pytest.approx(1.0) and both[20, 22] == 1.0


def test_target_errors() -> None:
    with pytest.raises(ValueError, match=r"\(B, P, K, 3\)"):
        compute_pose_targets(torch.zeros(2, 17, 3), (64, 64), [(16, 16)])
    with pytest.raises(ValueError, match="positive sigma per size"):
        compute_pose_targets(torch.zeros(1, 1, 17, 3), (64, 64), [(16, 16), (32, 32)], sigma=(2.0,))
    with pytest.raises(ValueError, match="ignore must be"):
        compute_pose_targets(torch.zeros(1, 1, 17, 3), (64, 64), [(16, 16)], ignore=torch.zeros(1, 32, 32))


# ---------------------------------------------------------------------------------------------------------------------
# Associative-embedding loss


def _tag_setup(person_tags: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image, one joint type per tag entry: tag maps (1, K, 1, P) with person p's joint k tag at pixel p."""
    persons, joints = len(person_tags), len(person_tags[0])
    tags = torch.tensor(person_tags, dtype=torch.float32).T.reshape(1, joints, 1, persons)
    index = torch.arange(persons).view(1, persons, 1).expand(1, persons, joints).clone()
    return tags, index, torch.ones(1, persons, joints)


def test_ae_pull_is_zero_for_identical_tags_and_the_variance_otherwise() -> None:
    pull, push = ae_loss(*_tag_setup([[0.7, 0.7, 0.7]]))
    assert pull == 0 and push == 0  # one person: nothing to push
    pull, _ = ae_loss(*_tag_setup([[0.0, 2.0], [5.0, 5.0]]))
    assert pull == pytest.approx((1.0 + 0.0) / 2)  # person 0: mean 1, deviations 1 and 1


def test_ae_push_is_smaller_for_separated_means() -> None:
    _, close = ae_loss(*_tag_setup([[0.0, 0.0], [0.1, 0.1]]))
    _, far = ae_loss(*_tag_setup([[0.0, 0.0], [3.0, 3.0]]))
    assert far < close
    assert close == pytest.approx(0.5 * math.exp(-0.01))  # MMPose normalisation: half the mean over pairs
    tags, index, weights = _tag_setup([[0.0, 0.0], [0.1, 0.1]])
    weights[0, 1] = 0  # the second person has no labelled joint: not a person
    assert ae_loss(tags, index, weights).push == 0


def test_ae_loss_gradients_pull_tags_together() -> None:
    tags, index, weights = _tag_setup([[0.0, 1.0], [0.5, 0.6]])
    tags.requires_grad_(True)
    pull, push = ae_loss(tags, index, weights)
    (pull - push).backward()
    assert tags.grad is not None and tags.grad[0, 0, 0, 0] < 0 < tags.grad[0, 1, 0, 0]


def test_bottom_up_loss_combines_terms() -> None:
    kpts = _keypoints({0: (10.0, 10.0), 5: (30.0, 40.0)})
    targets = compute_pose_targets(kpts, (64, 64), [(16, 16), (32, 32)])
    outputs = (torch.zeros(1, 34, 16, 16), torch.zeros(1, 17, 32, 32))
    out = bottom_up_loss(outputs, targets, heatmap_weights=(1.0, 2.0), pull_weight=1e-3, push_weight=1e-3)
    expected = targets.heatmaps[0].square().mean() + 2 * targets.heatmaps[1].square().mean()
    assert out.loss == pytest.approx(float(expected)) and out.pull == 0 and out.push == 0
    with pytest.raises(ValueError, match="must match"):
        bottom_up_loss(outputs[:1], targets)


# ---------------------------------------------------------------------------------------------------------------------
# Module, export, evaluation


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pose_data")
    write_tiny_dataset(root, n=8, size=64, seed=0)
    return root


def test_optimisation_steps_reduce_the_loss(tiny_dataset: Path) -> None:
    torch.manual_seed(0)
    dataset = HumanPoseDataset(map_file=tiny_dataset / "mapping_file_training.json", image_size=64, augment=False)
    batch = collate_batch([dataset[i] for i in range(len(dataset))])
    module = PoseNetModule("tiny", learning_rate=3e-3)
    module.log_dict = lambda *args, **kwargs: None  # no trainer attached
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = module._common_step(batch, 0, "train")
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(("height", "width", "input_size"), [(64, 64, 128), (48, 80, 64), (70, 50, 96)])
def test_batch_resize_matches_the_estimator_warp(height: int, width: int, input_size: int) -> None:
    """Training-side resize = the cv2 warp PoseEstimator.detect applies (same map, bilinear, zero padding)."""
    image = np.random.default_rng(height).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    transform = compute_resize(height, width, input_size=input_size, size_divisor=32, use_udp=True)
    size = (transform.input_width, transform.input_height)
    expected = cv2.warpAffine(image.astype(np.float32), transform.image_to_input_matrix(), size, flags=cv2.INTER_LINEAR)
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    got = resize_batch_for_network(batch, transform)[0].permute(1, 2, 0).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=0.02)  # cv2 rounds its interpolation weights to 1/1024


def test_mapped_keypoints_follow_the_resized_image_and_map_back() -> None:
    image = torch.zeros(1, 3, 64, 64)
    image[..., 21, 37] = 1.0  # a bright pixel at (x, y) = (37, 21)
    transform = compute_resize(64, 64, input_size=128, size_divisor=32, use_udp=True)
    resized = resize_batch_for_network(image, transform)[0, 0]
    keypoints = torch.tensor([[37.0, 21.0, 1.0], [-1.0, -1.0, 0.0]])
    mapped = map_keypoints_to_network(keypoints, transform)
    peak = divmod(int(resized.argmax()), resized.shape[1])  # (y, x)
    assert peak == (round(mapped[0, 1].item()), round(mapped[0, 0].item()))
    assert mapped[1, 2] == 0 and mapped[0, 2] == 1
    # network pixels -> 1/2-resolution heatmap (UDP) -> back to image pixels: the original position
    half = (transform.input_width // 2, transform.input_height // 2)
    network = (transform.input_width, transform.input_height)
    on_heatmap = mapped[0, :2].numpy() * (np.array(half) - 1) / (np.array(network) - 1)
    np.testing.assert_allclose(transform.heatmap_to_image(on_heatmap, *half), [37.0, 21.0], atol=1e-4)


def test_module_trains_at_the_test_input_size(tiny_dataset: Path) -> None:
    config = load_pose_config("tiny")
    config = dataclasses.replace(config, test=dataclasses.replace(config.test, input_size=128))
    dataset = HumanPoseDataset(map_file=tiny_dataset / "mapping_file_training.json", image_size=64, augment=False)
    batch = collate_batch([dataset[i] for i in range(2)])
    seen = []
    for resize in (False, True):
        module = PoseNetModule(config, resize_to_input=resize)
        module.log_dict = lambda *args, **kwargs: None  # no trainer attached
        module.net.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[-2:])))
        assert torch.isfinite(module._common_step(batch, 0, "train").loss)
        images, keypoints = module.to_network_input(batch[BatchKey.IMAGE], batch[BatchKey.KEYPOINTS])
        labelled = batch[BatchKey.KEYPOINTS][..., 2] > 0
        scale = 127 / 63 if resize else 1.0
        torch.testing.assert_close(keypoints[labelled][:, :2], batch[BatchKey.KEYPOINTS][labelled][:, :2] * scale)
    assert seen == [(64, 64), (128, 128)]


def test_normalisation_matches_the_estimator() -> None:
    module = PoseNetModule("tiny")
    image = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    as_dataset = torch.from_numpy(image.astype(np.float64) / 255 * 2 - 1).permute(2, 0, 1)[None].float()
    estimator = PoseEstimator(module.net, test_config=load_pose_config(W16_POSE_CONFIG).test)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    expected = (x - estimator.pixel_mean) / estimator.pixel_std
    torch.testing.assert_close(module.normalize(as_dataset), expected, atol=1e-5, rtol=0)


def test_export_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = load_pose_config(W16_POSE_CONFIG)
    module = PoseNetModule(W16_POSE_CONFIG)
    for p in module.net.parameters():
        p.data.normal_(0, 0.05)  # non-trivial weights
    module.net.eval()
    x = torch.randn(1, 3, 64, 64)
    path = export_pose_weights(module.net, tmp_path / "pose.safetensors", pose_config=config, metadata={"a": "b"})
    assert read_exported_pose_config(path) == config
    loaded = PoseEstimator.from_checkpoint(path, W16_POSE_CONFIG)
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(x).half, module.net(x).half)
    half = export_pose_weights(module.net, tmp_path / "half.safetensors", pose_config=config, half=True)
    assert half.stat().st_size < 0.6 * path.stat().st_size
    with torch.no_grad():
        torch.testing.assert_close(
            PoseEstimator.from_checkpoint(half, config).net(x).half, module.net(x).half, atol=2e-2, rtol=2e-2
        )
    with pytest.raises(ValueError, match="does not describe this network"):
        export_pose_weights(module.net, tmp_path / "x.safetensors", pose_config=load_pose_config("tiny"))


def test_evaluator_scores_perfect_detections_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gt = np.concatenate([rng.uniform(10, 100, size=(2, NUM_KEYPOINTS, 2)), np.ones((2, NUM_KEYPOINTS, 1))], -1)
    evaluator = CocoKeypointEvaluator()
    evaluator.add("a.jpg", [Person(p, score=0.9) for p in gt], width=128, height=128, keypoints=gt)
    evaluator.add("b.jpg", [], width=128, height=128, keypoints=gt[:1])
    result = evaluator.compute()
    assert result.ap == pytest.approx(1.0 * 2 / 3, abs=0.02) and result.num_detections == 2
    coco = {"images": [{"id": 7, "file_name": "a.jpg", "width": 128, "height": 128}], "annotations": []}
    (tmp_path / "gt.json").write_text(json.dumps(coco | {"categories": [{"id": 1, "name": "person"}]}))
    with pytest.raises(ValueError, match="not in"):
        CocoKeypointEvaluator(tmp_path / "gt.json").add("b.jpg", [], width=128, height=128)
    with pytest.raises(ValueError, match="64x64"):
        CocoKeypointEvaluator(tmp_path / "gt.json").add("a.jpg", [], width=64, height=64)


def test_evaluator_scores_each_area_range_on_its_own() -> None:
    """A small person found and a large one missed: AP 1 in the small range, 0 in the large one, 1/2 overall."""
    rng = np.random.default_rng(1)
    small = np.concatenate([rng.uniform(10, 30, size=(NUM_KEYPOINTS, 2)), np.ones((NUM_KEYPOINTS, 1))], -1)
    large = np.concatenate([rng.uniform(20, 120, size=(NUM_KEYPOINTS, 2)), np.ones((NUM_KEYPOINTS, 1))], -1)
    evaluator = CocoKeypointEvaluator()
    evaluator.add("a.jpg", [Person(small, score=0.9)], width=128, height=128, keypoints=np.stack([small, large]))
    assert evaluator.compute().ap == pytest.approx(0.5, abs=0.02)
    assert evaluator.compute(area_range=(0, 1000)).ap == pytest.approx(1.0)
    assert evaluator.compute(area_range=(1000, float("inf"))).ap == pytest.approx(0.0)
    assert evaluator.compute(area_range=(1e6, 2e6)).ap == -1.0  # no ground truth in the range
    with pytest.raises(ValueError, match="0 <= lo < hi"):
        evaluator.compute(area_range=(10, 5))


def test_decoder_settings_change_with_type_checks() -> None:
    from ldm.pose.bottom_up import BottomUpConfig

    base = BottomUpConfig()
    changed = base.with_changes({"nms_kernel": 3, "nms_padding": 1, "tag_threshold": 2, "flip_test": False})
    assert (changed.nms_kernel, changed.nms_padding, changed.flip_test) == (3, 1, False)
    assert changed.tag_threshold == 2.0 and isinstance(changed.tag_threshold, float)
    assert base.nms_kernel == 5  # a copy
    for bad, match in [
        ({"nms_kernl": 3}, "Unknown decoder setting"),
        ({"nms_kernel": "3"}, "must be int"),
        ({"flip_test": 1}, "must be bool"),
        ({"nms_kernel": True}, "must be int"),
        ({"nms_kernel": 3, "nms_padding": 2}, "nms_padding must be in"),
    ]:
        with pytest.raises(ValueError, match=match):
            base.with_changes(bad)


def test_lr_schedules() -> None:
    cosine = PoseNetModule("tiny", warmup_steps=10, min_lr_ratio=0.01)
    assert cosine.lr_factor(0, 100) == pytest.approx(0.1)
    assert cosine.lr_factor(10, 100) == pytest.approx(1.0)
    assert cosine.lr_factor(100, 100) == pytest.approx(0.01)
    step = PoseNetModule("tiny", lr_schedule="step", warmup_steps=0, step_milestones=(0.5, 0.75), step_gamma=0.1)
    assert [step.lr_factor(s, 100) for s in (0, 50, 80)] == pytest.approx([1.0, 0.1, 0.01])


# ---------------------------------------------------------------------------------------------------------------------
# Config validation and the script


def test_bad_module_options() -> None:
    with pytest.raises(ValueError, match="Unknown lr_schedule 'linear'"):
        PoseNetModule("tiny", lr_schedule="linear")
    with pytest.raises(ValueError, match="learning_rate > 0"):
        PoseNetModule("tiny", learning_rate=0.0)
    with pytest.raises(ValueError, match="step_milestones"):
        PoseNetModule("tiny", step_milestones=(0.8, 0.5))
    with pytest.raises(ValueError, match="Pose config must be one of the presets"):
        PoseNetModule("nope")
    with pytest.raises(ValueError, match="one factor per output"):
        PoseNetModule("tiny", heatmap_weights=(1.0,))


def test_bad_train_configs() -> None:
    cfg = OmegaConf.to_container(OmegaConf.load(TRAIN_CONFIG))
    assert check_pose_train_config(cfg)["model"]["params"]["val_annotations"].endswith("validation_coco.json")
    with pytest.raises(ValueError, match=r"unknown section\(s\) \['lightning'\]"):
        check_pose_train_config(cfg | {"lightning": {}})
    with pytest.raises(ValueError, match="model.target must be"):
        check_pose_train_config(cfg | {"model": {"target": "ldm.training.module.LatentDiffusionModule"}})
    with pytest.raises(ValueError, match="set by scripts/train_pose.py"):
        check_pose_train_config(cfg | {"trainer": {"max_time": "00:00:10:00"}})
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['max_step'\]"):
        check_pose_train_config(cfg | {"trainer": {"max_step": 10}})


def _train_pose_script():
    """scripts/train_pose.py as a module."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import train_pose
    finally:
        sys.path.pop(0)
    return train_pose


def test_script_rejects_bad_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_pose = _train_pose_script()
    assert train_pose.main(["--config", str(TRAIN_CONFIG), "model.params.bogus=1", "data_root=/nonexistent"]) == 2
    assert "PoseNetModule: unknown config key(s) ['bogus']" in capsys.readouterr().err
    assert train_pose.main(["--config", str(TRAIN_CONFIG), "--out", str(tmp_path / "w.pth")]) == 2


def _small_run(tiny_dataset: Path, *extra: str) -> list[str]:
    """Overrides of the mannequin training config for a seconds-long run on the 64-px test dataset."""
    return [
        f"data_root={tiny_dataset}",
        "model.params.val_annotations=null",
        "data.params.train.image_size=64",
        "data.params.validation.image_size=64",
        "data.params.batch_size=4",
        "data.params.num_workers=0",
        *extra,
    ]


def test_script_trains_validates_and_exports(tiny_dataset: Path, tmp_path: Path) -> None:
    train_pose = _train_pose_script()
    out = tmp_path / "pose.safetensors"
    overrides = _small_run(tiny_dataset, "trainer.max_steps=2", "trainer.val_check_interval=2")
    argv = ["--config", str(TRAIN_CONFIG), *overrides, "--out", str(out), "--log-dir", str(tmp_path / "logs")]
    assert train_pose.main(argv) == 0
    estimator = PoseEstimator.from_checkpoint(out, W16_POSE_CONFIG)
    assert estimator.test_config.input_size == 128
    persons = estimator.detect(np.zeros((64, 64, 3), np.uint8))
    assert isinstance(persons, list)
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        assert float(f.metadata()["val_ap"]) >= 0 and f.metadata()["global_step"] == "2"


def test_script_continues_from_trained_weights(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    train_pose = _train_pose_script()
    from safetensors.torch import load_file, save_file

    from ldm.pose.higherhrnet import HigherHRNet

    torch.manual_seed(3)
    start = tmp_path / "start.safetensors"
    net = HigherHRNet(load_pose_config(W16_POSE_CONFIG).net)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(start))
    overrides = _small_run(tiny_dataset, "trainer.max_steps=0")
    out = tmp_path / "out.safetensors"
    argv = ["--config", str(TRAIN_CONFIG), *overrides, "--log-dir", str(tmp_path / "logs"), "--out", str(out)]
    assert train_pose.main([*argv, "--init-from", str(start)]) == 0
    got, want = load_file(str(out)), load_file(str(start))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)

    tiny = HigherHRNet(load_pose_config("tiny").net)
    other = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(other))
    assert train_pose.main([*argv, "--init-from", str(other)]) == 2
    assert "does not match HigherHRNet" in capsys.readouterr().err
    assert train_pose.main([*argv, "--init-from", str(tmp_path / "missing.safetensors")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_eval_pose_cli_by_area_and_decoder_settings(tmp_path: Path, capsys) -> None:
    import importlib.util

    from ldm.data.mannequin.world import write_mannequin_world

    shipped = REPO / "humansd_data/checkpoints/tiny/pose-tiny.safetensors"
    spec = importlib.util.spec_from_file_location("eval_pose", REPO / "scripts/eval_pose.py")
    eval_pose = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval_pose)
    write_mannequin_world(tmp_path / "w", 8, size=128, seed=3, val_fraction=0.5)
    common = ["--checkpoint", str(shipped), "--data-root", str(tmp_path / "w"), "--num-threads", "1"]
    assert (
        eval_pose.main(
            [*common, "--area-bins", "800", "--errors", "--test", "flip_test=false", "nms_kernel=3", "nms_padding=1"]
        )
        == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 4 and 0 <= lines[0]["ap"] <= 1
    assert [line["area"] for line in lines[1:3]] == [[0.0, 800.0], [800.0, None]]
    errors = lines[3]["errors"]
    assert errors["ap"] == pytest.approx(lines[0]["ap"], abs=1e-4) and sum(errors["joint_counts"].values()) > 0
    for argv, message in [
        (["--test", "flip_test"], "KEY=VALUE"),
        (["--test", "nms_kernel=x"], "must be int"),
        (["--area-bins", "0"], "increasing and > 0"),
    ]:
        assert eval_pose.main([*common, *argv]) == 2
        assert message in capsys.readouterr().err


def test_script_grows_a_trained_net_into_a_wider_one(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    train_pose = _train_pose_script()
    from safetensors.torch import save_file

    from ldm.pose.higherhrnet import HigherHRNet

    torch.manual_seed(4)
    narrow = HigherHRNet(load_pose_config(W16_POSE_CONFIG).net).eval()
    init_from_scratch(narrow)  # weights of a trained scale (MMPose's init gives near-zero outputs)
    start = tmp_path / "start.safetensors"
    save_file({k: v.contiguous() for k, v in narrow.state_dict().items()}, str(start))
    wide_config = SHIPPED_POSE_CONFIG
    overrides = _small_run(tiny_dataset, "trainer.max_steps=0", f"model.params.pose_config={wide_config}")
    out = tmp_path / "wide.safetensors"
    argv = ["--config", str(TRAIN_CONFIG), *overrides, "--log-dir", str(tmp_path / "logs"), "--out", str(out)]
    assert train_pose.main([*argv, "--init-from", str(start)]) == 2  # without --grow: a strict shape check
    assert "shape mismatches" in capsys.readouterr().err
    assert train_pose.main([*argv, "--grow"]) == 2
    assert "--grow needs --init-from" in capsys.readouterr().err
    assert train_pose.main([*argv, "--init-from", str(start), "--grow"]) == 0
    wide = PoseEstimator.from_checkpoint(out, wide_config).net.eval()
    assert wide.config.stage4.num_channels == (24, 48, 96, 192)
    images = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        for want, got in zip(narrow(images), wide(images)):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
