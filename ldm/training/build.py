"""Explicit builders from a validated ``TrainConfig`` to the objects ``trainer.fit`` needs.

Each builder validates its inputs so that every configuration mistake surfaces before the first training step,
with the offending key and the valid choices.

References:
    IDEA-Research/HumanSD (c5db29d) main.py (trainer, callbacks, logdir; spec §4.1-§4.4);
    Lightning 2.6 ``DDPStrategy`` / ``FSDPStrategy`` / ``ModelCheckpoint`` signatures.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, Strategy
from omegaconf import OmegaConf

from ldm.config import instantiate
from ldm.diffusion.loss import DiffusionLoss, HeatmapGuidedLoss, SimpleLoss
from ldm.inference.loading import load_model
from ldm.models.latent_diffusion import LatentDiffusion
from ldm.training.callbacks import AtomicCheckpointIO, ImageSampler, RunLayout, SetupCallback
from ldm.training.config import LoggerKind, LossConfig, PoseNetConfig, StrategyConfig, StrategyName, TrainConfig
from ldm.training.data import ResumableDataModule
from ldm.training.module import LatentDiffusionModule

logger = logging.getLogger(__name__)

__all__ = [
    "build_callbacks",
    "build_datamodule",
    "build_logger",
    "build_loss",
    "build_model",
    "build_module",
    "build_pose_estimator",
    "build_strategy",
    "build_trainer",
    "check_loss_files",
    "check_data_fits_model",
    "check_lightning_config",
]

# Keys of the training sections that the builders set themselves.
RESERVED_TRAINER_KEYS = ("callbacks", "logger", "plugins", "strategy", "default_root_dir", "enable_checkpointing")
RESERVED_MODULE_KEYS = ("model", "loss_fn", "seed", "config")
_DDP_PARAMS = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
DEFAULT_TRAINER = {"benchmark": True, "num_sanity_val_steps": 0}
DEFAULT_CHECKPOINT = {"filename": "{epoch:06}-{step:09}", "save_last": True, "save_top_k": 1}
DEFAULT_STEP_CHECKPOINT = {"filename": "{epoch:06}-{step:09}", "save_top_k": -1, "save_weights_only": True}


def _check_kwargs(target: Any, params: Mapping[str, Any], *, name: str, reserved: tuple[str, ...]) -> dict[str, Any]:
    """Reject reserved and unknown keyword arguments of ``target`` (required ones may be supplied by the caller)."""
    taken = sorted(set(params) & set(reserved))
    if taken:
        raise ValueError(f"{name}: {taken} are set by the training script; remove them from the config.")
    sig = inspect.signature(target)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        valid = sorted(
            k
            for k, p in sig.parameters.items()
            if k not in reserved
            and k != "self"
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        )
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ValueError(f"{name}: unknown config key(s) {unknown}; valid keys: {valid}.")
    return dict(params)


def build_pose_estimator(cfg: PoseNetConfig) -> Any:
    """The frozen HigherHRNet of the heatmap loss (random weights when no checkpoint is configured)."""
    from ldm.pose.estimator import PoseEstimator

    if cfg.checkpoint is None:
        logger.warning("loss.heatmap.pose_estimator.checkpoint is null: the pose net has RANDOM weights.")
        return PoseEstimator.from_config(cfg.config)
    return PoseEstimator.from_checkpoint(cfg.checkpoint, cfg.config)


def check_loss_files(cfg: LossConfig) -> None:
    """Fail early (before the diffusion model is loaded) when the pose-net checkpoint is missing."""
    if cfg.heatmap is not None and cfg.heatmap.pose_estimator.checkpoint is not None:
        path = Path(cfg.heatmap.pose_estimator.checkpoint)
        if not path.is_file():
            raise FileNotFoundError(
                f"loss.heatmap.pose_estimator.checkpoint not found: {path} (the HigherHRNet weights, "
                "higherhrnet_w48_humanart_512x512_udp.pth from the HumanSD README's Google Drive folder)."
            )


def build_loss(cfg: LossConfig) -> DiffusionLoss:
    """``SimpleLoss`` when ``heatmap`` is null, else ``HeatmapGuidedLoss``."""
    if cfg.heatmap is None:
        return SimpleLoss(snr_gamma=cfg.snr_gamma)
    h = cfg.heatmap
    estimator = build_pose_estimator(h.pose_estimator)
    return HeatmapGuidedLoss(estimator, mode=h.mode, weight=h.weight, threshold=h.threshold, snr_gamma=cfg.snr_gamma)


def build_model(
    config: TrainConfig, *, init_checkpoint: str | Path | None, trust_pickle: bool | None = None
) -> LatentDiffusion:
    """Build the LatentDiffusion and load the initial weights (strict; 4->8 conv_in expansion if configured)."""
    model, _ = load_model(
        OmegaConf.create({"model": config.model}),
        init_checkpoint,
        expand_conv_in=config.init.expand_conv_in,
        trust_pickle=trust_pickle,
        allow_random=init_checkpoint is None,
    )
    return model


def build_module(
    config: TrainConfig, model: LatentDiffusion, loss_fn: DiffusionLoss, *, seed: int
) -> LatentDiffusionModule:
    """``LatentDiffusionModule`` with the ``module`` section's options and the resolved config as hyperparameter."""
    kwargs = _check_kwargs(LatentDiffusionModule, config.module, name="module", reserved=RESERVED_MODULE_KEYS)
    strategy = config.lightning.strategy.name
    if kwargs.get("use_ema") and strategy == StrategyName.FSDP:
        raise ValueError("module.use_ema is not supported with the fsdp strategy (sharded parameters); use ddp.")
    return LatentDiffusionModule(model, loss_fn, seed=seed, config=config.to_dict(), **kwargs)


def build_datamodule(config: TrainConfig, *, seed: int) -> ResumableDataModule:
    """Instantiate ``data``, build its datasets now (missing paths / empty mappings fail here) and wrap it."""
    # The inner module's own `seed` does not matter for training order or augmentation: ResumableLoader reorders
    # by the run seed and reseeds every item.
    datamodule = instantiate(config.data)
    if not isinstance(datamodule, pl.LightningDataModule):
        raise ValueError(
            f"data.target {config.data['target']} must build a LightningDataModule; got {type(datamodule).__name__}."
        )
    datamodule.setup("fit")
    return ResumableDataModule(datamodule, seed=seed)


def check_data_fits_model(datamodule: ResumableDataModule, model: LatentDiffusion, loss_fn: DiffusionLoss) -> None:
    """Read one training item and check its size against the VAE/UNet (and the pose net's multiple of 32)."""
    item = datamodule.datamodule.train_dataloader().dataset[0]
    from ldm.data.keys import BatchKey

    if BatchKey.IMAGE_MOMENTS in item:  # a latent cache: the images were (latent side x VAE factor) pixels
        height, width = (side * model.vae.downsample_factor for side in item[BatchKey.IMAGE_MOMENTS].shape[-2:])
        if item[BatchKey.IMAGE_MOMENTS].shape[0] != 2 * model.vae.embed_dim:
            raise ValueError(
                f"The latent cache holds {item[BatchKey.IMAGE_MOMENTS].shape[0]}-channel moments; this model's VAE "
                f"needs {2 * model.vae.embed_dim}. Rebuild the cache with this model's VAE (scripts/cache_latents.py)."
            )
    else:
        height, width = item[BatchKey.IMAGE].shape[-2:]
    multiple = model.image_multiple
    if isinstance(loss_fn, HeatmapGuidedLoss):
        multiple = max(multiple, 32)
    if height % multiple or width % multiple:
        raise ValueError(
            f"Training images are {height}x{width}, but this model{' and the pose net' if multiple == 32 else ''} "
            f"need sides that are multiples of {multiple}; change data.params.train.image_size."
        )


def build_strategy(cfg: StrategyConfig) -> Strategy | str:
    """``auto``, or a DDP/FSDP strategy with this project's defaults (overridable through ``params``).

    DDP: no per-step buffer sync (``forward_sync_buffers=False``): all buffers are constants or EMA shadows updated
    identically on every rank, and broadcasting the EMA every step would copy the whole UNet.
    FSDP: wrap every UNet ResBlock and transformer block, ``use_orig_params=True`` (the frozen VAE and text encoder
    share the root unit), full (rank-0) state dicts so checkpoints keep the inference key layout.
    """
    name = StrategyName(cfg.name)
    params = dict(cfg.params)
    if name is StrategyName.AUTO:
        if params:
            raise ValueError(f"lightning.strategy.params {sorted(params)} need a strategy name (ddp or fsdp).")
        return "auto"
    if name in (StrategyName.DDP, StrategyName.DDP_SPAWN):
        # Newer torch renamed DDP's broadcast_buffers to forward_sync_buffers (buffers are still synced at init).
        sync_key = "forward_sync_buffers" if "forward_sync_buffers" in _DDP_PARAMS else "broadcast_buffers"
        defaults = {sync_key: False, "start_method": "spawn" if name is StrategyName.DDP_SPAWN else "popen"}
        kwargs = _check_kwargs(DDPStrategy, {**defaults, **params}, name="lightning.strategy.params", reserved=())
        return DDPStrategy(**kwargs)
    from ldm.models.attention import BasicTransformerBlock
    from ldm.models.unet import ResBlock

    defaults = {
        "auto_wrap_policy": {ResBlock, BasicTransformerBlock},
        "state_dict_type": "full",
        "use_orig_params": True,
    }
    kwargs = _check_kwargs(FSDPStrategy, {**defaults, **params}, name="lightning.strategy.params", reserved=())
    return FSDPStrategy(**kwargs)


def build_logger(kind: str, layout: RunLayout) -> Logger:
    """CSV (``<run>/csv``) or TensorBoard (``<run>/tensorboard``)."""
    if LoggerKind(kind) is LoggerKind.CSV:
        return CSVLogger(save_dir=layout.root, name="csv")
    try:
        return TensorBoardLogger(save_dir=layout.root, name="tensorboard")
    except ModuleNotFoundError as err:
        raise ValueError(f"lightning.logger: tensorboard needs `pip install tensorboard` ({err}).") from None


def build_callbacks(config: TrainConfig, layout: RunLayout, *, stamp: str) -> list[Callback]:
    """Setup, checkpoints, image sampler and LR monitor, as configured (null entries are off)."""
    cbs = config.lightning.callbacks
    callbacks: list[Callback] = [SetupCallback(layout, config.to_dict(), stamp=stamp)]
    if cbs.checkpoint is not None:
        kwargs = {**DEFAULT_CHECKPOINT, **cbs.checkpoint}
        _check_kwargs(ModelCheckpoint, kwargs, name="lightning.callbacks.checkpoint", reserved=("dirpath",))
        callbacks.append(ModelCheckpoint(dirpath=layout.checkpoints, **kwargs))
    if cbs.step_checkpoint is not None:
        kwargs = {**DEFAULT_STEP_CHECKPOINT, **cbs.step_checkpoint}
        _check_kwargs(ModelCheckpoint, kwargs, name="lightning.callbacks.step_checkpoint", reserved=("dirpath",))
        callbacks.append(ModelCheckpoint(dirpath=layout.step_checkpoints, **kwargs))
    if cbs.image_sampler is not None:
        kwargs = _check_kwargs(
            ImageSampler, cbs.image_sampler, name="lightning.callbacks.image_sampler", reserved=("layout",)
        )
        callbacks.append(ImageSampler(layout=layout, **kwargs))
    if cbs.lr_monitor is not None:
        kwargs = _check_kwargs(LearningRateMonitor, cbs.lr_monitor, name="lightning.callbacks.lr_monitor", reserved=())
        callbacks.append(LearningRateMonitor(**kwargs))
    return callbacks


def check_lightning_config(config: TrainConfig) -> None:
    """Validate the ``lightning`` section (trainer keys, strategy, callbacks, logger) without side effects."""
    kwargs = {**DEFAULT_TRAINER, **config.lightning.trainer}
    _check_kwargs(pl.Trainer, kwargs, name="lightning.trainer", reserved=RESERVED_TRAINER_KEYS)
    build_strategy(config.lightning.strategy)
    build_callbacks(config, RunLayout(Path("unused")), stamp="check")
    if LoggerKind(config.lightning.logger) is LoggerKind.TENSORBOARD:
        build_logger(config.lightning.logger, RunLayout(Path("unused")))


def build_trainer(
    config: TrainConfig,
    layout: RunLayout,
    *,
    stamp: str,
    extra_callbacks: list[Callback] | None = None,
    has_validation: bool = True,
) -> pl.Trainer:
    """The Trainer: ``lightning.trainer`` options over this project's defaults, plus strategy, logger, callbacks
    and the atomic checkpoint writer.

    Without a validation split (``has_validation=False``) validation is off (``limit_val_batches=0``, unless the
    config sets it), so Lightning never asks for the empty validation loader."""
    defaults = DEFAULT_TRAINER if has_validation else {**DEFAULT_TRAINER, "limit_val_batches": 0}
    kwargs = {**defaults, **config.lightning.trainer}
    _check_kwargs(pl.Trainer, kwargs, name="lightning.trainer", reserved=RESERVED_TRAINER_KEYS)
    cbs = config.lightning.callbacks
    return pl.Trainer(
        **kwargs,
        # Without our ModelCheckpoints, Lightning would add its own (saving every epoch): off means off.
        enable_checkpointing=cbs.checkpoint is not None or cbs.step_checkpoint is not None,
        strategy=build_strategy(config.lightning.strategy),
        logger=build_logger(config.lightning.logger, layout),
        callbacks=[*build_callbacks(config, layout, stamp=stamp), *(extra_callbacks or [])],
        plugins=[AtomicCheckpointIO()],
        default_root_dir=layout.root,
    )
