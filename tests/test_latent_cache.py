"""Latent cache: stored moments equal the VAE's, the cached training step equals the image step, bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from ldm.config import load_config
from ldm.data.humansd import HumanPoseDataset, collate_batch
from ldm.data.keys import BatchKey
from ldm.data.latent_cache import LatentCacheDataModule, LatentCacheDataset, build_latent_cache, vae_fingerprint
from ldm.data.synthetic import write_tiny_dataset
from ldm.inference.loading import build_model
from ldm.training.run import RUN_STAMP_ENV, prepare_run

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = REPO / "configs/tiny/humansd-tiny.yaml"
PLAIN = REPO / "configs/tiny/train-plain.yaml"
SIZE = 32
OPTIONS = {"image_size": SIZE, "skeleton_width": 2, "max_person_num": 4, "swap_flipped_joints": True}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("cache-data"), n=10, size=64, seed=0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(load_config(TINY_MODEL)).eval()


@pytest.fixture(scope="module")
def cache(world, model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "latents.safetensors"
    return build_latent_cache(model.vae, {"map_file": str(world), **OPTIONS}, out, batch_size=3)


def test_cache_holds_the_vae_moments_of_both_orientations(cache, world, model):
    plain = HumanPoseDataset(map_file=world, augment=False, **OPTIONS)
    flipped = HumanPoseDataset(map_file=world, augment=False, mirror=True, **OPTIONS)
    data = LatentCacheDataset(path=cache, hflip_p=0.0)
    assert len(data) == len(plain) == 8
    assert data.image_moments.shape == (8, 2, 8, SIZE // 8, SIZE // 8) and data.image_moments.dtype == torch.float16
    for orientation, dataset in enumerate((plain, flipped)):
        batch = collate_batch([dataset[i] for i in range(len(dataset))])
        with torch.no_grad():
            images = model.vae.encode_moments(batch[BatchKey.IMAGE])
            poses = model.vae.encode_moments(batch[BatchKey.POSE_MAP])
        torch.testing.assert_close(data.image_moments[:, orientation].float(), images, atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(data.pose_moments[:, orientation].float(), poses, atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(data.keypoints[:, orientation], batch[BatchKey.KEYPOINTS])
    assert data.captions == collate_batch([plain[i] for i in range(8)])[BatchKey.CAPTION]
    assert not torch.equal(data.image_moments[:, 0], data.image_moments[:, 1])  # the mirror image differs
    first, mirrored = plain[1], flipped[1]  # a non-square source image: mirror of the centre crop
    assert torch.equal(mirrored[BatchKey.IMAGE], first[BatchKey.IMAGE].flip(-1))
    assert data.metadata["vae_fingerprint"] == vae_fingerprint(model.vae)


def test_moments_give_the_same_latents_as_encoding(model):
    images = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        direct = model.encode_images(images, torch.Generator().manual_seed(5))
        cached = model.latents_from_moments(model.vae.encode_moments(images), torch.Generator().manual_seed(5))
    assert torch.equal(direct, cached)


def test_flip_draws_follow_hflip_p_and_the_seed(cache):
    never = LatentCacheDataset(path=cache, hflip_p=0.0)
    always = LatentCacheDataset(path=cache, hflip_p=1.0)
    assert torch.equal(never[3][BatchKey.IMAGE_MOMENTS], never.image_moments[3, 0].float())
    assert torch.equal(always[3][BatchKey.IMAGE_MOMENTS], always.image_moments[3, 1].float())
    draws = []
    for _ in range(2):
        half = LatentCacheDataset(path=cache, hflip_p=0.5, seed=7)
        draws.append(
            [
                bool(torch.equal(half[i % 8][BatchKey.POSE_MOMENTS], half.pose_moments[i % 8, 1].float()))
                for i in range(40)
            ]
        )
    assert draws[0] == draws[1] and 5 < sum(draws[0]) < 35


def test_cached_training_step_equals_the_image_step(cache, world, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv(RUN_STAMP_ENV, "test")
    base = ["lightning.callbacks.image_sampler=null", "lightning.callbacks.lr_monitor=null", "module.use_ema=false"]
    image_run = prepare_run([PLAIN], [f"data.params.train.map_file={world}", *base], logdir=tmp_path, name="img")
    config = OmegaConf.load(PLAIN)
    config.data = {
        "target": "ldm.data.latent_cache.LatentCacheDataModule",
        "params": {"train": {"path": str(cache), "hflip_p": 0.0}, "batch_size": 2},
    }
    cache_config = tmp_path / "train-cache.yaml"
    OmegaConf.save(config, cache_config)
    cache_run = prepare_run([cache_config], base, logdir=tmp_path, name="cache")
    module = image_run.module
    cache_run.module.load_state_dict(module.state_dict())  # same random UNet in both
    assert isinstance(cache_run.datamodule.datamodule, LatentCacheDataModule)
    plain = HumanPoseDataset(map_file=world, augment=False, **OPTIONS)
    image_batch = collate_batch([plain[i] for i in range(4)])
    cached = LatentCacheDataset(path=cache, hflip_p=0.0)
    cache_batch = collate_batch([cached[i] for i in range(4)])
    with torch.no_grad():
        a = module._common_step(image_batch, 0, "train").loss
        b = cache_run.module._common_step(cache_batch, 0, "train").loss
    torch.testing.assert_close(a, b, rtol=2e-3, atol=1e-5)  # equal up to the cache's float16 storage
    trainer = cache_run.fit()  # and a short real run on the cache (the tiny config's 50 steps)
    assert trainer.global_step == 50


def test_bad_caches_are_refused_clearly(cache, tmp_path):
    with pytest.raises(FileNotFoundError, match="scripts/cache_latents.py"):
        LatentCacheDataset(path=tmp_path / "none.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, str(other), metadata={"format": "something"})
    with pytest.raises(ValueError, match="is not a latent cache"):
        LatentCacheDataset(path=other)
    with pytest.raises(ValueError, match="another VAE"):
        LatentCacheDataset(path=cache, expect_vae="0123456789abcdef")
    with pytest.raises(ValueError, match="hflip_p must be in"):
        LatentCacheDataset(path=cache, hflip_p=1.5)


def test_unflipped_cache_refuses_flip_draws(world, model, tmp_path):
    out = build_latent_cache(model.vae, {"map_file": str(world), **OPTIONS}, tmp_path / "c.safetensors", flips=False)
    assert LatentCacheDataset(path=out, hflip_p=0.0).image_moments.shape[1] == 1
    with pytest.raises(ValueError, match="no flipped orientation"):
        LatentCacheDataset(path=out, hflip_p=0.5)
    with pytest.raises(ValueError, match=".safetensors"):
        build_latent_cache(model.vae, {"map_file": str(world), **OPTIONS}, tmp_path / "c.pt")


def test_script_errors_are_one_line(world, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("cache_latents", REPO / "scripts/cache_latents.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = ["--model-config", str(TINY_MODEL), "--map-file", str(world), "--out", str(tmp_path / "c.safetensors")]
    assert script.main([*argv, "--ckpt", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.safetensors" in err and len(err.splitlines()) == 1
    no_vae = tmp_path / "unet-only.safetensors"
    save_file({"model.diffusion_model.x": torch.zeros(1)}, str(no_vae))
    assert script.main([*argv, "--ckpt", str(no_vae)]) == 2
    assert "no first_stage_model.* weights in" in capsys.readouterr().err
    assert json.loads((world.parent / "mapping_file_training.json").read_text())  # the data was not touched


def test_several_caches_read_as_one_dataset(cache, world, model, tmp_path):
    second_world = write_tiny_dataset(tmp_path / "second", n=10, size=64, seed=1)
    second = build_latent_cache(
        model.vae, {"map_file": str(second_world), **OPTIONS}, tmp_path / "second.safetensors", flips=False
    )
    one, two = LatentCacheDataset(path=cache, hflip_p=0.0), LatentCacheDataset(path=second, hflip_p=0.0)
    both = LatentCacheDataset(path=[cache, second], hflip_p=0.0)
    assert len(both) == len(one) + len(two) == 16
    assert both.paths == one.paths + two.paths and both.captions == one.captions + two.captions
    assert torch.equal(both[len(one) + 2][BatchKey.POSE_MOMENTS], two[2][BatchKey.POSE_MOMENTS])
    assert torch.equal(both.keypoints[:3, 0], one.keypoints[:3, 0])
    assert both.image_moments.shape[1] == 1  # flips are served only if every file holds them
    assert len(LatentCacheDataset(path=[cache, second], hflip_p=0.0, max_items=11)) == 11
    with pytest.raises(ValueError, match="no flipped orientation"):
        LatentCacheDataset(path=[cache, second], hflip_p=0.5)
    # the training config's list of files (an OmegaConf list) reaches the dataset through the data module
    config = OmegaConf.create({"train": {"path": [str(cache), str(second)], "hflip_p": 0.0}, "batch_size": 4})
    datamodule = LatentCacheDataModule(**config)
    datamodule.setup("fit")
    assert len(datamodule.train_dataset) == 16


def test_caches_of_different_vaes_or_options_are_not_joined(cache, world, tmp_path):
    torch.manual_seed(1)
    other_vae = build_model(load_config(TINY_MODEL)).eval().vae
    other = build_latent_cache(other_vae, {"map_file": str(world), **OPTIONS}, tmp_path / "vae.safetensors")
    with pytest.raises(ValueError, match="different VAEs"):
        LatentCacheDataset(path=[cache, other])
    wider = build_latent_cache(
        other_vae, {"map_file": str(world), **OPTIONS, "skeleton_width": 3}, tmp_path / "wide.safetensors"
    )
    with pytest.raises(ValueError, match="different dataset options"):
        LatentCacheDataset(path=[other, wider])
    with pytest.raises(ValueError, match="empty list"):
        LatentCacheDataset(path=[])
