"""Training configs: YAML (``base:`` inheritance) -> OmegaConf (+ dotted overrides) -> validated dataclasses.

A training config has these top-level sections (``configs/humansd/humansd-finetune.yaml`` is the reference)::

    base: other.yaml            # optional: merged first (path relative to this file), this file overrides it
    model_config: configs/...   # an inference config whose `model` node is used ...
    model: {target, params}     # ... or the model node itself (exactly one of the two)
    init: {checkpoint, expand_conv_in}          # weights to start from (SD-2.1 with the 4->8 input expansion)
    loss: {heatmap: null | {mode, weight, threshold, pose_estimator: {config, checkpoint}}, snr_gamma: null | float}
    module: {...}               # keyword arguments of LatentDiffusionModule (learning rate, EMA, trainable, ...)
    data: {target, params}      # a LightningDataModule (ldm.data.humansd.HumanPoseDataModule)
    lightning:
      trainer: {...}            # lightning.pytorch.Trainer keyword arguments
      strategy: {name: auto | ddp | ddp_spawn | fsdp, params: {...}}
      callbacks: {checkpoint, step_checkpoint, image_sampler, lr_monitor}   # keyword arguments, or null = off
      logger: csv | tensorboard

``loss.heatmap: null`` selects the plain loss (HumanSD's "originalloss" ablation). Unknown keys anywhere raise
with the list of valid keys.

References:
    crowsonkb/k-diffusion ``config.py`` (defaults + validation); IDEA-Research/HumanSD (c5db29d) main.py (sections
    ``model``/``data``/``lightning``; spec §4.1).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from ldm.config import load_config

__all__ = [
    "FINGERPRINT_SECTIONS",
    "CallbacksConfig",
    "HeatmapLossConfig",
    "InitConfig",
    "LightningConfig",
    "LoggerKind",
    "LossConfig",
    "PoseNetConfig",
    "StrategyConfig",
    "StrategyName",
    "TrainConfig",
    "config_diff",
    "config_fingerprint",
    "load_train_config",
    "parse_train_config",
]

# Sections that define the trained network and objective: a resumed run must match them.
FINGERPRINT_SECTIONS: tuple[str, ...] = ("model", "loss", "module")


class StrategyName(StrEnum):
    """Lightning strategies the training script builds (``auto``: single device)."""

    AUTO = "auto"
    DDP = "ddp"
    DDP_SPAWN = "ddp_spawn"
    FSDP = "fsdp"


class LoggerKind(StrEnum):
    """Metric loggers."""

    CSV = "csv"
    TENSORBOARD = "tensorboard"


@dataclass(frozen=True)
class PoseNetConfig:
    """The frozen pose network of the heatmap loss.

    Args:
        config: HigherHRNet preset (``w48``, ``tiny``) or pose YAML (see ``ldm.pose.estimator.load_pose_config``).
        checkpoint: weights; null means random weights (tests and benchmarks only; logged as a warning).
    """

    config: str = "w48"
    checkpoint: str | None = None


@dataclass(frozen=True)
class HeatmapLossConfig:
    """``HeatmapGuidedLoss`` options (see ``ldm.diffusion.loss``)."""

    pose_estimator: PoseNetConfig = field(default_factory=PoseNetConfig)
    mode: str = "reference"
    weight: float = 0.1
    threshold: float = 0.05


@dataclass(frozen=True)
class LossConfig:
    """``heatmap`` null: plain noise-prediction MSE; otherwise the heatmap-guided loss.

    ``snr_gamma``: Min-SNR-gamma timestep weighting of either loss (Hang et al. 2023; 5 is their value), null for
    the uniform weighting of SD and HumanSD. Meant for training from scratch (the mannequin world's pre-training).
    """

    heatmap: HeatmapLossConfig | None = None
    snr_gamma: float | None = None


@dataclass(frozen=True)
class InitConfig:
    """Initial weights.

    Args:
        checkpoint: a LatentDiffusion checkpoint (e.g. ``v2-1_512-ema-pruned.ckpt``), or a list of files that
            together hold the model (e.g. the shared tiny base file + a UNet file; a key in two files is an error);
            null = random init.
        expand_conv_in: widen a 4-channel UNet input conv to the model's 8 channels, new channels zero (spec §1.8).
    """

    checkpoint: str | list[str] | None = None
    expand_conv_in: bool = True


@dataclass(frozen=True)
class StrategyConfig:
    """``name`` plus keyword arguments of the matching Lightning strategy class."""

    name: str = "auto"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CallbacksConfig:
    """Keyword arguments per callback; null disables it.

    Args:
        checkpoint: ``ModelCheckpoint`` into ``checkpoints/`` (resume point; ``last.ckpt``).
        step_checkpoint: ``ModelCheckpoint`` into ``checkpoints/trainstep_checkpoints/`` (kept, weights only).
        image_sampler: ``ldm.training.callbacks.ImageSampler``.
        lr_monitor: ``LearningRateMonitor``.
    """

    checkpoint: dict[str, Any] | None = field(default_factory=lambda: {"every_n_train_steps": 1000})
    step_checkpoint: dict[str, Any] | None = None
    image_sampler: dict[str, Any] | None = None
    lr_monitor: dict[str, Any] | None = field(default_factory=lambda: {"logging_interval": "step"})


@dataclass(frozen=True)
class LightningConfig:
    """Trainer, strategy, callbacks and logger."""

    trainer: dict[str, Any] = field(default_factory=dict)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    logger: str = "csv"


@dataclass(frozen=True)
class TrainConfig:
    """A validated training config (see module docstring)."""

    model: dict[str, Any]
    data: dict[str, Any]
    loss: LossConfig = field(default_factory=LossConfig)
    init: InitConfig = field(default_factory=InitConfig)
    module: dict[str, Any] = field(default_factory=dict)
    lightning: LightningConfig = field(default_factory=LightningConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (the resolved config saved in the run folder and in checkpoints)."""
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------------------------------
# Loading


def _load_with_base(path: Path, chain: tuple[Path, ...] = ()) -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file not found: {path}")
    if path.resolve() in chain:
        raise ValueError(f"Config inheritance cycle: {' -> '.join(str(p) for p in (*chain, path.resolve()))}.")
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"{path} must contain a mapping of config sections.")
    base = cfg.pop("base", None)
    if base is None:
        return cfg
    return OmegaConf.merge(_load_with_base(path.parent / str(base), (*chain, path.resolve())), cfg)


def load_train_config(paths: str | Path | Sequence[str | Path], overrides: Sequence[str] = ()) -> DictConfig:
    """Read one or more training YAMLs (merged left to right, each with its ``base:`` chain) plus overrides.

    ``model_config: <inference yaml>`` is replaced by that file's ``model`` node, so the result is self-contained.

    Args:
        paths: YAML file(s).
        overrides: dotted ``key=value`` items (OmegaConf dotlist), e.g. ``data.params.batch_size=2``.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise ValueError("Give at least one training config file.")
    cfg = OmegaConf.create()
    for path in paths:
        cfg = OmegaConf.merge(cfg, _load_with_base(Path(path)))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"Override {item!r} must look like key.sub=value.")
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    model_config = cfg.pop("model_config", None)
    if model_config is not None:
        if cfg.get("model") is not None:
            raise ValueError("Give either 'model' or 'model_config' in a training config, not both.")
        inference = load_config(str(model_config))
        if "model" not in inference:
            raise ValueError(f"model_config {model_config} has no 'model' section.")
        cfg.model = inference.model
    return cfg


# ---------------------------------------------------------------------------------------------------------------------
# Validation


def _union_args(annotation: Any) -> tuple[Any, ...]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


def _check_value(value: Any, annotation: Any, path: str) -> Any:
    """Build nested dataclasses and check scalar/mapping types against a field annotation."""
    options = _union_args(annotation)
    if value is None:
        if type(None) in options:
            return None
        raise ValueError(f"'{path}' must not be null.")
    for option in options:
        if dataclasses.is_dataclass(option):
            return _build(option, value, path)
    for option in options:
        if typing.get_origin(option) is dict and isinstance(value, Mapping):
            return dict(value)
        if typing.get_origin(option) is list and isinstance(value, (list, tuple)):
            (item,) = typing.get_args(option)
            return [_check_value(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        if option is bool and isinstance(value, bool):
            return value
        if option in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
            return option(value) if option is float else value
        if option is str and isinstance(value, str):
            return value
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ValueError(f"'{path}' must be {expected}; got {type(value).__name__} {value!r:.80}.")


def _build(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, Mapping):
        raise ValueError(f"'{where or 'config'}' must be a mapping; got {type(values).__name__} {values!r:.80}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"Unknown key(s) {unknown} in '{where or 'config'}'; valid keys: {sorted(fields)}.")
    missing = sorted(
        n
        for n, f in fields.items()
        if n not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ValueError(f"Missing required key(s) {missing} in '{where or 'config'}'.")
    kwargs = {
        name: _check_value(value, hints[name], f"{where}.{name}" if where else name) for name, value in values.items()
    }
    return cls(**kwargs)


def _check_choice(enum: type[StrEnum], value: str, where: str) -> None:
    if value not in {e.value for e in enum}:
        raise ValueError(f"'{where}' must be one of {[e.value for e in enum]}; got {value!r}.")


def parse_train_config(cfg: DictConfig | Mapping[str, Any]) -> TrainConfig:
    """Validate a loaded config and return the typed ``TrainConfig``.

    Raises:
        ValueError: unknown or missing keys, wrong types, unknown strategy/logger names.
    """
    try:
        raw = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True) if isinstance(cfg, DictConfig) else cfg
    except MissingMandatoryValue as err:
        key = err.full_key
        raise ValueError(f"Config key '{key}' must be set (a ??? placeholder); pass {key}=<value>.") from None
    if not isinstance(raw, Mapping):
        raise ValueError("A training config must be a mapping of sections.")
    for section in ("model", "data"):
        node = raw.get(section)
        if not isinstance(node, Mapping) or "target" not in node:
            raise ValueError(
                f"Training config section '{section}' must be a {{target, params}} node"
                + (" (or give 'model_config: <inference yaml>')." if section == "model" else ".")
            )
    config = _build(TrainConfig, raw, "")
    _check_choice(StrategyName, config.lightning.strategy.name, "lightning.strategy.name")
    _check_choice(LoggerKind, config.lightning.logger, "lightning.logger")
    return config


# ---------------------------------------------------------------------------------------------------------------------
# Fingerprints (resume check)


# `module` keys a resumed run may change: the learning-rate schedule (adding a cool-down to a run that trained at a
# constant rate is the usual reason to resume with new settings).
RESUMABLE_MODULE_KEYS: tuple[str, ...] = ("lr_schedule", "lr_warmup_steps", "lr_decay_steps", "lr_min_ratio")


def _fingerprint_view(config: Mapping[str, Any]) -> dict[str, Any]:
    view = {k: config.get(k) for k in FINGERPRINT_SECTIONS}
    if isinstance(view.get("module"), Mapping):
        view["module"] = {k: v for k, v in view["module"].items() if k not in RESUMABLE_MODULE_KEYS}
    return view


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """SHA-256 of the sections a resumed run must share (``FINGERPRINT_SECTIONS``), canonical JSON."""
    text = json.dumps(_fingerprint_view(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings (for error messages)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += config_diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix[:-1]} ({old!r} -> {new!r})"]


def fingerprint_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``config_diff`` restricted to ``FINGERPRINT_SECTIONS``."""
    return config_diff(_fingerprint_view(old), _fingerprint_view(new))
