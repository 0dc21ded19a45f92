"""The mannequin builder's plumbing: ablation summary/merge tables, paired fold comparison, scale-factor rewrite,
override parsing."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(ap: float, pce: float) -> dict:
    return {"images": 10, "AP": ap, "AP50": 2 * ap, "PCE": pce, "adherence": 0.5}


def test_summary_is_mean_and_sample_std_over_seeds():
    evaluate = _script("evaluate_mannequin")
    rows = {
        "real renders": _row(0.9, 0.1),
        "paper (seed 23)": _row(0.2, 1.0),
        "paper (seed 24)": _row(0.4, 3.0),
        "plain (seed 23)": _row(0.1, 2.0),
    }
    summary = evaluate.summarize(rows)
    assert set(summary) == {"paper", "plain"}  # the real-render row is not a mode
    assert summary["paper"]["seeds"] == 2 and summary["paper"]["images"] == 20
    assert math.isclose(summary["paper"]["AP"], 0.3) and math.isclose(summary["paper"]["AP_std"], math.sqrt(0.02))
    assert math.isclose(summary["paper"]["PCE_std"], math.sqrt(2.0))
    assert summary["plain"]["AP_std"] is None  # one seed: no spread to report


def test_merge_combines_runs_and_reports_a_missing_one(tmp_path, capsys):
    evaluate = _script("evaluate_mannequin")
    for mode, ap in (("plain", 0.1), ("paper", 0.3)):
        run = tmp_path / mode
        run.mkdir()
        rows = {"real renders": _row(0.9, 0.1), f"{mode} (seed 23)": _row(ap, 1.0)}
        (run / "ablation.json").write_text(json.dumps({"rows": rows}))
    assert evaluate.main(["--merge", str(tmp_path / "plain"), str(tmp_path / "paper"), "--outdir", str(tmp_path)]) == 0
    merged = json.loads((tmp_path / "ablation.json").read_text())
    assert list(merged["rows"]) == ["real renders", "plain (seed 23)", "paper (seed 23)"]
    table = (tmp_path / "ablation.md").read_text()
    assert "| paper | 1 | 0.300 |" in table and "| real renders | 10 | 0.900 |" in table
    assert evaluate.main(["--merge", str(tmp_path / "missing"), "--outdir", str(tmp_path)]) == 2
    assert "no " in capsys.readouterr().err
    clash = tmp_path / "clash"
    clash.mkdir()
    (clash / "ablation.json").write_text(json.dumps({"rows": {"plain (seed 23)": _row(0.5, 1.0)}}))
    assert evaluate.main(["--merge", str(tmp_path / "plain"), str(clash), "--outdir", str(tmp_path / "x")]) == 2
    assert "in two runs with different results" in capsys.readouterr().err


def test_init_rewrites_only_the_scale_factor(tmp_path):
    build = _script("build_mannequin_models")
    config = tmp_path / "model.yaml"
    config.write_text("model:\n  params:\n    scale_factor: 0.18215  # measured\n    other: 1\n")
    build._set_scale_factor(config, 0.320641)
    assert config.read_text() == "model:\n  params:\n    scale_factor: 0.32064  # measured\n    other: 1\n"
    config.write_text("model: {}\n")
    with pytest.raises(SystemExit, match="No `scale_factor:` line"):
        build._set_scale_factor(config, 0.3)


def test_init_stage_writes_the_float16_vae_it_ships_into_the_init_file(monkeypatch, tmp_path):
    """A float32 vae-tiny (what train_autoencoder writes) must give an init file whose encoder is the base file's,
    or the latent cache (encoded from the base file) would not match the UNet's VAE and `pretrain` would refuse it."""
    import argparse
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from ldm.checkpoint import load_prefixed
    from ldm.config import load_config
    from ldm.data.latent_cache import vae_fingerprint
    from ldm.data.synthetic import write_tiny_dataset
    from ldm.inference.loading import build_model

    build = _script("build_mannequin_models")
    config = tmp_path / "mannequin-humansd.yaml"
    shutil.copy(REPO / "configs/tiny/mannequin-humansd.yaml", config)
    world = write_tiny_dataset(tmp_path / "world", n=6, size=128, seed=0).parent
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    torch.manual_seed(1)
    vae = build_model(load_config(config)).vae
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 1e-4)  # values that float16 cannot hold exactly
    save_file(
        {f"first_stage_model.{k}": v.contiguous() for k, v in vae.state_dict().items()}, tiny / "vae-tiny.safetensors"
    )
    for name, value in (
        ("MODEL_CONFIG", config),
        ("WORLD", world),
        ("TINY", tiny),
        ("INIT", tmp_path / "init.safetensors"),
    ):
        monkeypatch.setattr(build, name, value)
    build.stage_init(argparse.Namespace(seed=23))

    def encoder_of(path):
        model_vae = build_model(load_config(config)).vae
        load_prefixed(model_vae, path, "first_stage_model.")
        return vae_fingerprint(model_vae)

    assert encoder_of(tmp_path / "init.safetensors") == encoder_of(tiny / "base-tiny.safetensors")
    assert encoder_of(tmp_path / "init.safetensors") != vae_fingerprint(vae)  # rounded, not the float32 file
    assert load_file(tiny / "base-tiny.safetensors")["first_stage_model.quant_conv.weight"].dtype == torch.float16
    assert "scale_factor: 0.32064" not in config.read_text()  # measured on this VAE and written


def test_builder_passes_overrides_and_rejects_bare_words(monkeypatch, capsys):
    build = _script("build_mannequin_models")
    seen = {}
    monkeypatch.setitem(build.STAGES, "vae", lambda args: seen.update(vars(args)))
    assert build.main(["vae", "--max-minutes", "2", "data.batch_size=64", "data.num_workers=4"]) == 0
    assert seen["overrides"] == ["data.batch_size=64", "data.num_workers=4"] and seen["max_minutes"] == 2.0
    with pytest.raises(SystemExit):
        build.main(["vae", "batch64"])
    assert "overrides must be key=value" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["plain", "paper", "reference"])
def test_shipped_unets_load_strictly_with_the_shared_base(mode, monkeypatch):
    from ldm.inference.defaults import TINY_CONFIG
    from ldm.inference.loading import load_model

    monkeypatch.chdir(REPO)
    tiny = REPO / "humansd_data/checkpoints/tiny"
    model, _ = load_model(TINY_CONFIG, [tiny / "base-tiny.safetensors", tiny / f"humansd-tiny-{mode}.safetensors"])
    assert model.unet.input_blocks[0][0].weight.shape[1] == 8  # noisy latent + pose latent
    assert sum(p.numel() for p in model.unet.parameters()) > 2_000_000


def test_shipped_tiny_weights_fit_the_30_mb_budget():
    """Issue #5's budget for everything under checkpoints/tiny: base (VAE + text tower), pose net, three UNets."""
    files = sorted((REPO / "humansd_data/checkpoints/tiny").glob("*.safetensors"))
    expected = {"base-tiny.safetensors", "pose-tiny.safetensors"} | {
        f"humansd-tiny-{m}.safetensors" for m in ("plain", "paper", "reference")
    }
    assert {f.name for f in files} >= expected
    assert sum(f.stat().st_size for f in files) <= 30_000_000


def test_shipped_pose_net_finds_the_figures_of_unseen_scenes():
    """The shipped tiny HigherHRNet (its config read from the file) on 24 scenes of a seed no world was built from."""
    from ldm.data.mannequin import make_scene, render_scene
    from ldm.metrics.pce import pce
    from ldm.metrics.pose_ap import PoseSample, pose_ap
    from ldm.pose.estimator import PoseEstimator
    from ldm.training.pose_module import read_exported_pose_config

    path = REPO / "humansd_data/checkpoints/tiny/pose-tiny.safetensors"
    estimator = PoseEstimator.from_checkpoint(path, read_exported_pose_config(path))
    samples = []
    for index in range(24):
        scene = make_scene(index, seed=7, size=128)
        samples.append(PoseSample(128, 128, scene.pose.persons, estimator.detect(render_scene(scene))))
    assert pose_ap(samples)["AP"] > 0.5  # ~0.65-0.75 measured; a random or mismatched net scores ~0
    assert pce(samples, min_score=0.2) < 0.5


def test_a_weight_file_that_does_not_match_its_config_is_refused(monkeypatch):
    from ldm.inference.defaults import TINY_CONFIG
    from ldm.inference.loading import load_model

    monkeypatch.chdir(REPO)
    tiny = REPO / "humansd_data/checkpoints/tiny"
    with pytest.raises(ValueError, match="does not match"):
        load_model(TINY_CONFIG, [tiny / "base-tiny.safetensors", tiny / "pose-tiny.safetensors"])


def test_unet_stage_passes_init_ema_and_overrides_to_train(monkeypatch, tmp_path):
    build = _script("build_mannequin_models")
    seen = {}

    class Stop(Exception):
        pass

    def fake_run(name, argv):
        seen["name"], seen["argv"] = name, argv
        raise Stop

    monkeypatch.setattr(build, "_run", fake_run)
    monkeypatch.setattr(
        build, "_check_cache_matches_init", lambda init, caches: seen.update(checked=init, caches=caches)
    )
    monkeypatch.setenv("HUMANSD_RUN_STAMP", "stamp-of-an-earlier-stage")  # restored after the test
    start = tmp_path / "pretrained.safetensors"
    base = tmp_path / "base.safetensors"
    with pytest.raises(Stop):
        build.main(
            [
                "unet",
                "--mode",
                "paper",
                "--seed",
                "24",
                "--max-steps",
                "250",
                "--no-ema",
                "--init",
                str(base),
                "--init",
                str(start),
                "data.params.batch_size=32",
            ]
        )
    assert seen["name"] == "train" and seen["checked"] == [base, start] and seen["caches"] == [build.CACHE]
    # a fresh run-folder stamp per run, so the stage knows its folder without looking for the newest one
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d", os.environ["HUMANSD_RUN_STAMP"])
    argv = seen["argv"]
    assert argv[argv.index("--name") + 1] == "mannequin-paper-s24-from-pretrained"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--init-from"] == [str(base), str(start)]
    parsed = _script("train").build_parser().parse_args(argv)  # options first, overrides last: any parser takes it
    assert parsed.init_from == [base, start] and parsed.seed == 24
    assert parsed.overrides[-1] == "data.params.batch_size=32" and "module.use_ema=false" in parsed.overrides
    assert argv[argv.index("--config") + 1] == "configs/tiny/mannequin-train-paper.yaml"
    assert argv[argv.index("--seed") + 1] == "24"
    for item in (
        "module.use_ema=false",
        "lightning.trainer.max_steps=250",
        "data.params.batch_size=32",
    ):
        assert item in argv
    with pytest.raises(Stop):
        build.main(["unet", "--mode", "plain"])  # defaults: the stage's own init, EMA kept
    argv = seen["argv"]
    assert argv[argv.index("--init-from") + 1] == str(build.INIT) and "module.use_ema=false" not in argv


def test_roundtrip_row_writes_the_vae_reconstructions(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from ldm.data.humansd import read_mappings
    from ldm.data.synthetic import write_tiny_dataset
    from ldm.models.autoencoder import AutoencoderKL

    evaluate = _script("evaluate_mannequin")
    mapping = write_tiny_dataset(tmp_path / "data", n=4, size=32, seed=0)
    records = read_mappings(mapping)
    torch.manual_seed(0)
    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 32, "in_channels": 3, "out_ch": 3, "ch": 32}
    vae = AutoencoderKL(ddconfig={**ddconfig, "ch_mult": [1, 2], "num_res_blocks": 1}, embed_dim=4).eval()
    eval_set = evaluate._roundtrip_set(records, vae, tmp_path / "rt", "cpu")
    assert [item.reference_image for item in eval_set.items] == [r.image_path for r in records]
    first = records[0]
    x = torch.from_numpy(np.array(Image.open(first.image_path).convert("RGB"))).permute(2, 0, 1)[None] / 127.5 - 1
    with torch.no_grad():
        want = vae.decode(vae.encode(x.float()).mode()).clamp(-1, 1)[0].permute(1, 2, 0).add(1).mul(127.5)
    got = np.array(Image.open(eval_set.items[0].image_path))
    assert got.shape == (*x.shape[-2:], 3)
    assert np.abs(got.astype(np.float32) - want.numpy()).max() <= 0.51  # rounded to uint8, nothing else


def test_decoder_stage_starts_from_the_trained_vae_or_the_shipped_one(monkeypatch, tmp_path):
    build = _script("build_mannequin_models")
    calls = []
    monkeypatch.setattr(build, "_run", lambda name, argv: calls.append((name, argv)))
    monkeypatch.setattr(build, "TINY", tmp_path)
    assert build.main(["decoder", "--max-minutes", "3", "data.batch_size=4"]) == 0
    name, argv = calls[-1]
    assert name == "train_autoencoder" and argv[:2] == ["--config", "configs/tiny/mannequin-vae-decoder.yaml"]
    assert f"training.init={tmp_path / 'base-tiny.safetensors'}" in argv  # no vae-tiny yet: the shipped VAE
    assert f"output={tmp_path / 'vae-tiny.safetensors'}" in argv and argv[-2:] == [
        "training.max_minutes=3.0",
        "data.batch_size=4",
    ]
    (tmp_path / "vae-tiny.safetensors").write_bytes(b"")
    build.main(["decoder"])
    assert f"training.init={tmp_path / 'vae-tiny.safetensors'}" in calls[-1][1]


def test_pose_stage_continues_from_given_weights(monkeypatch, tmp_path):
    build = _script("build_mannequin_models")
    calls = []
    monkeypatch.setattr(build, "_run", lambda name, argv: calls.append((name, argv)))
    start = tmp_path / "pose.safetensors"
    assert build.main(["pose", "--init", str(start), "trainer.max_steps=5"]) == 0
    assert len(calls) == 2  # only the grow-and-train part and the final, lower-rate run
    (_, grown), (name, final) = calls
    assert name == "train_pose" and grown[grown.index("--init-from") + 1] == str(start) and "--grow" in grown
    assert "model.params.pose_config=configs/pose/higherhrnet_tiny_mannequin.yaml" in grown
    assert final[final.index("--init-from") + 1] == str(build.POSE_GROWN) and "--half" in final
    assert final[final.index("--out") + 1] == str(build.TINY / "pose-tiny.safetensors")
    assert grown[-1] == final[-1] == "trainer.max_steps=5"  # the user's overrides come last, so they win
    calls.clear()
    build.main(["pose"])
    (_, scratch), (_, grown), _ = calls
    assert "--init-from" not in scratch and scratch[scratch.index("--out") + 1] == str(build.POSE_W16)
    assert grown[grown.index("--init-from") + 1] == str(build.POSE_W16) and "--grow" in grown
    with pytest.raises(SystemExit, match="one HigherHRNet"):
        build.main(["pose", "--init", "a", "--init", "b"])


def test_world_stage_makes_the_pose_nets_extra_world_and_the_pose_stage_trains_on_both(monkeypatch, tmp_path):
    build = _script("build_mannequin_models")
    calls = []
    monkeypatch.setattr(build, "_run", lambda name, argv: calls.append((name, argv)))
    monkeypatch.setattr(build, "WORLD", tmp_path / "world")
    monkeypatch.setattr(build, "EXTRA_WORLD", tmp_path / "extra")
    monkeypatch.setattr(build, "ROUNDTRIP_WORLD", tmp_path / "rt")
    assert build.main(["world", "--world-size", "20", "--extra-world-size", "30"]) == 0
    (_, base), (_, extra) = calls
    assert base[:8] == ["--out", str(tmp_path / "world"), "--n", "20", "--size", "128", "--seed", "0"]
    assert extra[:10] == ["--out", str(tmp_path / "extra"), "--n", "30", "--size", "128", "--seed", "1"] + [
        "--val-fraction",
        "0",
    ]
    build.main(["world", "--extra-world-size", "0"])
    assert len(calls) == 3 and calls[-1][1][1] == str(tmp_path / "world")  # no extra world asked for

    build.main(["pose", "trainer.max_steps=5"])
    assert not any(a.startswith("data.params.train.map_file") for a in calls[-1][1])  # no extra world on disk
    for root in ("world", "extra"):
        (tmp_path / root).mkdir()
        (tmp_path / root / "mapping_file_training.json").write_text("[]")
    build.main(["pose", "trainer.max_steps=5"])
    maps = f"[{tmp_path / 'world' / 'mapping_file_training.json'},{tmp_path / 'extra' / 'mapping_file_training.json'}]"
    assert f"data.params.train.map_file={maps}" in calls[-1][1] and calls[-1][1][-1] == "trainer.max_steps=5"
    build.main(["roundtrip"])
    name, argv = calls[-1]
    assert name == "make_vae_roundtrip_world" and argv[:4] == [
        "--map-file",
        str(tmp_path / "world" / "mapping_file_training.json"),
        "--out",
        str(tmp_path / "rt"),
    ]
    assert "--overwrite" not in argv and "--limit" not in argv
    build.main(["roundtrip", "--overwrite", "--roundtrip-limit", "7"])
    assert calls[-1][1][-3:] == ["--overwrite", "--limit", "7"]
    (tmp_path / "rt").mkdir()
    (tmp_path / "rt" / "mapping_file_training.json").write_text("[]")
    build.main(["pose"])
    rt = tmp_path / "rt" / "mapping_file_training.json"
    assert calls[-1][1][-1] == f"data.params.train.map_file={maps[:-1]},{rt},{rt}]"  # round trips: a third
    calls.clear()
    build.main(["world"])
    assert calls == []  # both worlds exist: nothing regenerated


@pytest.mark.parametrize("argv", [["--offset", "-1"], ["--limit", "0"]])
def test_evaluate_rejects_a_negative_offset_or_an_empty_limit(argv, capsys):
    evaluate = _script("evaluate_mannequin")
    with pytest.raises(SystemExit) as exc:
        evaluate.main(argv)
    assert exc.value.code == 2 and "--offset must be >= 0 and --limit >= 1" in capsys.readouterr().err


def test_evaluate_exclude_leaves_the_tuning_entries_out(monkeypatch, tmp_path, capsys):
    from ldm.data.synthetic import write_tiny_dataset

    evaluate = _script("evaluate_mannequin")
    world = tmp_path / "world"
    mapping = write_tiny_dataset(world, n=12, size=32, seed=0)  # 10 training entries
    mapping.rename(world / "mapping_file_validation.json")
    scored = []
    monkeypatch.setattr(evaluate, "WORLD", world)
    monkeypatch.setattr(evaluate, "_detector", lambda checkpoint: evaluate.torch.nn.Identity())
    monkeypatch.setattr(evaluate, "_score", lambda eval_set, *a: scored.append([i.image_id for i in eval_set.items]))
    monkeypatch.setattr(evaluate, "_write_tables", lambda rows, outdir: None)
    argv = ["--no-roundtrip", "--unet-dir", str(tmp_path / "none"), "--outdir", str(tmp_path / "out")]
    keys = [r.key for r in evaluate.read_mappings(world / "mapping_file_validation.json")]
    assert evaluate.main([*argv, "--limit", "10", "--exclude", "3:5"]) == 0
    assert scored[-1] == keys[:3] + keys[5:]
    assert evaluate.main([*argv, "--offset", "4", "--limit", "4", "--exclude", "3:6"]) == 0
    assert scored[-1] == keys[6:8]  # entry numbers count from the start of the split, not from --offset
    for bad, message in (("5", "expected START:STOP"), ("7:3", "need 0 <= START < STOP"), ("a:b", "START:STOP")):
        with pytest.raises(SystemExit):
            evaluate.main([*argv, "--exclude", bad])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main([*argv, "--limit", "2", "--exclude", "0:5"])
    assert "no validation entries left" in capsys.readouterr().err


def test_error_diagnosis_rows_get_their_own_table(tmp_path):
    evaluate = _script("evaluate_mannequin")
    diagnosed = {**_row(0.2, 1.0), **dict.fromkeys(evaluate.ERROR_METRIC_NAMES, 0.25), "joints inversion": 0.125}
    diagnosed |= {"marking figures": 40, "marking agreement": 0.975, "marking contrast": 0.7}
    run = tmp_path / "run"
    run.mkdir()
    (run / "ablation.json").write_text(
        json.dumps({"rows": {"real renders": _row(0.9, 0.1), "paper (seed 23)": diagnosed}})
    )
    assert evaluate.main(["--merge", str(run), "--outdir", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "ablation.md").read_text()
    assert "| model | joints good | joints jitter | joints inversion |" in table
    assert "| paper (seed 23) | 0.250 | 0.250 | 0.125 | 0.250 |" in table
    assert "| AP fixed all | marking agreement | marking contrast |" in table
    assert "| 0.250 | 0.975 | 0.700 |" in table
    assert table.count("| real renders |") == 1  # undiagnosed: in the main table only


def test_all_pretrains_once_then_fine_tunes_each_loss_from_it(monkeypatch):
    build = _script("build_mannequin_models")
    done, unets = [], []
    for stage in ("world", "vae", "decoder", "init", "cache", "roundtrip", "pose"):
        monkeypatch.setitem(build.STAGES, stage, lambda args, stage=stage: done.append(stage))
    monkeypatch.setattr(build, "stage_unet", lambda args: unets.append(args))
    assert build.main(["all", "--pretrain-steps", "40", "lightning.trainer.accelerator=cpu"]) == 0
    assert done == ["world", "vae", "decoder", "init", "cache", "roundtrip", "pose"]
    pre, *tunes = unets
    assert (pre.mode, pre.max_steps, pre.no_ema, pre.init, pre.out_dir) == (
        "plain",
        40,
        False,
        None,
        build.PRETRAINED_DIR,
    )
    # Min-SNR pre-training with a linear cool-down (over the whole of this 40-step run: the default is 2,000 steps)
    cooldown = ["module.lr_schedule=linear", "module.lr_decay_steps=40"]
    assert pre.overrides == [*build.PRETRAIN_OVERRIDES, *cooldown, "lightning.trainer.accelerator=cpu"]
    assert "loss.snr_gamma=5" in pre.overrides
    assert pre.export_trained  # after a cool-down the trained weights are exported, not the EMA
    assert build.pretrain_overrides(18500, 2000)[-1] == "module.lr_decay_steps=2000"
    assert build.pretrain_overrides(18500, 0) == list(build.PRETRAIN_OVERRIDES)  # a constant rate
    with pytest.raises(SystemExit, match="--cooldown-steps must be >= 0"):
        build.pretrain_overrides(100, -1)
    assert [t.mode for t in tunes] == list(build.MODES)
    for t in tunes:
        assert t.max_steps == build.FINETUNE_STEPS and t.no_ema and t.out_dir == build.TINY
        assert t.init == [build.TINY / "base-tiny.safetensors", build.PRETRAINED_DIR / "humansd-tiny-plain.safetensors"]
        assert t.overrides[: len(build.FINETUNE_OVERRIDES)] == list(build.FINETUNE_OVERRIDES)


def test_pretrain_continues_from_given_weights(monkeypatch):
    build = _script("build_mannequin_models")
    unets = []
    monkeypatch.setattr(build, "stage_unet", lambda args: unets.append(args))
    files = ["base.safetensors", "unet.safetensors"]
    argv = ["pretrain", "--pretrain-steps", "4000", "--cooldown-steps", "1500", "--init", files[0], "--init", files[1]]
    assert build.main(argv) == 0
    (pre,) = unets
    assert pre.init == [Path(f) for f in files] and pre.max_steps == 4000 and pre.mode == "plain"
    assert pre.overrides[-1] == "module.lr_decay_steps=1500" and pre.export_trained


def test_unet_extra_world_caches_both_worlds_and_pretrains_on_both(monkeypatch):
    build = _script("build_mannequin_models")
    runs, checked = [], {}
    monkeypatch.setattr(build, "_run", lambda name, argv: runs.append((name, argv)))
    monkeypatch.setattr(build, "_check_cache_matches_init", lambda init, caches: checked.update(caches=caches))
    assert build.main(["cache", "--unet-extra-world"]) == 0
    outs = [argv[argv.index("--out") + 1] for name, argv in runs if name == "cache_latents"]
    assert outs == [str(build.CACHE), str(build.EXTRA_CACHE)]
    maps = [argv[argv.index("--map-file") + 1] for _, argv in runs]
    assert maps == [
        str(build.WORLD / "mapping_file_training.json"),
        str(build.EXTRA_WORLD / "mapping_file_training.json"),
    ]
    runs.clear()
    assert build.main(["cache"]) == 0 and [a[a.index("--out") + 1] for _, a in runs] == [str(build.CACHE)]

    class Stop(Exception):
        pass

    def stop_at_train(name, argv):
        runs.append((name, argv))
        raise Stop

    monkeypatch.setattr(build, "_run", stop_at_train)
    runs.clear()
    with pytest.raises(Stop):
        build.main(["pretrain", "--unet-extra-world", "--pretrain-steps", "10"])
    assert checked["caches"] == [build.CACHE, build.EXTRA_CACHE]  # both checked against the VAE before training
    ((_, argv),) = runs
    joined = f"data.params.train.path=[{build.CACHE},{build.EXTRA_CACHE}]"
    assert joined in argv and argv.index(joined) < argv.index("loss.snr_gamma=5")  # user overrides stay last
    runs.clear()
    with pytest.raises(Stop):
        build.main(["pretrain", "--pretrain-steps", "10"])
    assert checked["caches"] == [build.CACHE] and not any(a.startswith("data.params.train.path") for a in runs[0][1])


def test_paired_differences_pool_the_folds_of_every_seed():
    evaluate = _script("evaluate_mannequin")
    pce = evaluate.pce_name(evaluate.PCE_MIN_SCORE)

    def folds(*aps):
        return [{"AP": ap, "AP50": 0.5, pce: None} for ap in aps]

    scores = {
        ("plain", 23): folds(0.40, 0.50),
        ("plain", 24): folds(0.30, 0.30),
        ("paper", 23): folds(0.42, 0.50),  # +0.02, 0
        ("paper", 24): folds(0.34, 0.32),  # +0.04, +0.02
        ("reference", 25): folds(0.9, 0.9),  # no plain run of seed 25: nothing to pair with
    }
    diffs = evaluate.paired_differences(scores, "plain")
    assert set(diffs) == {"paper"} and set(diffs["paper"]) == {"AP", "AP50"}  # PCE unknown: no row
    ap = diffs["paper"]["AP"]
    assert ap["folds"] == 4 and ap["higher"] == 3
    assert math.isclose(ap["mean"], 0.02) and math.isclose(ap["se"], statistics.stdev([0.02, 0, 0.04, 0.02]) / 2)
    assert ap["seeds"] == pytest.approx({23: 0.01, 24: 0.03})
    assert math.isclose(ap["seed_std"], statistics.stdev([0.01, 0.03]))
    assert diffs["paper"]["AP50"]["mean"] == 0 and diffs["paper"]["AP50"]["higher"] == 0


def _generated_run(root: Path, records, blank: set[int]) -> None:
    """An evaluation run folder whose images are the real renders, except the entries in `blank` (black)."""
    root.mkdir(parents=True)
    entries = []
    for n, r in enumerate(records):
        image = Image.open(r.image_path).convert("RGB")
        if n in blank:
            image = Image.new("RGB", image.size)
        image.save(root / f"{n}.png")
        entries.append(
            {
                "key": r.key,
                "prompt": r.prompt,
                "pose_path": str(r.pose_path),
                "reference_image": str(r.image_path),
                "generated": [f"{n}.png"],
            }
        )
    (root / "index.shard-0-of-1.json").write_text(json.dumps({"entries": entries}))


def test_compare_scores_each_fold_against_the_baseline_of_the_same_seed(tmp_path, capsys, caplog):
    """An oracle detector finds the conditioning pose on every real render and nothing on a black image: the
    paper run, black on the last entry (the second fold), is 1 AP behind in that fold and even in the first."""
    from ldm.data.humansd import read_mappings
    from ldm.data.synthetic import write_tiny_dataset
    from ldm.pose.convert import rescale_pose
    from ldm.pose.io import load_pose

    records = read_mappings(write_tiny_dataset(tmp_path / "data", n=4, size=32, seed=0))  # 3 training entries
    assert len(records) == 3
    truth = {}
    for r in records:
        pixels = np.asarray(Image.open(r.image_path).convert("RGB"))
        pose = load_pose(r.pose_path, width=pixels.shape[1], height=pixels.shape[0])
        truth[pixels.tobytes()] = rescale_pose(pose, pixels.shape[1], pixels.shape[0]).persons

    class Oracle:
        def detect(self, image):
            return list(truth.get(np.ascontiguousarray(image).tobytes(), []))

    evaluate = _script("evaluate_mannequin")
    _generated_run(tmp_path / "a" / "humansd-tiny-plain", records, blank=set())
    _generated_run(tmp_path / "b" / "humansd-tiny-paper", records, blank={len(records) - 1})
    _generated_run(tmp_path / "b" / "humansd-tiny-paper-s24", records, blank=set())  # no plain seed 24: left out
    with caplog.at_level("WARNING"):
        assert evaluate.compare([tmp_path / "a", tmp_path / "b"], "plain", 2, Oracle(), tmp_path / "out") == 0
    assert "paper (seed 24) has no plain run of the same seed" in caplog.text
    result = json.loads((tmp_path / "out" / "paired.json").read_text())
    assert set(result["scores"]) == {"plain (seed 23)", "paper (seed 23)"}
    assert [f["AP"] for f in result["scores"]["plain (seed 23)"]] == pytest.approx([1.0, 1.0])
    ap = result["differences"]["paper"]["AP"]
    assert [f["AP"] for f in result["scores"]["paper (seed 23)"]] == pytest.approx([1.0, 0.0])
    assert ap["mean"] == pytest.approx(-0.5) and ap["se"] == pytest.approx(0.5)
    assert ap["folds"] == 2 and ap["higher"] == 0
    assert "| paper | AP |" in (tmp_path / "out" / "paired.md").read_text()
    capsys.readouterr()
    # bad input: no baseline run, or runs of different entries
    assert evaluate.compare([tmp_path / "b"], "plain", 2, Oracle(), tmp_path / "x") == 2
    assert "no 'plain' run" in capsys.readouterr().err
    _generated_run(tmp_path / "c" / "humansd-tiny-reference", records[:-1], blank=set())
    assert evaluate.compare([tmp_path / "a", tmp_path / "c"], "plain", 2, Oracle(), tmp_path / "x") == 2
    assert "have different images" in capsys.readouterr().err
    assert evaluate.compare([tmp_path / "a", tmp_path / "a"], "plain", 2, Oracle(), tmp_path / "x") == 2
    assert "in two of the folders" in capsys.readouterr().err
    assert evaluate.compare([tmp_path / "a", tmp_path / "b"], "plain", 4, Oracle(), tmp_path / "x") == 2
    assert "4 folds need >= 4 images per run (a run has 3)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--compare", "a", "--folds", "1"], "--folds must be >= 2"),
        (["--compare", "a", "--merge", "b"], "--merge and --compare are separate jobs"),
    ],
)
def test_compare_rejects_one_fold_or_a_merge_at_once(argv, message, capsys):
    evaluate = _script("evaluate_mannequin")
    with pytest.raises(SystemExit) as exc:
        evaluate.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def _digests(folder: Path) -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_all_smoke_runs_the_whole_recipe_end_to_end_in_its_own_folder(tmp_path):
    """`all --smoke 1`: every stage for real (worlds, VAE, decoder, init, cache, round trips, three pose-net runs,
    pre-training, three fine-tunes, evaluation) at toy scale, in a work folder; the repository's files untouched."""
    import subprocess
    import sys

    shipped = _digests(REPO / "humansd_data" / "checkpoints" / "tiny")
    config = (REPO / "configs" / "tiny" / "mannequin-humansd.yaml").read_text()
    work = tmp_path / "build"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "scripts" / "build_mannequin_models.py"), "all", "--smoke", "1"]
    proc = subprocess.run([*cmd, "--workdir", str(work)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tiny = work / "humansd_data" / "checkpoints" / "tiny"
    built = {p.name for p in tiny.iterdir()}
    assert {"vae-tiny.safetensors", "base-tiny.safetensors", "pose-tiny.safetensors"} <= built
    assert {f"humansd-tiny-{m}.safetensors" for m in ("plain", "paper", "reference")} <= built
    assert (work / "humansd_data" / "datasets" / "Mannequin" / "latents-train.safetensors").is_file()
    assert (work / "humansd_data" / "datasets" / "MannequinRoundTrip" / "mapping_file_training.json").is_file()
    extra = json.loads((work / "humansd_data/datasets/MannequinExtra/mapping_file_training.json").read_text())
    assert len(extra) == 32
    # each fine-tune started from the pre-trained UNet and ran the asked number of steps
    info = json.loads(_safetensors_metadata(tiny / "humansd-tiny-paper.safetensors")["info"])
    assert info["steps"] == "1" and info["init"].endswith("logs/mannequin/pretrained/humansd-tiny-plain.safetensors")
    rows = json.loads((work / "eval" / "ablation.json").read_text())["rows"]
    assert rows["paper (seed 23)"]["images"] == 4
    assert {"joints inversion", "marking agreement"} <= set(rows["paper (seed 23)"])  # with the error diagnosis
    # `init` measured the toy VAE's latent scale into the work folder's copy of the config, not the repository's
    assert (work / "configs" / "tiny" / "mannequin-humansd.yaml").read_text() != config
    assert (REPO / "configs" / "tiny" / "mannequin-humansd.yaml").read_text() == config
    assert _digests(REPO / "humansd_data" / "checkpoints" / "tiny") == shipped


def _safetensors_metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["all", "--smoke", "0"], "--smoke takes a number of steps >= 1"), (["world", "--smoke", "1"], "overwrite")],
)
def test_smoke_refuses_zero_steps_and_the_repository_as_work_folder(argv, message, capsys):
    build = _script("build_mannequin_models")
    with pytest.raises(SystemExit, match=None if "--smoke takes" in message else message):
        build.main([*argv, "--workdir", str(REPO)])
    if "--smoke takes" in message:
        assert message in capsys.readouterr().err


def test_workdir_keeps_command_line_paths_where_they_were_typed(monkeypatch, tmp_path):
    build = _script("build_mannequin_models")
    monkeypatch.chdir(tmp_path)
    seen = []
    monkeypatch.setitem(build.STAGES, "unet", lambda args: seen.append((args, Path.cwd())))
    argv = ["unet", "--workdir", "work", "--init", "start.safetensors", "--out-dir", "mine"]
    assert build.main(argv) == 0
    ((args, cwd),) = seen
    assert cwd == (tmp_path / "work").resolve() and (cwd / "configs" / "tiny").is_dir()  # its own configs
    assert args.init == [(tmp_path / "start.safetensors").resolve()] and args.out_dir == (tmp_path / "mine").resolve()
    seen.clear()
    assert build.main(["unet", "--workdir", str(tmp_path / "work")]) == 0  # defaults stay relative: in the folder
    assert seen[0][0].out_dir == build.TINY and seen[0][0].init is None


def test_evaluate_loads_the_unets_and_the_round_trips_with_the_given_base(monkeypatch, tmp_path):
    from ldm.data.synthetic import write_tiny_dataset

    evaluate = _script("evaluate_mannequin")
    world = tmp_path / "world"
    write_tiny_dataset(world, n=4, size=32, seed=0).rename(world / "mapping_file_validation.json")
    unets = tmp_path / "unets"
    unets.mkdir()
    (unets / "humansd-tiny-paper.safetensors").touch()
    loaded, vaes = [], []
    monkeypatch.setattr(evaluate, "WORLD", world)
    monkeypatch.setattr(evaluate, "_detector", lambda checkpoint: evaluate.torch.nn.Identity())
    monkeypatch.setattr(evaluate, "_score", lambda eval_set, *a: {"images": len(eval_set.items)})
    monkeypatch.setattr(evaluate, "_write_tables", lambda rows, outdir: None)
    monkeypatch.setattr(evaluate, "_roundtrip_set", lambda records, vae, out, device: evaluate.EvalSet([], source=""))
    monkeypatch.setattr(evaluate, "_shipped_vae", lambda path: vaes.append(path) or evaluate.torch.nn.Identity())

    def fake_from_config(config, files, device):
        loaded.append(files)
        raise SystemExit("stop after loading")

    monkeypatch.setattr(evaluate.PoseToImagePipeline, "from_config", fake_from_config)
    argv = ["--modes", "paper", "--unet-dir", str(unets), "--outdir", str(tmp_path / "out"), "--limit", "2"]
    with pytest.raises(SystemExit, match="stop after loading"):
        evaluate.main([*argv, "--base", "new-base.safetensors"])
    assert loaded[-1] == [Path("new-base.safetensors"), unets / "humansd-tiny-paper.safetensors"]
    assert vaes[-1] == Path("new-base.safetensors")  # the round trips use the same VAE unless --vae says otherwise
    with pytest.raises(SystemExit):
        evaluate.main([*argv, "--vae", "vae-tiny.safetensors"])
    assert loaded[-1][0] == evaluate.TINY / "base-tiny.safetensors" and vaes[-1] == Path("vae-tiny.safetensors")
