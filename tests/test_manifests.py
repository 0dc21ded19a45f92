"""Full-size models built on the meta device have exactly the keys and shapes of the public checkpoints."""

from __future__ import annotations

import pytest
import torch

from ldm.checkpoint import compare_keys, drop_extras, load_state_dict_strict
from ldm.config import load_config
from ldm.inference.loading import build_model


def _meta_model(config: str):
    with torch.device("meta"):
        return build_model(load_config(config))


def _meta_state(manifest: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in manifest.items()}


@pytest.fixture(scope="module")
def humansd_meta():
    return _meta_model("configs/humansd/humansd-inference.yaml")


@pytest.fixture(scope="module")
def sd21_meta():
    return _meta_model("configs/stable-diffusion/v2-inference.yaml")


def test_humansd_matches_manifest_exactly(humansd_meta, manifest):
    report = compare_keys(humansd_meta.state_dict(), _meta_state(manifest("humansd-v1")))
    assert report.ok, report.describe(20)


def test_humansd_unet_parameter_count(humansd_meta):
    assert sum(p.numel() for p in humansd_meta.unet.parameters()) == 865_922_244
    assert humansd_meta.unet.input_blocks[0][0].weight.shape == (320, 8, 3, 3)


def test_sd21_matches_manifest_after_documented_extras(sd21_meta, manifest):
    file_state = _meta_state(manifest("sd21-base"))
    assert {"model_ema.decay", "model_ema.num_updates"} <= set(file_state)
    report = compare_keys(sd21_meta.state_dict(), drop_extras(file_state))
    assert report.ok, report.describe(20)
    assert sum(p.numel() for p in sd21_meta.unet.parameters()) == 865_910_724


def test_humansd_file_with_pose_net_keys_still_loads(humansd_meta, manifest):
    """A humansd-v1.ckpt saved from the heatmap-loss class may carry `mmpose_model.*`: dropped by name."""
    state = _meta_state(manifest("humansd-v1"))
    state.update({f"mmpose_model.{k}": v for k, v in _meta_state(manifest("higherhrnet-w48-humanart")).items()})
    assert compare_keys(humansd_meta.state_dict(), drop_extras(state)).ok


def test_sd15_file_into_sd21_model_lists_mismatches(sd21_meta, manifest):
    state = drop_extras(_meta_state(manifest("sd15-base")))
    with pytest.raises(ValueError, match=r"does not match LatentDiffusion: \d+ shape mismatch\(es\): model\.") as err:
        load_state_dict_strict(sd21_meta, state, source="v1-5-pruned-emaonly.ckpt")
    message = str(err.value)
    assert "attn2.to_k.weight (model [320, 1024] vs file [320, 768])" in message
    assert "missing key(s): cond_stage_model.model." in message
    assert "unexpected key(s): cond_stage_model.transformer." in message
    assert "\n" not in message
