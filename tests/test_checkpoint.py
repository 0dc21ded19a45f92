"""Checkpoint reading, strict loading, documented extras, errors, and the 4 -> 8 input expansion."""

from __future__ import annotations

import argparse

import pytest
import torch
from safetensors.torch import save_file

from ldm.checkpoint import expand_conv_in, load_prefixed, load_weights, read_checkpoint
from ldm.conditioning import Conditioning
from ldm.config import load_config
from ldm.inference.loading import UNET_CONV_IN_KEY, build_model, load_model

HUMANSD_TINY = "configs/tiny/humansd-tiny.yaml"
SD_TINY = "configs/tiny/sd-tiny.yaml"


def _tiny(config: str, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(load_config(config)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_lightning_ckpt_roundtrip_drops_documented_extras(tmp_path, caplog):
    src = _tiny(HUMANSD_TINY)
    state = dict(src.state_dict())
    state["mmpose_model.backbone.conv1.weight"] = torch.zeros(2)
    state["model_ema.decay"] = torch.tensor(0.999)
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": state, "global_step": 7, "epoch": 1}, path)
    dst = build_model(load_config(HUMANSD_TINY))
    with caplog.at_level("INFO", logger="ldm.checkpoint"):
        meta = load_weights(dst, path)
    assert _states_equal(src, dst)
    assert meta["global_step"] == 7
    assert "Ignoring 1 checkpoint key(s) mmpose_model.*" in caplog.text


def test_safetensors_roundtrip(tmp_path):
    src = _tiny(HUMANSD_TINY)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path), metadata={"config": '{"a": 1}'})
    model, _ = load_model(HUMANSD_TINY, path)
    assert _states_equal(src, model)
    assert read_checkpoint(path)[1]["config"] == {"a": 1}


def test_missing_checkpoint_names_path_and_source(tmp_path):
    path = tmp_path / "humansd-v1.ckpt"
    with pytest.raises(FileNotFoundError) as err:
        load_model(HUMANSD_TINY, path)
    message = str(err.value)
    assert str(path) in message and "IDEA-Research/HumanSD README" in message and "\n" not in message


def test_no_checkpoint_anywhere_is_an_error_unless_random_allowed():
    with pytest.raises(ValueError, match="No checkpoint given"):
        load_model(HUMANSD_TINY)
    model, _ = load_model(HUMANSD_TINY, allow_random=True)
    assert not model.training


def test_wrong_model_lists_first_mismatches(tmp_path):
    path = tmp_path / "sd.ckpt"
    torch.save({"state_dict": _tiny(SD_TINY).state_dict()}, path)
    with pytest.raises(
        ValueError,
        match=r"1 shape mismatch\(es\): model\.diffusion_model\.input_blocks\.0\.0\.weight "
        r"\(model \[32, 8, 3, 3\] vs file \[32, 4, 3, 3\]\)",
    ):
        load_model(HUMANSD_TINY, path)


def test_unsafe_pickle_is_refused_unless_trusted(tmp_path):
    path = tmp_path / "odd.ckpt"
    state = {k: v for k, v in _tiny(HUMANSD_TINY).state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(ValueError, match="pickled Python objects besides tensors.*--trust-checkpoint"):
        read_checkpoint(path)
    tensors, meta = read_checkpoint(path, trust_pickle=True)
    assert meta["hyper_parameters"] == argparse.Namespace(lr=1.0) and len(tensors) == len(state)


def test_expand_conv_in_zero_inits_new_channels():
    state = {"w": torch.randn(5, 4, 3, 3)}
    expand_conv_in(state, "w", 8)
    assert state["w"].shape == (5, 8, 3, 3) and torch.equal(state["w"][:, 4:], torch.zeros(5, 4, 3, 3))
    with pytest.raises(ValueError, match="no such key"):
        expand_conv_in(state, "missing", 8)
    with pytest.raises(ValueError, match="Cannot expand w of shape"):
        expand_conv_in(state, "w", 6)


def test_finetune_init_from_sd_behaves_like_sd(tmp_path, caplog):
    """SD weights + zero-initialised pose channels: HumanSD's prediction equals SD's for any pose latent."""
    sd = _tiny(SD_TINY)
    path = tmp_path / "sd21.ckpt"
    torch.save({"state_dict": {**sd.state_dict(), "model_ema.num_updates": torch.tensor(3)}}, path)
    with caplog.at_level("INFO", logger="ldm.checkpoint"):
        humansd, _ = load_model(HUMANSD_TINY, path, expand_conv_in=True)
    assert "Expanded model.diffusion_model.input_blocks.0.0.weight from 4 to 8 input channels" in caplog.text
    w = humansd.state_dict()[UNET_CONV_IN_KEY]
    assert torch.equal(w[:, :4], sd.state_dict()[UNET_CONV_IN_KEY]) and not w[:, 4:].any()
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([5, 600]), torch.randn(2, 77, 32)
    with torch.no_grad():
        ours = humansd.apply_model(x, t, Conditioning(ctx, torch.randn(2, 4, 8, 8)))
        ref = sd.apply_model(x, t, Conditioning(ctx))
    assert torch.allclose(ours, ref, atol=1e-6)


def test_model_split_over_several_files_loads_and_rejects_overlaps(tmp_path):
    src = _tiny(HUMANSD_TINY)
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    unet = {k: v.half() for k, v in state.items() if k.startswith("model.")}  # fp16 files load into fp32 models
    rest = {k: v for k, v in state.items() if not k.startswith("model.")}
    save_file(unet, str(tmp_path / "unet.safetensors"))
    save_file(rest, str(tmp_path / "rest.safetensors"))
    model, _ = load_model(HUMANSD_TINY, [tmp_path / "rest.safetensors", tmp_path / "unet.safetensors"])
    assert torch.equal(
        model.state_dict()["first_stage_model.quant_conv.weight"], state["first_stage_model.quant_conv.weight"]
    )
    key = "model.diffusion_model.out.2.bias"
    assert torch.equal(model.state_dict()[key], state[key].half().float())
    with pytest.raises(ValueError, match="repeats .* key\\(s\\) already given by an earlier file"):
        load_model(HUMANSD_TINY, [tmp_path / "rest.safetensors", tmp_path / "rest.safetensors"])
    with pytest.raises(FileNotFoundError, match="Checkpoint not found"):
        load_model(HUMANSD_TINY, [tmp_path / "rest.safetensors", tmp_path / "nope.safetensors"])


def test_load_prefixed_loads_one_part_strictly(tmp_path):
    src = _tiny(HUMANSD_TINY, seed=1)
    path = tmp_path / "model.safetensors"
    save_file({k: v.half().contiguous() for k, v in src.state_dict().items()}, str(path))  # shipped files are fp16
    dst = _tiny(HUMANSD_TINY, seed=2)
    unet_before = {k: v.clone() for k, v in dst.unet.state_dict().items()}
    load_prefixed(dst.vae, path, "first_stage_model.")
    for k, v in src.vae.state_dict().items():
        torch.testing.assert_close(dst.vae.state_dict()[k], v.half().float())  # cast to the module's dtype
    assert all(torch.equal(v, unet_before[k]) for k, v in dst.unet.state_dict().items())  # nothing else touched

    with pytest.raises(ValueError, match=r"no cond_stage_model\.x\.\* weights in"):
        load_prefixed(dst.vae, path, "cond_stage_model.x.")
    with pytest.raises(ValueError, match="does not match"):
        load_prefixed(dst.vae, path, "cond_stage_model.")  # keys of another part
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_prefixed(dst.vae, tmp_path / "nope.safetensors", "first_stage_model.")
