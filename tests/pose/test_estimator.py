"""PoseEstimator end to end with the tiny HigherHRNet, configs, checkpoint formats and the detector factory."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldm.pose.bottom_up import BottomUpConfig
from ldm.pose.estimator import (
    POSE_ESTIMATOR_PRESETS,
    PoseDetector,
    PoseEstimator,
    build_detector,
    load_pose_config,
)
from ldm.pose.keypoints import Person

logger = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "pose"


def _randomise(estimator: PoseEstimator, seed: int = 0) -> PoseEstimator:
    """PyTorch-default conv init: unlike MMPose's N(0, 0.001) it gives heatmap peaks above the 0.1 threshold."""
    torch.manual_seed(seed)
    for module in estimator.net.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            module.reset_parameters()
    return estimator


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """The test machine's cores are shared; one intra-op thread is faster and steadier for the tiny net."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def estimator() -> PoseEstimator:
    return _randomise(PoseEstimator.from_config("tiny"))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)


def _check_persons(persons: list[Person], width: int, height: int, max_people: int = 30) -> None:
    assert isinstance(persons, list) and len(persons) <= max_people
    assert all(isinstance(p, Person) for p in persons)
    scores = [p.score for p in persons]
    assert scores == sorted(scores, reverse=True)
    for p in persons:
        kpts = p.keypoints
        assert kpts.shape == (17, 3) and np.isfinite(kpts).all()
        assert (kpts[:, 0] >= 0).all() and (kpts[:, 0] <= width - 1).all()
        assert (kpts[:, 1] >= 0).all() and (kpts[:, 1] <= height - 1).all()
        assert p.score == pytest.approx(float(np.mean(kpts[:, 2])), abs=0.5)


def test_detect_end_to_end_tiny(estimator, image):
    start = time.perf_counter()
    persons = estimator.detect(image)
    elapsed = time.perf_counter() - start
    logger.info("tiny detect on 512x512: %.3f s, %d persons", elapsed, len(persons))
    print(f"tiny detect 512x512: {elapsed:.3f} s, {len(persons)} persons")
    assert elapsed < 2.0
    assert len(persons) > 0  # randomised weights do produce peaks above the threshold
    _check_persons(persons, 512, 512)
    assert isinstance(estimator, PoseDetector)


def test_detect_non_square_and_input_types(estimator, tmp_path):
    estimator = PoseEstimator(estimator.net, test_config=BottomUpConfig(input_size=128))  # same path, faster
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    from_rgb = estimator.detect(rgb)
    _check_persons(from_rgb, 300, 200)
    assert len(from_rgb) > 0
    _check_persons(estimator.detect(rgb[..., 0]), 300, 200)  # grayscale (H, W)
    rgba = np.concatenate([rgb, np.full((200, 300, 1), 255, np.uint8)], axis=2)
    assert [p.score for p in estimator.detect(rgba)] == [p.score for p in from_rgb]  # opaque RGBA == RGB
    path = tmp_path / "img.png"
    Image.fromarray(rgb).save(path)
    assert [p.score for p in estimator.detect(path)] == [p.score for p in from_rgb]
    _check_persons(estimator.detect(Image.fromarray(rgb).convert("LA")), 300, 200)  # PIL grayscale + alpha


def test_detect_rejects_non_images(estimator, tmp_path):
    with pytest.raises(ValueError):
        estimator.detect(42)
    with pytest.raises(ValueError):
        estimator.detect(np.zeros((4, 4, 2), np.uint8))
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="Not a readable image"):
        estimator.detect(text)


def test_heatmaps_raw_training_path(estimator):
    images = torch.rand(2, 3, 64, 96, requires_grad=True)
    heatmaps = estimator.heatmaps(images)
    assert heatmaps.shape == (2, 17, 32, 48)
    assert heatmaps.dtype == torch.float32 and torch.isfinite(heatmaps).all()
    assert not heatmaps.requires_grad and heatmaps.grad_fn is None
    quarter, half = estimator.net(images.detach())
    up = torch.nn.functional.interpolate(quarter[:, :17], size=(32, 48), mode="bilinear", align_corners=True)
    torch.testing.assert_close(heatmaps, (up + half) / 2)  # no normalisation, no flip
    torch.testing.assert_close(estimator(images), heatmaps)
    with pytest.raises(ValueError, match="multiples of 32"):
        estimator.heatmaps(torch.rand(1, 3, 50, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        estimator.heatmaps(torch.rand(3, 64, 64))


def test_checkpoint_formats_round_trip(tmp_path, estimator):
    state = estimator.net.state_dict()
    x = torch.rand(1, 3, 64, 64)
    expected = estimator.heatmaps(x)
    # mmcv style: wrapped, `module.` prefixed, numpy objects in meta (needs the numpy allowlist).
    mmcv = tmp_path / "mmcv.pth"
    meta = {"hook_msgs": {"best_score": np.float64(0.66)}, "arr": np.arange(3)}
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "meta": meta}, mmcv)
    torch.testing.assert_close(PoseEstimator.from_checkpoint(mmcv, config="tiny").heatmaps(x), expected)
    from safetensors.torch import save_file

    st = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    torch.testing.assert_close(PoseEstimator.from_checkpoint(st, config="tiny").heatmaps(x), expected)
    # A HumanSD heatmap-loss training checkpoint embeds the pose net as mmpose_model.*.
    humansd = tmp_path / "humansd.ckpt"
    torch.save({"state_dict": {f"mmpose_model.{k}": v for k, v in state.items()}}, humansd)
    torch.testing.assert_close(PoseEstimator.from_checkpoint(humansd, config="tiny").heatmaps(x), expected)


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "unsafe.pth"
    torch.save({"state_dict": {}, "meta": {"cfg": Path("x")}}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        PoseEstimator.from_checkpoint(path, config="tiny")


def test_configs(tmp_path):
    w48 = load_pose_config(CONFIG_DIR / "higherhrnet_w48_udp.yaml")
    assert w48 == POSE_ESTIMATOR_PRESETS["w48"]
    tiny = load_pose_config(str(CONFIG_DIR / "higherhrnet_tiny.yaml"))
    assert tiny == POSE_ESTIMATOR_PRESETS["tiny"]
    assert tiny.test == BottomUpConfig(max_num_people=30, detection_threshold=0.1, flip_test=True, use_udp=True)
    assert isinstance(PoseEstimator.from_config(CONFIG_DIR / "higherhrnet_tiny.yaml"), PoseEstimator)
    bad = tmp_path / "bad.yaml"
    bad.write_text("net: tiny\ntest:\n  detection_thresh: 0.1\n")
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['detection_thresh'\].*detection_threshold"):
        load_pose_config(bad)
    with pytest.raises(ValueError, match="presets"):
        load_pose_config("w99")


def test_build_detector(tmp_path):
    with pytest.raises(ValueError, match="higherhrnet"):
        build_detector("openpose")
    with pytest.raises(FileNotFoundError, match="humansd_data/checkpoints/"):
        build_detector("higherhrnet", checkpoint=tmp_path / "missing.pth")
    with pytest.raises(ImportError, match="MMPose 1.x"):
        build_detector("mmpose", config="cfg.py", checkpoint="ckpt.pth")
