"""Smoke runs of the benchmark entry points on the tiny config (timing numbers are not checked, only that each
benchmark runs, compares what it claims to compare, and reports every variant)."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from benchmarks import sampling, train_step
from ldm.config import load_config

TINY = "configs/tiny/humansd-tiny.yaml"


def test_sampling_runs_with_random_weights_even_when_the_config_names_a_checkpoint(tmp_path):
    config = load_config("configs/tiny/humansd-tiny.yaml")
    config.checkpoint = str(tmp_path / "not-downloaded.ckpt")  # like humansd-inference.yaml's humansd-v1.ckpt
    path = tmp_path / "model.yaml"
    OmegaConf.save(config, path)
    out = tmp_path / "sampling.json"
    argv = ["--config", str(path), "--size", "64", "--steps", "1", "--iters", "1", "--threads", "1"]
    assert sampling.main([*argv, "--variants", "plain", "prepack", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["variant"] for r in rows] == ["plain", "prepack"]
    assert rows[1]["max_pixel_diff_vs_first"] <= 1  # prepacked weights: the same image
    assert all(r["s_per_image"] > 0 for r in rows)


def test_sampling_with_a_named_checkpoint_that_is_missing_says_so(tmp_path):
    argv = ["--size", "64", "--steps", "1", "--iters", "1", "--ckpt", str(tmp_path / "nope.safetensors")]
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        sampling.main(argv)


def test_train_step_times_every_loss_variant(tmp_path):
    out = tmp_path / "train.json"
    argv = ["--steps", "1", "--warmup", "1", "--batch-size", "1", "--random-pose-net", "--threads", "1"]
    assert train_step.main([*argv, "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"plain", "heatmap-reference", "heatmap-paper"}
    assert all(r["median_s"] > 0 for r in results.values())


def test_unet_vs_diffusers_checks_equal_outputs_then_times_every_variant(tmp_path):
    pytest.importorskip("diffusers")
    from benchmarks import unet_vs_diffusers

    out = tmp_path / "unet.json"
    argv = ["--config", "configs/tiny/humansd-tiny.yaml", "--sizes", "64", "--dtypes", "fp32", "bf16"]
    argv += ["--iters", "1", "--warmup", "0", "--weights-dtype", "bf16", "--prepack", "--json", str(out)]
    assert unet_vs_diffusers.main(argv) == 0
    fp32, bf16 = json.loads(out.read_text())["results"]
    assert fp32["fp32_check"] <= 1e-4  # the same weights give the same outputs before anything is timed
    assert {"ours_s", "diffusers_s", "ours_prepacked_s"} <= set(fp32) and "ours_bf16_weights_s" not in fp32
    assert {"ours_bf16_weights_s", "diffusers_bf16_weights_s"} <= set(bf16)  # half weights: their dtype's row
    assert bf16["ours_bf16_weights_max_abs_diff"] < 0.1  # bf16 rounding, not a different network


def test_unet_vs_diffusers_winograd_variant_is_checked_against_diffusers(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    from benchmarks import unet_vs_diffusers
    from ldm.inference import winograd

    calls = []
    real = winograd.winograd_conv2d
    monkeypatch.setattr(winograd, "winograd_conv2d", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(winograd.WinogradConv2d, "min_size", 4)  # the tiny UNet's 8x8 latents and 32 channels
    monkeypatch.setattr(winograd.WinogradConv2d, "min_channels", 1)
    out = tmp_path / "unet.json"
    argv = ["--config", TINY, "--sizes", "64", "--dtypes", "fp32", "--iters", "1", "--warmup", "0"]
    assert unet_vs_diffusers.main([*argv, "--winograd", "--share-cfg-input", "--json", str(out)]) == 0
    (fp32,) = json.loads(out.read_text())["results"]
    assert calls and fp32["fp32_check"] <= 1e-4  # Winograd layers ran, and matched diffusers before timing
    assert {"ours_winograd_s", "ours_winograd_shared_input_s"} <= set(fp32)


def test_unet_vs_diffusers_shared_cfg_input_times_ours_on_half_the_rows(tmp_path):
    pytest.importorskip("diffusers")
    from benchmarks import unet_vs_diffusers

    x, t, ctx = unet_vs_diffusers.make_inputs(
        unet_vs_diffusers.build_unet(TINY)[0], 64, 4, torch.device("cpu"), cfg=True
    )
    assert torch.equal(x[:2], x[2:]) and torch.equal(t[:2], t[2:]) and not torch.equal(ctx[:2], ctx[2:])
    out = tmp_path / "unet.json"
    argv = ["--config", TINY, "--sizes", "64", "--dtypes", "fp32", "bf16", "--iters", "1", "--warmup", "0"]
    argv += ["--prepack", "--share-cfg-input", "--weights-dtype", "bf16", "--json", str(out)]
    assert unet_vs_diffusers.main(argv) == 0
    fp32, bf16 = json.loads(out.read_text())["results"]
    assert fp32["fp32_check"] <= 1e-4  # the shared-input variants equal diffusers on the full CFG batch
    assert {"ours_shared_input_s", "ours_prepacked_shared_input_s"} <= set(fp32)
    assert bf16["ours_bf16_weights_shared_input_max_abs_diff"] < 0.1
    with pytest.raises(SystemExit, match="even --batch-size"):
        unet_vs_diffusers.main([*argv[:-2], "--batch-size", "3"])


@pytest.mark.slow
def test_unet_vs_diffusers_compiles_the_half_weight_unets_too(tmp_path):
    pytest.importorskip("diffusers")
    from benchmarks import unet_vs_diffusers

    out = tmp_path / "unet.json"
    argv = ["--config", "configs/tiny/humansd-tiny.yaml", "--sizes", "64", "--dtypes", "bf16", "--iters", "1"]
    argv += ["--warmup", "1", "--weights-dtype", "bf16", "--compile", "--compile-mode", "default", "--json", str(out)]
    assert unet_vs_diffusers.main(argv) == 0
    (row,) = json.loads(out.read_text())["results"]
    assert row["ours_compiled_max_abs_diff"] < 0.1 and row["ours_bf16_weights_compiled_max_abs_diff"] < 0.1


def test_conv3x3_times_every_variant_and_checks_them(tmp_path):
    from benchmarks import conv3x3

    out = tmp_path / "conv.json"
    assert conv3x3.main(["--shapes", "16x8", "8x5", "--iters", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["channels"], r["side"]) for r in rows] == [(16, 8), (8, 5)]
    assert all(r[f"{n}_rel_err"] <= 2e-5 for r in rows for n in ("onednn_prepacked", "winograd_f2", "winograd_f4"))
    with pytest.raises(SystemExit):
        conv3x3.main(["--shapes", "16by8"])
