"""One training run: resolve config and resume state, validate everything, build, and fit.

``prepare_run`` does all the checks that can fail (config keys, dataset paths, checkpoint compatibility, resume
config mismatch) before a Trainer exists, so each mistake gives one clear error and no step runs.
``scripts/train.py`` is a thin CLI over it.

Run folder (spec §4.1): ``<logdir>/<stamp>_<name>/`` with ``checkpoints/`` (``last.ckpt`` + the latest step
checkpoint), ``checkpoints/trainstep_checkpoints/``, ``configs/<stamp>-project.yaml`` and
``configs/<stamp>-lightning.yaml``, ``images/train/``, and ``csv/`` or ``tensorboard/``.

References:
    IDEA-Research/HumanSD (c5db29d) main.py (``--resume`` of a folder or a checkpoint, logdir naming, seed 23).
"""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from ldm.checkpoint import TRUST_ENV
from ldm.training.build import (
    build_datamodule,
    build_loss,
    build_model,
    build_module,
    build_trainer,
    check_data_fits_model,
    check_lightning_config,
    check_loss_files,
)
from ldm.training.callbacks import RunLayout
from ldm.training.config import (
    FINGERPRINT_SECTIONS,
    TrainConfig,
    fingerprint_diff,
    load_train_config,
    parse_train_config,
)
from ldm.training.data import ResumableDataModule
from ldm.training.module import LatentDiffusionModule

logger = logging.getLogger(__name__)

__all__ = ["RUN_STAMP_ENV", "TrainRun", "prepare_run", "resolve_resume", "run_stamp"]

RUN_STAMP_ENV = "HUMANSD_RUN_STAMP"  # shared by all processes of one multi-process run


def run_stamp(now: datetime | None = None) -> str:
    """The run folder's time stamp, identical in every process of a multi-process launch.

    Single process: the current time, exported in ``HUMANSD_RUN_STAMP`` so that the processes Lightning's DDP
    launcher starts (they re-run the script) reuse it. torchrun / SLURM (all ranks start at once): the job id
    (``TORCHELASTIC_RUN_ID``, a uuid with ``--standalone``; ``SLURM_JOB_ID``) unless the stamp is set explicitly.
    """
    if stamp := os.environ.get(RUN_STAMP_ENV):
        return stamp
    multi = int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if multi:
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID")
        if not job or job == "none":
            raise ValueError(
                f"Multi-process launch without a shared run id: pass --rdzv-id (or --standalone) to torchrun, run "
                f"under SLURM, or set {RUN_STAMP_ENV}=<stamp> for every process."
            )
        stamp = f"job-{job}"
    else:
        stamp = (now or datetime.now()).strftime("%Y-%m-%dT%H-%M-%S")
    os.environ[RUN_STAMP_ENV] = stamp
    return stamp


def resolve_resume(path: str | Path) -> tuple[Path, Path]:
    """(run folder, checkpoint) for ``--resume``: a run folder (``checkpoints/last.ckpt``, else the newest
    ``checkpoints/*.ckpt``) or a checkpoint file inside a run folder."""
    path = Path(path)
    if path.is_dir():
        ckpt_dir = path / "checkpoints"
        last = ckpt_dir / "last.ckpt"
        if last.is_file():
            return path, last
        candidates = sorted(ckpt_dir.glob("*.ckpt"), key=lambda p: p.stat().st_mtime) if ckpt_dir.is_dir() else []
        if not candidates:
            raise FileNotFoundError(f"--resume {path}: no checkpoints/last.ckpt or checkpoints/*.ckpt in this folder.")
        return path, candidates[-1]
    if not path.is_file():
        raise FileNotFoundError(f"--resume {path}: no such run folder or checkpoint file.")
    for parent in path.parents:
        if parent.name == "checkpoints":
            return parent.parent, path
    raise ValueError(f"--resume {path}: the checkpoint is not inside a run folder (<run>/checkpoints/...).")


def saved_config_paths(run_dir: Path) -> list[Path]:
    """The newest ``configs/*-project.yaml`` and ``*-lightning.yaml`` of a run folder."""
    configs = run_dir / "configs"
    project = sorted(configs.glob("*-project.yaml"))
    lightning = sorted(configs.glob("*-lightning.yaml"))
    if not project:
        raise FileNotFoundError(f"{configs} has no *-project.yaml; pass --config with the run's training config.")
    return [project[-1], *lightning[-1:]]


def read_training_checkpoint(path: Path, *, trust_pickle: bool) -> dict[str, Any]:
    """The non-tensor parts of a Lightning checkpoint (memory-mapped; tensors are not read)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trust_pickle, mmap=True)
    except (pickle.UnpicklingError, RuntimeError) as err:
        raise ValueError(
            f"{path} could not be read as a training checkpoint ({str(err).splitlines()[0][:160]}); if you trust "
            f"it, pass --trust-checkpoint."
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning training checkpoint (no 'state_dict').")
    return ckpt


def check_resume_compatible(ckpt: dict[str, Any], config: TrainConfig, path: Path) -> int:
    """Raise unless the checkpoint was written by a run with the same model/loss/module config; returns its seed."""
    hparams = ckpt.get("hyper_parameters") or {}
    saved = hparams.get("config")
    if not isinstance(saved, dict):
        raise ValueError(
            f"{path} was not written by scripts/train.py (no resolved config in its hyperparameters); start a new "
            f"run from its weights with --init-from {path}."
        )
    if "optimizer_states" not in ckpt or not ckpt["optimizer_states"]:
        raise ValueError(
            f"{path} holds weights only (a trainstep checkpoint) and cannot resume training; use --init-from {path}."
        )
    diff = fingerprint_diff(saved, config.to_dict())
    if diff:
        shown = "; ".join(diff[:8]) + (f"; ... ({len(diff)} in all)" if len(diff) > 8 else "")
        raise ValueError(
            f"--resume {path}: the checkpoint was trained with a different config in {list(FINGERPRINT_SECTIONS)}: "
            f"{shown}. Resume without --config (the run's saved config is used) or start a new run with "
            f"--init-from."
        )
    return int(hparams.get("seed", 23))


@dataclass
class TrainRun:
    """Everything ``trainer.fit`` needs, validated.

    Attributes:
        config: the validated config.
        layout: the run folder.
        stamp: time stamp of this (part of the) run, used for the saved config file names.
        seed: data-order and noise seed.
        module: the LightningModule.
        datamodule: the resumable data module.
        resume_checkpoint: Lightning checkpoint to resume from, or None.
        trust_pickle: load the resume checkpoint with ``weights_only=False``.
    """

    config: TrainConfig
    layout: RunLayout
    stamp: str
    seed: int
    module: LatentDiffusionModule
    datamodule: ResumableDataModule
    resume_checkpoint: Path | None = None
    trust_pickle: bool = False

    def fit(self, *, extra_callbacks: list[Callback] | None = None) -> pl.Trainer:
        """Build the Trainer and train (resuming if a checkpoint was given)."""
        trainer = build_trainer(
            self.config,
            self.layout,
            stamp=self.stamp,
            extra_callbacks=extra_callbacks,
            has_validation=self.datamodule.has_validation,
        )
        with warnings.catch_warnings():
            # The frozen VAE, text encoder and pose net are in eval mode on purpose.
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", category=UserWarning)
            trainer.fit(
                self.module,
                datamodule=self.datamodule,
                ckpt_path=self.resume_checkpoint,
                weights_only=False if self.trust_pickle else None,
            )
        return trainer


def prepare_run(
    config_paths: list[str | Path] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    resume: str | Path | None = None,
    name: str | None = None,
    logdir: str | Path = "logs",
    seed: int = 23,
    init_from: str | Path | list[str | Path] | None = None,
    trust_checkpoint: bool = False,
) -> TrainRun:
    """Validate and build a run (see module docstring); nothing is written to disk yet.

    Args:
        config_paths: training YAML(s); may be omitted with ``resume`` (the run's saved config is used).
        overrides: dotted ``key=value`` config overrides.
        resume: run folder or checkpoint to resume (the run continues in that folder).
        name: run-folder suffix (default: the first config file's stem).
        logdir: parent of new run folders.
        seed: seed of weights init, data order and noise (a resumed run keeps its checkpoint's seed).
        init_from: initial weights (one file, or a list of files that together hold the model), overriding
            ``init.checkpoint`` (ignored when resuming).
        trust_checkpoint: allow checkpoints that need full unpickling.
    """
    trust = trust_checkpoint or os.environ.get(TRUST_ENV) == "1"
    run_dir = ckpt_path = None
    if resume is not None:
        if name is not None:
            raise ValueError("--name and --resume are exclusive (a resumed run keeps its folder).")
        run_dir, ckpt_path = resolve_resume(resume)
        config_paths = config_paths or saved_config_paths(run_dir)
    if not config_paths:
        raise ValueError("Give --config (or --resume with a run folder).")
    config = parse_train_config(load_train_config(config_paths, overrides))
    check_lightning_config(config)
    if ckpt_path is not None:
        seed = check_resume_compatible(read_training_checkpoint(ckpt_path, trust_pickle=trust), config, ckpt_path)
    pl.seed_everything(seed, workers=True)
    datamodule = build_datamodule(config, seed=seed)  # dataset paths and mappings are checked here
    check_loss_files(config.loss)
    init = None if ckpt_path is not None else (init_from if init_from is not None else config.init.checkpoint)
    # The model is built before the loss so that its random init does not depend on the loss (pose net init).
    model = build_model(config, init_checkpoint=init, trust_pickle=True if trust else None)
    loss_fn = build_loss(config.loss)
    check_data_fits_model(datamodule, model, loss_fn)
    module = build_module(config, model, loss_fn, seed=seed)
    stamp = run_stamp()
    if run_dir is None:
        run_dir = Path(logdir) / f"{stamp}_{name or Path(config_paths[0]).stem}"
    return TrainRun(config, RunLayout(run_dir), stamp, seed, module, datamodule, ckpt_path, trust)
