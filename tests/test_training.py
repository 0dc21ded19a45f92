"""Tests of the training stack: tiny runs (loss goes down, bit-exact resume, 2-process DDP), checkpoint layout,
export, resumable data order, atomic checkpoint writes, config validation and every bad-input error."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf
from safetensors.torch import save_file

from ldm.checkpoint import load_weights, read_checkpoint
from ldm.config import load_config
from ldm.data.synthetic import VALIDATION_MAPPING, write_tiny_dataset
from ldm.inference.loading import build_model, load_model
from ldm.training.build import build_callbacks, build_strategy
from ldm.training.callbacks import AtomicCheckpointIO, RunLayout
from ldm.training.config import load_train_config, parse_train_config
from ldm.training.data import ResumableLoader
from ldm.training.ema import shadow_name
from ldm.training.module import lr_factor
from ldm.training.run import RUN_STAMP_ENV, prepare_run

REPO = Path(__file__).parents[1]
TINY = REPO / "configs" / "tiny"
PLAIN, REFERENCE, PAPER = (TINY / f"train-{n}.yaml" for n in ("plain", "heatmap-reference", "heatmap-paper"))
NO_SIDE_CALLBACKS = ["lightning.callbacks.image_sampler=null", "lightning.callbacks.lr_monitor=null"]


def _load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_script = _load_script("train")
export_script = _load_script("export_checkpoint")


class LossRecorder(Callback):
    """Training loss per optimizer step (key = global step after the update)."""

    def __init__(self) -> None:
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step] = outputs["loss"].item()


class KillAt(Callback):
    """Simulates a crash at the start of the batch after global step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated kill")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is as fast as two, and much faster when the CPU is shared (no spinning)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def train_map(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 training items (4 batches of 2 per epoch) + 2 validation items."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny-data"), n=10, size=64, seed=0)


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # configs name model_config relative to the repository root
    monkeypatch.setenv(RUN_STAMP_ENV, "test")


def _overrides(train_map: Path, *extra: str) -> list[str]:
    return [f"data.params.train.map_file={train_map}", *NO_SIDE_CALLBACKS, *extra]


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    rows = []
    for path in sorted(run_dir.glob("csv/version_*/metrics.csv")):
        with path.open() as f:
            rows += list(csv.DictReader(f))
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# Tiny runs


def test_tiny_training_loss_goes_down(train_map: Path, tmp_path: Path) -> None:
    run = prepare_run(
        [PLAIN], _overrides(train_map, "lightning.callbacks.checkpoint=null"), logdir=tmp_path, name="plain"
    )
    recorder = LossRecorder()
    assert not run.datamodule.has_validation  # no validation split configured
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = run.fit(extra_callbacks=[recorder])
    assert trainer.limit_val_batches == 0  # validation off: Lightning never asks for the empty loader
    assert not [w for w in caught if "Total length of" in str(w.message)], [str(w.message) for w in caught]
    losses = [recorder.losses[s] for s in sorted(recorder.losses)]
    assert len(losses) == 50
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.85 * first, (first, last)
    logged = [float(r["train/loss"]) for r in _metrics(run.layout.root) if r.get("train/loss")]
    assert logged == losses  # CSV logger gets every step (log_every_n_steps: 1)


@pytest.fixture(scope="module")
def reference_run(train_map: Path, tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted 8-step run: heatmap loss (reference mode), EMA, validation, checkpoints every 2 steps."""
    logdir = tmp_path_factory.mktemp("runs")
    overrides = _overrides(
        train_map,
        f"data.params.validation={{map_file: {train_map.parent / VALIDATION_MAPPING}, image_size: 32, augment: false}}",
        "lightning.trainer.max_steps=8",
        "lightning.callbacks.checkpoint.every_n_train_steps=2",
        "module.use_ema=true",
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        mp.setenv(RUN_STAMP_ENV, "test")
        run = prepare_run([REFERENCE], overrides, logdir=logdir, name="full")
        recorder = LossRecorder()
        run.fit(extra_callbacks=[recorder])
    return run, recorder.losses, overrides, logdir


@pytest.mark.parametrize("kill_at", [5, 7], ids=["epoch-boundary", "mid-epoch"])
def test_resume_after_kill_is_bit_exact(reference_run, kill_at: int) -> None:
    full, full_losses, overrides, logdir = reference_run
    # 8 items / batch 2 = 4 batches per epoch. Killed after step 5 (resp. 7), the run resumes from the step-4
    # checkpoint (end of epoch 0) resp. the step-6 checkpoint (epoch 1, after batch 2 of 4).
    killed = prepare_run([REFERENCE], overrides, logdir=logdir, name=f"killed{kill_at}")
    with pytest.raises(RuntimeError, match="simulated kill"):
        killed.fit(extra_callbacks=[LossRecorder(), KillAt(kill_at)])
    resumed = prepare_run(None, [], resume=killed.layout.root)
    recorder = LossRecorder()
    resumed.fit(extra_callbacks=[recorder])
    assert sorted(recorder.losses) == list(range(kill_at, 9))
    assert {s: full_losses[s] for s in recorder.losses} == recorder.losses  # exact float equality
    expected, got = full.module.state_dict(), resumed.module.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)  # weights, EMA shadows and counters
    val = [r for r in _metrics(full.layout.root) if r.get("val/loss_simple_ema")]
    assert [int(r["step"]) for r in val] == [3, 7]  # validation at both epoch ends, EMA weights included


def test_init_from_sd_checkpoint_expands_conv_in(train_map: Path, tmp_path: Path) -> None:
    """SD-2.1 -> HumanSD initialisation (spec §1.8): the 4 pose-latent input channels start at zero."""
    sd = build_model(load_config(TINY / "sd-tiny.yaml"))
    ckpt = tmp_path / "sd.ckpt"
    torch.save({"state_dict": sd.state_dict()}, ckpt)
    run = prepare_run([PLAIN], _overrides(train_map), logdir=tmp_path, init_from=ckpt)
    conv_in = run.module.model.unet.input_blocks[0][0].weight  # (32, 8, 3, 3)
    assert torch.equal(conv_in[:, :4], sd.unet.input_blocks[0][0].weight)
    assert not conv_in[:, 4:].any()
    assert torch.equal(run.module.model.vae.decoder.conv_out.weight, sd.vae.decoder.conv_out.weight)


def test_training_checkpoint_loads_into_inference_model(reference_run) -> None:
    run = reference_run[0]
    ckpt = run.layout.checkpoints / "last.ckpt"
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    keys = set(raw["state_dict"])
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys and "alphas_cumprod" in keys
    assert not any(k.startswith(("loss_fn.", "model.model.")) for k in keys)  # no pose net, no wrapper prefix
    assert any(k.startswith("model_ema.") for k in keys)
    inference = build_model(load_config(TINY / "humansd-tiny.yaml"))
    load_weights(inference, ckpt)  # strict; drops model_ema.*
    trained = run.module.model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in inference.state_dict().items())
    assert raw["hyper_parameters"]["config"]["loss"]["heatmap"]["mode"] == "reference"


def test_export_round_trip(reference_run, tmp_path: Path) -> None:
    run = reference_run[0]
    ckpt = run.layout.checkpoints / "last.ckpt"
    out = tmp_path / "tiny.safetensors"
    assert export_script.main([str(ckpt), str(out)]) == 0
    _, meta = read_checkpoint(out)
    assert meta["format"] == "humansd-inference-v1" and meta["ema"] is True
    assert meta["code_version"] and meta["git_commit"]
    model, _ = load_model(OmegaConf.create(meta["config"]), out)
    ema = run.module.model_ema
    for name in ema.names:
        assert torch.equal(model.model.get_parameter(name), ema.shadow(name))
    plain = tmp_path / "tiny-no-ema.safetensors"
    assert export_script.main([str(ckpt), str(plain), "--no-ema", "--dtype", "fp16"]) == 0
    model, _ = load_model(OmegaConf.create(read_checkpoint(plain)[1]["config"]), plain)
    weight = run.module.model.unet.out[-1].weight
    assert torch.equal(model.unet.out[-1].weight, weight.half().float())
    assert torch.equal(model.alphas_cumprod, run.module.model.alphas_cumprod)  # schedule stays float32
    unet = tmp_path / "unet.safetensors"
    assert export_script.main([str(ckpt), str(unet), "--unet-only"]) == 0
    unet_state, unet_meta = read_checkpoint(unet)
    assert unet_meta["parts"] == "unet" and all(k.startswith("model.diffusion_model.") for k in unet_state)
    full_state = read_checkpoint(out)[0]
    assert unet_state.keys() == {k for k in full_state if k.startswith("model.diffusion_model.")}
    base = tmp_path / "base.safetensors"
    save_file({k: v for k, v in full_state.items() if k not in unet_state}, str(base))
    model, _ = load_model(OmegaConf.create(meta["config"]), [base, unet])  # the split layout loads as one model
    for name in ema.names:
        assert torch.equal(model.model.get_parameter(name), ema.shadow(name))


def torchrun_train(nproc: int, args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --nproc-per-node N scripts/train.py ARGS` from the repo, 1 thread each."""
    env = {k: v for k, v in os.environ.items() if k != RUN_STAMP_ENV}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    cmd += ["scripts/train.py", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_process_ddp_gloo(train_map: Path, tmp_path: Path) -> None:
    proc = torchrun_train(2, [
        "--config", str(PLAIN), "--logdir", str(tmp_path), "--name", "ddp",
        *_overrides(train_map, "lightning.trainer.max_steps=3", "lightning.trainer.devices=2",
                    "lightning.strategy.name=ddp", "lightning.callbacks.lr_monitor={}",
                    "lightning.callbacks.image_sampler={every_n_steps: 2, num_images: 2, steps: 2}"),
    ])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = tmp_path.glob("job-*_ddp")
    rows = _metrics(run_dir)
    assert [int(r["step"]) for r in rows if r.get("train/loss")] == [0, 1, 2]
    # lr = accumulate (1) x devices (2) x batch (2) x base (2.5e-4)
    assert {float(r["lr-AdamW"]) for r in rows if r.get("lr-AdamW")} == {1e-3}
    # 2 ranks x batch 2 over 8 items: 2 batches per epoch, so step 3 is in epoch 1
    assert [int(r["epoch"]) for r in rows if r.get("train/loss")] == [0, 0, 1]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "GLOBAL_RANK: 1" in proc.stdout + proc.stderr
    assert [p.name for p in (run_dir / "images" / "train").glob("*.png")] == ["samples_gs-000002_e-000000_b-000001.png"]


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: one clear error each, before any step


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert train_script.main(argv) == 2
    return capsys.readouterr().err


def test_error_missing_dataset(tmp_path: Path, capsys) -> None:
    err = _run_cli(["--config", str(PLAIN), "--logdir", str(tmp_path), "data.params.train.map_file=/nope.json"], capsys)
    assert "Mapping file not found: /nope.json" in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_error_empty_mapping(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "mapping.json"
    empty.write_text("{}")
    err = _run_cli(["--config", str(PLAIN), "--logdir", str(tmp_path), f"data.params.train.map_file={empty}"], capsys)
    assert "is empty" in err


def test_error_unset_dataset_placeholder(tmp_path: Path, capsys) -> None:
    err = _run_cli(["--config", str(PLAIN), "--logdir", str(tmp_path)], capsys)
    assert "'data.params.train.map_file' must be set" in err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("module.learning_rate=1e-4", "module: unknown config key(s) ['learning_rate']"),
        ("losss.heatmap=null", "Unknown key(s) ['losss'] in 'config'"),
        ("loss.heatmap.pose_estimator.ckpt=x", "Unknown key(s) ['ckpt'] in 'loss.heatmap.pose_estimator'"),
        ("lightning.trainer.max_step=3", "lightning.trainer: unknown config key(s) ['max_step']"),
        ("lightning.callbacks.checkpoint.every_n_steps=3", "unknown config key(s) ['every_n_steps']"),
        ("lightning.strategy.name=deepspeed", "'lightning.strategy.name' must be one of"),
    ],
)
def test_error_unknown_config_key(train_map: Path, tmp_path: Path, capsys, override: str, message: str) -> None:
    err = _run_cli(["--config", str(REFERENCE), "--logdir", str(tmp_path), *_overrides(train_map, override)], capsys)
    assert message in err


def test_error_non_matching_init_checkpoint(train_map: Path, tmp_path: Path, capsys) -> None:
    other = build_model(load_config(TINY / "humansd-tiny.yaml", ["model.params.unet.params.model_channels=64"]))
    ckpt = tmp_path / "other.ckpt"
    torch.save({"state_dict": other.state_dict()}, ckpt)
    err = _run_cli(
        ["--config", str(PLAIN), "--logdir", str(tmp_path), "--init-from", str(ckpt), *_overrides(train_map)], capsys
    )
    assert "does not match LatentDiffusion" in err and "shape mismatch" in err
    assert not (tmp_path / "test_train-plain").exists()


def test_error_resume_with_another_config(reference_run, train_map: Path, capsys) -> None:
    run = reference_run[0]
    err = _run_cli(["--resume", str(run.layout.root), "--config", str(PAPER), *_overrides(train_map)], capsys)
    assert "different config" in err and "loss.heatmap.mode ('reference' -> 'paper')" in err
    err = _run_cli(["--resume", str(run.layout.root), "module.base_learning_rate=1.0"], capsys)
    assert "module.base_learning_rate (0.00025 -> 1.0)" in err


def test_error_resume_from_weights_only_or_foreign_checkpoint(tmp_path: Path, capsys) -> None:
    err = _run_cli(["--resume", str(tmp_path / "missing")], capsys)
    assert "no such run folder or checkpoint file" in err
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "configs").mkdir()
    (run_dir / "configs" / "x-project.yaml").write_text(PLAIN.read_text())
    torch.save({"state_dict": {}}, run_dir / "checkpoints" / "last.ckpt")
    err = _run_cli(["--resume", str(run_dir), "data.params.train.map_file=x"], capsys)
    assert "was not written by scripts/train.py" in err


# ---------------------------------------------------------------------------------------------------------------------
# Pieces


def test_resumable_loader_skips_consumed_batches_and_shards_ranks() -> None:
    data = list(range(10))

    def loader(rank: int = 0, world: int = 1) -> ResumableLoader:
        return ResumableLoader(data, batch_size=2, seed=3, num_replicas=world, rank=rank)

    first = loader()
    first.sampler.set_epoch(2)
    it = iter(first)
    consumed = [next(it).tolist() for _ in range(2)]
    state = first.state_dict()
    assert state["epoch"] == 2 and state["batches_consumed"] == 2
    rest = [b.tolist() for b in it]
    second = loader()
    second.load_state_dict(state)
    second.sampler.set_epoch(2)  # Lightning calls set_epoch after load_state_dict
    assert [b.tolist() for b in second] == rest
    assert [b.tolist() for b in second] == consumed + rest  # the following iteration is a full epoch again
    # Two ranks split the same epoch order (padded to equal length) and never share an index within a batch step.
    ranks = [loader(r, 2) for r in (0, 1)]
    for r in ranks:
        r.sampler.set_epoch(2)
    shards = [[i for b in r for i in b.tolist()] for r in ranks]
    assert len(shards[0]) == len(shards[1]) == 5
    assert sorted(shards[0] + shards[1]) == sorted(i for b in consumed + rest for i in b)


def test_atomic_checkpoint_io_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpts" / "last.ckpt"
    io.save_checkpoint({"w": torch.ones(3)}, path)
    assert torch.equal(torch.load(path)["w"], torch.ones(3))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"w": torch.zeros(3), "x": Unpicklable()}, path)
    assert torch.equal(torch.load(path)["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary left behind


@pytest.mark.parametrize(
    "names",
    [
        ["tiny/train-plain.yaml"],
        ["tiny/train-heatmap-reference.yaml"],
        ["tiny/train-heatmap-paper.yaml"],
        ["humansd/humansd-finetune.yaml"],
        ["humansd/humansd-finetune-originalloss.yaml"],
        ["humansd/humansd-finetune-fsdp.yaml"],
    ],
)
def test_shipped_training_configs_validate(names: list[str], tmp_path: Path) -> None:
    config = parse_train_config(
        load_train_config([REPO / "configs" / n for n in names], ["data.params.train.map_file=x"])
    )
    build_callbacks(config, RunLayout(tmp_path), stamp="x")
    strategy = build_strategy(config.lightning.strategy)
    if "fsdp" in names[0]:
        assert type(strategy).__name__ == "FSDPStrategy"
    if "originalloss" in names[0]:
        assert config.loss.heatmap is None
    elif "humansd/" in names[0]:
        h = config.loss.heatmap
        assert (h.mode, h.weight, h.threshold) == ("reference", 0.1, 0.05)
        assert config.module["base_learning_rate"] == 5e-6
        assert config.data["params"]["batch_size"] == 4
        assert config.init.checkpoint.endswith("v2-1_512-ema-pruned.ckpt")
        assert config.lightning.callbacks.checkpoint["every_n_train_steps"] == 1000
        assert config.model["params"]["unet"]["params"]["in_channels"] == 8


def test_ema_shadow_names_match_the_original_litema() -> None:
    assert shadow_name("diffusion_model.input_blocks.0.0.weight") == "diffusion_modelinput_blocks00weight"


def test_init_from_several_files_that_together_hold_the_model(train_map: Path, tmp_path: Path, capsys) -> None:
    """`--init-from base --init-from unet`: the split shipped layout (VAE + text tower file, UNet file)."""
    from safetensors.torch import save_file

    torch.manual_seed(5)
    source = prepare_run([PLAIN], _overrides(train_map), logdir=tmp_path).module.model.state_dict()
    unet = {k: v.contiguous() for k, v in source.items() if k.startswith("model.diffusion_model.")}
    base = {k: v.contiguous() for k, v in source.items() if k not in unet}
    save_file(unet, str(tmp_path / "unet.safetensors"))
    save_file(base, str(tmp_path / "base.safetensors"))
    files = [tmp_path / "base.safetensors", tmp_path / "unet.safetensors"]
    run = prepare_run([PLAIN], _overrides(train_map), logdir=tmp_path, seed=99, init_from=files)
    got = run.module.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in source.items())
    config = tmp_path / "split.yaml"
    config.write_text(f"init:\n  checkpoint: [{files[0]}, {files[1]}]\n")
    run = prepare_run([PLAIN, config], _overrides(train_map), logdir=tmp_path, seed=98)
    assert torch.equal(run.module.model.state_dict()[next(iter(unet))], next(iter(unet.values())))
    argv = ["--config", str(PLAIN), "--logdir", str(tmp_path), *_overrides(train_map)]
    err = _run_cli([*argv, "--init-from", str(files[1])], capsys)  # the UNet file alone is not a whole model
    assert "does not match LatentDiffusion" in err
    err = _run_cli([*argv, "--init-from", str(files[0]), "--init-from", str(files[0])], capsys)
    assert "repeats" in err


# ---------------------------------------------------------------------------------------------------------------------
# Learning-rate schedule


def test_lr_factor_shapes() -> None:
    assert [lr_factor(s, 10) for s in (0, 5, 9)] == [1.0, 1.0, 1.0]  # constant: the original
    assert [lr_factor(s, 10, warmup_steps=4) for s in (0, 1, 3, 9)] == [0.25, 0.5, 1.0, 1.0]
    linear = [lr_factor(s, 10, schedule="linear") for s in range(11)]
    assert linear == pytest.approx([1 - s / 10 for s in range(11)])
    cooldown = [lr_factor(s, 10, schedule="linear", decay_steps=4, min_ratio=0.5) for s in range(11)]
    assert cooldown == pytest.approx([1.0] * 7 + [0.875, 0.75, 0.625, 0.5])  # the last 4 steps only
    cosine = [lr_factor(s, 10, schedule="cosine", warmup_steps=2) for s in (0, 2, 6, 10)]
    assert cosine == pytest.approx([0.5, 1.0, 0.5, 0.0])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("module.lr_schedule=step", "Unknown lr_schedule 'step'"),
        ("module.lr_warmup_steps=-1", "lr_warmup_steps must be an integer >= 0"),
        ("module.lr_decay_steps=0", "lr_decay_steps must be an integer >= 1"),
        ("module.lr_min_ratio=2", "lr_min_ratio must be in [0, 1]"),
    ],
)
def test_error_bad_lr_schedule(train_map: Path, tmp_path: Path, capsys, override: str, message: str) -> None:
    err = _run_cli(["--config", str(PLAIN), "--logdir", str(tmp_path), *_overrides(train_map, override)], capsys)
    assert message in err


def test_lr_schedule_is_followed_and_a_resume_can_add_a_cooldown(train_map: Path, tmp_path: Path) -> None:
    common = [
        f"data.params.train.map_file={train_map}",
        "lightning.callbacks.image_sampler=null",  # the LearningRateMonitor stays on: it logs `lr-AdamW` per step
        "lightning.callbacks.checkpoint.every_n_train_steps=4",
        "module.scale_lr=false",
    ]
    run = prepare_run(
        [PLAIN],
        [*common, "lightning.trainer.max_steps=8", "module.base_learning_rate=1e-3"],
        logdir=tmp_path,
        name="const",
    )
    run.fit()
    # Resume the constant-rate run (its checkpoint has no scheduler state) with a linear decay over 4 more steps.
    resumed = prepare_run(
        None,
        ["lightning.trainer.max_steps=12", "module.lr_schedule=linear", "module.lr_decay_steps=4"],
        resume=run.layout.root,
    )
    resumed.fit()
    lrs = {int(r["step"]): float(r["lr-AdamW"]) for r in _metrics(run.layout.root) if r.get("lr-AdamW")}
    assert sorted(lrs) == list(range(12))
    assert [lrs[s] for s in range(9)] == pytest.approx([1e-3] * 9)  # the constant part and the decay's start
    assert [lrs[s] for s in range(9, 12)] == pytest.approx([7.5e-4, 5e-4, 2.5e-4])  # then on the decay's curve
    with pytest.raises(ValueError, match=r"lr_decay_steps \(20\) is larger than lightning.trainer.max_steps \(12\)"):
        prepare_run(
            None,
            ["lightning.trainer.max_steps=12", "module.lr_schedule=linear", "module.lr_decay_steps=20"],
            resume=run.layout.root,
        ).fit()
