"""PoseToImagePipeline end to end on the tiny config: outputs, reproducibility, guidance, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ldm.inference.pipeline import PoseToImagePipeline
from ldm.pose.keypoints import Pose


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    p = PoseToImagePipeline.from_config("configs/tiny/humansd-tiny.yaml", allow_random=True)
    with torch.no_grad():
        for param in p.model.unet.parameters():
            param.add_(torch.randn_like(param) * 0.05)  # break the zero-init so outputs depend on inputs
    return p


def two_people_keypoints() -> np.ndarray:
    """Two people in a 64x64 image, (2, 17, 3) (x, y, score)."""
    kp = np.zeros((2, 17, 3), np.float32)
    kp[:, :, 0] = np.linspace(8, 56, 17)
    kp[:, :, 1] = np.linspace(4, 60, 17)[::-1]
    kp[1, :, 0] = 60 - kp[1, :, 0]
    kp[:, :, 2] = 0.9
    return kp


@pytest.fixture
def keypoints():
    return two_people_keypoints()


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


def test_generates_images_and_pose_map(pipe, keypoints):
    out = pipe("a dancer", keypoints, num_inference_steps=3, num_images=2, seed=5)
    assert len(out.images) == 2 and out.images[0].size == (64, 64) and out.images[0].mode == "RGB"
    assert out.pose_map.size == (64, 64) and _arr(out.pose_map).any()
    assert out.parameters["seed"] == 5 and out.parameters["num_images"] == 2


@pytest.mark.parametrize("sampler", ["ddim", "plms", "dpmpp_2m"])
def test_seed_reproduces_and_differs(pipe, keypoints, sampler):
    a = pipe("a dancer", keypoints, num_inference_steps=3, seed=11, sampler=sampler)
    b = pipe("a dancer", keypoints, num_inference_steps=3, seed=11, sampler=sampler)
    c = pipe("a dancer", keypoints, num_inference_steps=3, seed=12, sampler=sampler)
    assert np.array_equal(_arr(a.images[0]), _arr(b.images[0]))
    assert not np.array_equal(_arr(a.images[0]), _arr(c.images[0]))


def test_pose_changes_the_output(pipe, keypoints):
    a = pipe("a dancer", keypoints, num_inference_steps=3, seed=1)
    b = pipe("a dancer", None, num_inference_steps=3, seed=1)
    assert not _arr(b.pose_map).any()  # no pose: an empty (black) pose map is valid input
    assert not np.array_equal(_arr(a.images[0]), _arr(b.images[0]))


def test_rendered_pose_image_and_pose_object_inputs(pipe, keypoints):
    from_kpts = pipe("x", keypoints, num_inference_steps=2, seed=3)
    from_image = pipe("x", from_kpts.pose_map, num_inference_steps=2, seed=3)
    assert np.array_equal(_arr(from_kpts.images[0]), _arr(from_image.images[0]))
    big = Pose.from_array(keypoints * np.array([2, 2, 1], np.float32), width=128, height=128)
    from_pose = pipe("x", big, num_inference_steps=2, seed=3, height=64, width=64)
    assert np.array_equal(_arr(from_pose.pose_map), _arr(from_kpts.pose_map))


def test_img2img_strength_and_eta(pipe, keypoints):
    init = np.full((64, 64, 3), 200, np.uint8)
    steps = []
    out = pipe(
        "x",
        keypoints,
        num_inference_steps=4,
        strength=0.5,
        init_image=init,
        eta=0.7,
        seed=2,
        callback=lambda d: steps.append(d["t"]),
    )
    assert len(out.images) == 1 and len(steps) == 2


def test_text_only_model():
    pipe = PoseToImagePipeline.from_config("configs/tiny/sd-tiny.yaml", allow_random=True)
    out = pipe("a cat", num_inference_steps=2, seed=0)
    assert out.pose_map is None and out.images[0].size == (64, 64)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"height": 60, "width": 64}, ValueError, "multiples of 16 for this model; got 60x64"),
        ({"sampler": "euler"}, ValueError, "Unknown sampler 'euler'; choose one of: ddim, plms, dpmpp_2m"),
        ({"sampler": "plms", "eta": 0.5}, ValueError, "does not support eta"),
        ({"num_inference_steps": 0}, ValueError, r"num_inference_steps must be in \[1, 1000\]"),
        ({"strength": 0.0}, ValueError, r"strength must be in \(0, 1\]"),
        ({"guidance_scale": float("nan")}, ValueError, "guidance_scale must be a finite number"),
        ({"timestep_spacing": "leading"}, ValueError, "Unknown timestep_spacing"),
    ],
)
def test_bad_arguments_raise_one_line_errors(pipe, keypoints, kwargs, error, match):
    with pytest.raises(error, match=match) as err:
        pipe("x", keypoints, num_inference_steps=kwargs.pop("num_inference_steps", 2), **kwargs)
    assert "\n" not in str(err.value)


def test_bad_pose_arrays(pipe, keypoints):
    with pytest.raises(ValueError, match=r"shape \(persons, 17, 3\)"):
        pipe("x", np.zeros((2, 17, 2), np.float32), num_inference_steps=1)
    bad = keypoints.copy()
    bad[0, 3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        pipe("x", bad, num_inference_steps=1)
    with pytest.raises(TypeError, match="pose must be a Pose"):
        pipe("x", [[1, 2, 3]], num_inference_steps=1)


def test_long_prompt_is_truncated_with_a_warning(pipe, keypoints):
    with pytest.warns(UserWarning, match="truncated to 77"):
        pipe("dancing " * 100, keypoints, num_inference_steps=1, seed=0)


def test_guidance_scale_one_uses_the_conditional_prediction_only(pipe, keypoints):
    calls = []
    original = pipe.model.unet.forward

    def spy(x, *args, **kwargs):
        calls.append(x.shape[0])
        return original(x, *args, **kwargs)

    pipe.model.unet.forward = spy
    try:
        pipe("x", keypoints, num_inference_steps=2, guidance_scale=1.0, seed=0)
        assert calls == [1, 1]
        calls.clear()
        pipe("x", keypoints, num_inference_steps=2, guidance_scale=7.5, seed=0)
        assert calls == [2, 2]  # CFG: both branches in one batched call per step
    finally:
        del pipe.model.unet.forward


def test_sampling_defaults_come_from_the_config(tmp_path):
    from omegaconf import OmegaConf

    from ldm.inference.defaults import TINY_CONFIG, SamplingDefaults, sampling_defaults

    assert sampling_defaults(TINY_CONFIG) == SamplingDefaults(steps=5, guidance_scale=1.0, eta=1.0)  # embedded model
    assert sampling_defaults("configs/humansd/humansd-inference.yaml") == SamplingDefaults(50, 10.0)  # original's
    assert sampling_defaults({"defaults": {"size": 128}}) == SamplingDefaults(20, 10.0)  # small, no settings
    assert sampling_defaults({}, fallback_guidance=9.0).guidance_scale == 9.0  # e.g. the original metrics' 9
    assert sampling_defaults(TINY_CONFIG, fallback_guidance=9.0).guidance_scale == 1.0  # a config's own value wins
    bad = tmp_path / "bad.yaml"
    OmegaConf.save({"defaults": {"guidance_scale": -1}}, bad)
    with pytest.raises(ValueError, match="guidance_scale >= 0"):
        sampling_defaults(bad)
    assert sampling_defaults({"defaults": {"eta": 0.5}}).eta == 0.5
    with pytest.raises(ValueError, match="0 <= eta <= 1"):
        sampling_defaults({"defaults": {"eta": 1.5}})


def test_call_without_steps_or_guidance_uses_the_model_defaults(pipe, keypoints):
    from ldm.inference.defaults import SamplingDefaults

    assert pipe.sampling == SamplingDefaults(20, 10.0)  # humansd-tiny.yaml names none: 64 px native, guidance 10
    saved = pipe.sampling
    pipe.sampling = SamplingDefaults(steps=2, guidance_scale=1.0)
    try:
        implicit = pipe("x", keypoints, seed=3)
    finally:
        pipe.sampling = saved
    explicit = pipe("x", keypoints, num_inference_steps=2, guidance_scale=1.0, seed=3)
    guided = pipe("x", keypoints, num_inference_steps=2, guidance_scale=4.0, seed=3)
    assert implicit.parameters["num_inference_steps"] == 2 and implicit.parameters["guidance_scale"] == 1.0
    assert np.array_equal(_arr(implicit.images[0]), _arr(explicit.images[0]))
    assert not np.array_equal(_arr(implicit.images[0]), _arr(guided.images[0]))


def test_call_without_eta_uses_the_model_default(pipe, keypoints):
    from ldm.inference.defaults import SamplingDefaults

    kwargs = {"num_inference_steps": 3, "guidance_scale": 1.0, "seed": 3}
    saved = pipe.sampling
    pipe.sampling = SamplingDefaults(steps=3, guidance_scale=1.0, eta=1.0)
    try:
        implicit = pipe("x", keypoints, **kwargs)
        plms = pipe("x", keypoints, sampler="plms", **kwargs)  # eta is DDIM's: other samplers get 0
    finally:
        pipe.sampling = saved
    explicit = pipe("x", keypoints, eta=1.0, **kwargs)
    deterministic = pipe("x", keypoints, **kwargs)
    assert implicit.parameters["eta"] == 1.0 and plms.parameters["eta"] == 0.0
    assert deterministic.parameters["eta"] == 0.0
    assert np.array_equal(_arr(implicit.images[0]), _arr(explicit.images[0]))
    assert not np.array_equal(_arr(implicit.images[0]), _arr(deterministic.images[0]))
