"""`instantiate` validates targets and params; every shipped model config builds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ldm.config import instantiate, load_config
from ldm.inference.loading import build_model
from ldm.models.latent_diffusion import LatentDiffusion

MODEL_CONFIGS = sorted(
    str(p)
    for d in ("configs/humansd", "configs/stable-diffusion", "configs/tiny")
    for p in Path(d).glob("*.yaml")
    if load_config(p).get("model", {}).get("target") == "ldm.models.latent_diffusion.LatentDiffusion"
)


def test_unknown_key_is_an_error_naming_class_and_valid_keys():
    cfg = {"target": "ldm.models.unet.UNetModel", "params": {"num_heads": 8, "channel_mul": [1, 2]}}
    with pytest.raises(
        ValueError,
        match=r"ldm.models.unet.UNetModel: unknown config key\(s\) \['channel_mul'\]; "
        r"valid keys: .*'channel_mult'",
    ):
        instantiate(cfg)


def test_missing_required_key_and_bad_target():
    with pytest.raises(ValueError, match=r"missing required config key\(s\) \['ddconfig'\]"):
        instantiate({"target": "ldm.models.autoencoder.AutoencoderKL", "params": {"embed_dim": 4}})
    with pytest.raises(ValueError, match="is not allowed"):
        instantiate({"target": "os.system", "params": {"command": "true"}})
    with pytest.raises(ValueError, match="cannot be imported"):
        instantiate({"target": "ldm.models.unet.NoSuchThing"})
    with pytest.raises(ValueError, match="unknown keys \\['parmas'\\]"):
        instantiate({"target": "ldm.models.unet.UNetModel", "parmas": {}})


def test_overrides_apply_and_must_be_key_value(tmp_path):
    cfg = load_config("configs/tiny/humansd-tiny.yaml", ["model.params.scale_factor=0.5"])
    assert cfg.model.params.scale_factor == 0.5
    with pytest.raises(ValueError, match="must look like key.sub=value"):
        load_config("configs/tiny/humansd-tiny.yaml", ["model.params.scale_factor"])
    with pytest.raises(FileNotFoundError, match="Config file not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", MODEL_CONFIGS)
def test_every_shipped_model_config_builds(path):
    cfg = load_config(path)
    device = "cpu" if "tiny" in path else "meta"
    with torch.device(device):
        model = build_model(cfg)
    assert isinstance(model, LatentDiffusion)
    assert model.unet.in_channels == (8 if model.pose_conditioning else 4)


def test_pose_flag_and_unet_channels_must_agree():
    cfg = load_config("configs/tiny/humansd-tiny.yaml", ["model.params.pose_conditioning=false"])
    with pytest.raises(ValueError, match="in_channels=8 does not fit pose_conditioning=False"):
        build_model(cfg)
