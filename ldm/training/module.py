"""``LatentDiffusionModule``: the Lightning glue around a ``LatentDiffusion`` model, a loss object and an EMA.

``training_step`` = batch -> VAE/text encoding -> ``loss_fn`` -> ``self.log``; everything else (samplers, image
grids, checkpoints, data order) lives in callbacks, loss objects and the data module.

Checkpoint layout: the ``state_dict`` of this module has exactly the inference keys of ``LatentDiffusion``
(``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.*``, the 12 schedule buffers) plus
``model_ema.*`` when EMA is on, so ``ldm.checkpoint.load_weights`` loads a training ``.ckpt`` into an inference
model (it drops ``model_ema.*``). The frozen pose network of a heatmap loss is *not* saved: it is rebuilt from its
own checkpoint (the original saved ~64 M pose-net parameters in every checkpoint as ``mmpose_model.*``).

References:
    Lightning examples ``autoencoder.py`` (``_common_step``, ``save_hyperparameters``);
    Stability-AI/generative-models ``sgm/models/diffusion.py`` ``DiffusionEngine`` (model + loss_fn + ema);
    IDEA-Research/HumanSD (c5db29d) ``main.py`` (LR scaling) and ``ddpm.py`` (what trains; spec §4.4).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.parsing import lightning_getattr
from torch import nn

from ldm.data.keys import BatchKey
from ldm.diffusion.loss import DiffusionLoss, LossOutput
from ldm.inference.fast_path import prepack_weights
from ldm.models.latent_diffusion import LatentDiffusion
from ldm.training.data import derive_seed
from ldm.training.ema import EMA

logger = logging.getLogger(__name__)

__all__ = ["LRSchedule", "LatentDiffusionModule", "Stage", "lr_factor"]

MODEL_PREFIX = "model."  # attribute holding the LatentDiffusion; stripped from / restored to checkpoint keys
EMA_PREFIX = "model_ema."
LOSS_PREFIX = "loss_fn."  # frozen loss networks (pose estimator): never checkpointed
DEFAULT_TRAINABLE = ("model.diffusion_model.",)  # the whole UNet, as the original (spec §4.4)


class LRSchedule(StrEnum):
    """Learning-rate shapes after the warm-up (names as diffusers' ``get_scheduler``)."""

    CONSTANT = "constant"  # the original's (no scheduler)
    LINEAR = "linear"  # linear decay to ``lr_min_ratio`` x the peak at ``max_steps``
    COSINE = "cosine"  # half cosine to ``lr_min_ratio`` x the peak at ``max_steps``


def lr_factor(
    step: int,
    max_steps: int,
    *,
    schedule: LRSchedule | str = LRSchedule.CONSTANT,
    warmup_steps: int = 0,
    decay_steps: int | None = None,
    min_ratio: float = 0.0,
) -> float:
    """Multiplier of the peak learning rate for the optimizer step ``step`` (0-based) of a ``max_steps`` run.

    Warm-up: linear, ``(step + 1) / warmup_steps`` (the first step already moves). Decay: over the last
    ``decay_steps`` steps before ``max_steps`` (a "cool-down", as warmup-stable-decay schedules do), or from the end
    of the warm-up when ``decay_steps`` is None; the factor reaches ``min_ratio`` at ``max_steps``. Both factors
    multiply where they overlap.
    """
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    schedule = LRSchedule(schedule)
    if schedule is LRSchedule.CONSTANT:
        return warm
    start = max_steps - decay_steps if decay_steps is not None else warmup_steps
    progress = min(1.0, max(0.0, (step - start) / max(1, max_steps - start)))
    if schedule is LRSchedule.LINEAR:
        shape = 1.0 - progress
    else:
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return warm * (min_ratio + (1.0 - min_ratio) * shape)


class Stage(StrEnum):
    """Metric prefixes (and noise-stream names)."""

    TRAIN = "train"
    VAL = "val"


def _to_inference_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """state_dict post-hook: ``model.X`` -> ``X``; drop ``loss_fn.*`` (see module docstring)."""
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if rest.startswith(LOSS_PREFIX):
            del state_dict[key]
        elif rest.startswith(MODEL_PREFIX):
            state_dict[prefix + rest[len(MODEL_PREFIX) :]] = state_dict.pop(key)


def _from_inference_keys(module: LatentDiffusionModule, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook, the inverse of ``_to_inference_keys``; frozen loss nets keep their weights."""
    for key in list(state_dict):
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            if not rest.startswith((EMA_PREFIX, LOSS_PREFIX)):
                state_dict[prefix + MODEL_PREFIX + rest] = state_dict.pop(key)
    for key, value in module.loss_fn.state_dict(prefix=prefix + LOSS_PREFIX).items():
        state_dict.setdefault(key, value)


def _check_schedule(schedule: str, warmup_steps: int, decay_steps: int | None, min_ratio: float) -> None:
    if schedule not in set(LRSchedule):
        raise ValueError(f"Unknown lr_schedule {schedule!r}; choose one of {[s.value for s in LRSchedule]}.")

    def is_int(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not is_int(warmup_steps) or warmup_steps < 0:
        raise ValueError(f"lr_warmup_steps must be an integer >= 0; got {warmup_steps!r}.")
    if decay_steps is not None and (not is_int(decay_steps) or decay_steps < 1):
        raise ValueError(f"lr_decay_steps must be an integer >= 1 or null; got {decay_steps!r}.")
    if not 0.0 <= float(min_ratio) <= 1.0:
        raise ValueError(f"lr_min_ratio must be in [0, 1]; got {min_ratio!r}.")


class LatentDiffusionModule(pl.LightningModule):
    """Fine-tunes a ``LatentDiffusion`` (SD-2.1 / HumanSD) with a pluggable loss.

    Args:
        model: the latent diffusion model (built on CPU in float32; Lightning moves it).
        loss_fn: a ``DiffusionLoss`` (``SimpleLoss`` or ``HeatmapGuidedLoss``).
        base_learning_rate: per-sample learning rate.
        scale_lr: lr = accumulate_grad_batches x world_size x batch_size x base_learning_rate (the original's
            default); otherwise lr = base_learning_rate.
        weight_decay: AdamW weight decay (torch default 0.01, as the original).
        betas: AdamW betas.
        trainable: parameter-name prefixes (LatentDiffusion names) that are optimised; everything else is frozen.
            Default: the whole UNet, as the original.
        use_ema: keep an EMA of the trainable weights (``model_ema.*``); validation then also logs ``*_ema``.
        ema_decay: EMA decay.
        lr_schedule: ``"constant"`` (the original: no scheduler), ``"linear"`` or ``"cosine"`` decay (``LRSchedule``,
            ``lr_factor``); the schedule follows the global step, so a resumed run continues on the same curve, and
            a run resumed with a new schedule (a cool-down added to a constant-rate run, say) takes it from the
            step it resumes at.
        lr_warmup_steps: linear warm-up steps (0: none).
        lr_decay_steps: decay over the last this many steps of ``lightning.trainer.max_steps`` (None: from the
            end of the warm-up).
        lr_min_ratio: final learning rate relative to the peak.
        gradient_checkpointing: set the UNet's ``use_checkpoint`` flags (None keeps the model config's).
        cpu_prepack: on a CPU, run the frozen networks' no-grad passes (the heatmap-guided loss's decode and pose
            net, VAE encoding, validation decoding) with weights packed once for oneDNN (``prepack_weights`` of
            ``ldm.inference.fast_path``: same parameters and state-dict keys, outputs equal to float rounding)
            instead of re-packed on every call; a no-op on other devices and wherever autograd records.
        seed: base seed of the per-step noise/timestep generators (see ``step_generator``).
        config: the resolved run config, stored in the checkpoint's hyperparameters (self-describing checkpoints).
    """

    def __init__(
        self,
        model: LatentDiffusion,
        loss_fn: DiffusionLoss,
        *,
        base_learning_rate: float = 1.0e-4,
        scale_lr: bool = True,
        weight_decay: float = 0.01,
        betas: Sequence[float] = (0.9, 0.999),
        trainable: Sequence[str] = DEFAULT_TRAINABLE,
        use_ema: bool = False,
        ema_decay: float = 0.9999,
        lr_schedule: str = "constant",  # a plain str: hyperparameters must unpickle with weights_only=True
        lr_warmup_steps: int = 0,
        lr_decay_steps: int | None = None,
        lr_min_ratio: float = 0.0,
        gradient_checkpointing: bool | None = None,
        cpu_prepack: bool = False,
        seed: int = 23,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, LatentDiffusion):
            raise TypeError(f"model must be an ldm LatentDiffusion; got {type(model).__name__}.")
        if not isinstance(loss_fn, DiffusionLoss):
            raise TypeError(f"loss_fn must be an ldm.diffusion.loss.DiffusionLoss; got {type(loss_fn).__name__}.")
        if base_learning_rate <= 0:
            raise ValueError(f"base_learning_rate must be > 0; got {base_learning_rate}.")
        _check_schedule(lr_schedule, lr_warmup_steps, lr_decay_steps, lr_min_ratio)
        self.save_hyperparameters(ignore=["model", "loss_fn"])
        self.model = model
        self.loss_fn = loss_fn
        self.seed = int(seed)
        self.trainable_names = self._select_trainable(tuple(trainable))
        if gradient_checkpointing is not None:
            for sub in model.unet.modules():
                if hasattr(sub, "use_checkpoint"):
                    sub.use_checkpoint = bool(gradient_checkpointing)
        if cpu_prepack:
            prepack_weights(model.first_stage_model)
            pose_net = getattr(loss_fn, "pose_estimator", None)
            if pose_net is not None:
                prepack_weights(pose_net)
        self.model_ema = EMA(model.model, decay=ema_decay) if use_ema else None
        self.register_state_dict_post_hook(_to_inference_keys)
        self.register_load_state_dict_pre_hook(_from_inference_keys)

    # ------------------------------------------------------------------ setup
    def _select_trainable(self, prefixes: tuple[str, ...]) -> list[str]:
        if not prefixes:
            raise ValueError("trainable must list at least one parameter-name prefix, e.g. 'model.diffusion_model.'.")
        names = [name for name, _ in self.model.named_parameters()]
        unmatched = [p for p in prefixes if not any(n.startswith(p) for n in names)]
        if unmatched:
            examples = sorted({n.split(".")[0] + "." for n in names})
            raise ValueError(
                f"trainable prefix(es) {unmatched} match no parameter of the model; names look like "
                f"'model.diffusion_model.input_blocks.0.0.weight' (top-level prefixes: {examples})."
            )
        selected = []
        for name, param in self.model.named_parameters():
            param.requires_grad_(name.startswith(prefixes))
            if param.requires_grad:
                selected.append(name)
        n_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        logger.info("Training %d tensors (%.2f M parameters) matching %s.", len(selected), n_params / 1e6, prefixes)
        return selected

    def train(self, mode: bool = True) -> LatentDiffusionModule:
        """``LatentDiffusion`` and the loss keep their frozen parts (VAE, text encoder, pose net) in eval mode."""
        super().train(mode)
        self.model.train(mode)
        self.loss_fn.train(mode)
        return self

    # ------------------------------------------------------------------ randomness
    def step_generator(self, stage: str, batch_idx: int) -> torch.Generator:
        """CPU generator for one step, seeded from (seed, stage, rank, epoch, batch_idx).

        Keying the noise on the step instead of carrying one generator makes a resumed run draw exactly the
        t/eps/posterior samples of an uninterrupted one, and gives every DDP rank its own stream. Validation uses
        the same noise at every validation run (epoch fixed to 0) so its curve is comparable over time.
        """
        epoch = self.current_epoch if stage == Stage.TRAIN else 0
        return torch.Generator().manual_seed(derive_seed(self.seed, stage, self.global_rank, epoch, batch_idx))

    # ------------------------------------------------------------------ steps
    def _common_step(self, batch: Mapping[str, Any], batch_idx: int, stage: str) -> LossOutput:
        """Encode a batch and apply the loss (shared by training and validation).

        A batch from a latent cache (`ldm.data.latent_cache`) carries VAE moments instead of images and pose maps;
        the latents are then sampled from them with the same generator draws, so both paths give the same loss.
        """
        prompts = list(batch[BatchKey.CAPTION])
        generator = self.step_generator(stage, batch_idx)
        cached = BatchKey.IMAGE_MOMENTS in batch
        with torch.no_grad():
            # RNG order as the original: image posterior sample, then the pose latent's, then t and eps.
            if cached:
                x0 = self.model.latents_from_moments(batch[BatchKey.IMAGE_MOMENTS], generator)  # (B, 4, h, w)
                pose = batch[BatchKey.POSE_MOMENTS] if self.model.pose_conditioning else None
                cond = self.model.get_conditioning(prompts, None, generator, pose_moments=pose)
            else:
                x0 = self.model.encode_images(batch[BatchKey.IMAGE], generator)  # (B, 4, H/8, W/8)
                pose_maps = batch[BatchKey.POSE_MAP] if self.model.pose_conditioning else None  # (B, 3, H, W)
                cond = self.model.get_conditioning(prompts, pose_maps, generator)
        return self.loss_fn(self.model, x0, cond, generator=generator)

    def _log_outputs(self, out: LossOutput, stage: str, batch_size: int, suffix: str = "") -> None:
        on_step = stage == Stage.TRAIN
        common = dict(on_step=on_step, on_epoch=not on_step, batch_size=batch_size, sync_dist=not on_step)
        logs = {f"{stage}/{k}{suffix}": v for k, v in out.logs.items() if k != "loss"}
        self.log_dict(logs, **common)
        self.log(f"{stage}/loss{suffix}", out.logs["loss"], prog_bar=True, **common)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        out = self._common_step(batch, batch_idx, Stage.TRAIN)
        self._log_outputs(out, Stage.TRAIN, len(batch[BatchKey.CAPTION]))
        return out.loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        batch_size = len(batch[BatchKey.CAPTION])
        self._log_outputs(self._common_step(batch, batch_idx, Stage.VAL), Stage.VAL, batch_size)
        if self.model_ema is not None:
            with self.model_ema.swapped_in(self.model.model):
                self._log_outputs(self._common_step(batch, batch_idx, Stage.VAL), Stage.VAL, batch_size, "_ema")

    # ------------------------------------------------------------------ optimisation
    def learning_rate(self) -> float:
        """The effective AdamW learning rate (see ``scale_lr``)."""
        base = float(self.hparams.base_learning_rate)
        if not self.hparams.scale_lr:
            return base
        trainer = self.trainer
        batch_size = int(lightning_getattr(self, "batch_size"))
        lr = trainer.accumulate_grad_batches * trainer.world_size * batch_size * base
        if trainer.is_global_zero:
            logger.info(
                "Learning rate %.2e = %d (accumulate_grad_batches) x %d (devices) x %d (batch size) x %.2e "
                "(base_learning_rate)",
                lr,
                trainer.accumulate_grad_batches,
                trainer.world_size,
                batch_size,
                base,
            )
        return lr

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Step, then update the EMA: once per optimizer step (not per micro-batch), and before the checkpoint
        callbacks of this batch run, so a checkpoint always holds an EMA consistent with its weights."""
        super().optimizer_step(*args, **kwargs)
        if self.model_ema is not None:
            self.model_ema.update(self.model.model)

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params,
            lr=self.learning_rate(),
            weight_decay=float(self.hparams.weight_decay),
            betas=tuple(self.hparams.betas),
        )
        hp = self.hparams
        if LRSchedule(hp.lr_schedule) is LRSchedule.CONSTANT and not hp.lr_warmup_steps:
            return optimizer  # the original: no scheduler (and no scheduler state in the checkpoint)
        max_steps = self._schedule_length()
        # The factor is read from the trainer's global step, not from the scheduler's own counter, so that a run
        # resumed from a checkpoint without scheduler state lands on the right point of the curve.
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: self.current_lr_factor(max_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _schedule_length(self) -> int:
        max_steps = int(self.trainer.max_steps)
        if max_steps < 0:
            if LRSchedule(self.hparams.lr_schedule) is not LRSchedule.CONSTANT:
                raise ValueError(
                    f"lr_schedule {self.hparams.lr_schedule!r} decays towards lightning.trainer.max_steps; set it "
                    f"(the run has no step limit)."
                )
            return 0
        decay = self.hparams.lr_decay_steps
        if decay is not None and decay > max_steps:
            raise ValueError(
                f"lr_decay_steps ({decay}) is larger than lightning.trainer.max_steps ({max_steps}); the decay runs "
                f"over the last lr_decay_steps steps of the run."
            )
        return max_steps

    def current_lr_factor(self, max_steps: int) -> float:
        """Learning-rate multiplier at the current global step (see ``lr_factor``)."""
        hp = self.hparams
        return lr_factor(
            self.trainer.global_step,
            max_steps,
            schedule=hp.lr_schedule,
            warmup_steps=int(hp.lr_warmup_steps),
            decay_steps=hp.lr_decay_steps,
            min_ratio=float(hp.lr_min_ratio),
        )

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["noise_seed"] = self.seed

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        seed = checkpoint.get("noise_seed")
        if seed is not None and int(seed) != self.seed:
            logger.info("Resuming with the checkpoint's noise seed %d (instead of %d).", seed, self.seed)
            self.seed = int(seed)
