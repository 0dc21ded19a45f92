"""``PoseNetModule``: training a bottom-up HigherHRNet (heatmaps + associative embedding) with Lightning.

The module is glue: batch -> ImageNet normalisation -> ``HigherHRNet`` -> targets and loss from
:mod:`ldm.training.pose_targets` -> ``self.log``. Validation additionally runs the bottom-up decoder of
:class:`ldm.pose.estimator.PoseEstimator` (a frozen copy of the current network, with the configured test settings)
on every validation image and logs COCO keypoint AP (:mod:`ldm.training.pose_eval`).

Images reach the network exactly as :meth:`PoseEstimator.detect` feeds them at inference: the dataset's
``[-1, 1]`` images are mapped back to ``[0, 1]`` (= uint8 / 255) and normalised with the ImageNet mean and std.

A training config (``configs/tiny/mannequin-pose.yaml``) has the sections ``model`` (``{target, params}`` of this
class), ``data`` (``{target, params}`` of a LightningDataModule yielding ``BatchKey.IMAGE`` and
``BatchKey.KEYPOINTS``), ``trainer`` (``lightning.pytorch.Trainer`` keyword arguments) and ``seed``; see
:func:`check_pose_train_config`. The trained network is exported with :func:`export_pose_weights` as a
``.safetensors`` state dict that ``PoseEstimator.from_checkpoint(path, pose_config)`` loads.

References:
    Cheng et al., "HigherHRNet", CVPR 2020 (training recipe: Adam, lr 1.5e-3, sigma 2, AE factors 1e-3).
    open-mmlab/mmpose v0.29.0 associative_embedding/coco/higherhrnet_w32_coco_512x512_udp.py (behaviour only).
    Lightning examples ``autoencoder.py`` (``_common_step``, ``save_hyperparameters``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from ldm.config import check_params, to_container
from ldm.data.keys import BatchKey
from ldm.pose.estimator import IMAGENET_MEAN, IMAGENET_STD, PoseEstimator, PoseEstimatorConfig, load_pose_config
from ldm.pose.higherhrnet import HigherHRNet
from ldm.pose.resize import compute_resize, map_keypoints_to_network, resize_batch_for_network
from ldm.training.pose_eval import CocoKeypointEvaluator, KeypointAP
from ldm.training.pose_targets import (
    DEFAULT_PULL_WEIGHT,
    DEFAULT_PUSH_WEIGHT,
    DEFAULT_SIGMA,
    PoseLossOutput,
    bottom_up_loss,
    compute_pose_targets,
)

logger = logging.getLogger(__name__)

__all__ = [
    "LRSchedule",
    "NetInit",
    "PoseNetModule",
    "check_pose_train_config",
    "export_pose_weights",
    "init_from_scratch",
    "read_exported_pose_config",
    "to_uint8_images",
]

POSE_CONFIG_METADATA_KEY = "pose_config"
TRAIN_CONFIG_SECTIONS = ("model", "data", "trainer", "seed", "data_root")
RESERVED_TRAINER_KEYS = ("max_time", "default_root_dir", "logger", "callbacks")


class LRSchedule(StrEnum):
    """Learning-rate schedules after the linear warm-up."""

    COSINE = "cosine"  # half cosine from the peak to min_lr_ratio * peak at the last step
    STEP = "step"  # multiply by step_gamma at each fraction of training in step_milestones (MMPose-style)


class NetInit(StrEnum):
    """Initial weights of the trained network."""

    MMPOSE = "mmpose"  # every (transposed) conv ~ N(0, 0.001): MMPose's init, meant for an ImageNet-pretrained HRNet
    KAIMING = "kaiming"  # He-normal (fan_out) for the convs followed by BatchNorm, N(0, 0.001) for the output convs


def init_from_scratch(net: HigherHRNet) -> None:
    """He-normal (fan_out, ReLU) init of every conv followed by BatchNorm; the two output convs stay N(0, 0.001).

    The HigherHRNet constructor's MMPose init (all convs N(0, 0.001)) assumes an ImageNet-pretrained backbone; with
    Adam, updates of ~lr per step dwarf such weights for hundreds of steps. Measured on the mannequin world (tiny
    mannequin net, batch 16, AdamW 2e-3): heatmap loss 0.0125 after 200 steps vs 0.0142 with the MMPose init.

    Args:
        net: modified in place.
    """
    outputs = {id(layer) for layer in net.keypoint_head.final_layers}
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and id(module) not in outputs:
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


class PoseNetModule(pl.LightningModule):
    """Trains a HigherHRNet on pose batches and reports COCO keypoint AP on validation.

    Args:
        pose_config: the estimator config (see :func:`ldm.pose.estimator.load_pose_config`): a preset name, a YAML
            path such as ``configs/pose/higherhrnet_tiny_mannequin.yaml``, or a ``PoseEstimatorConfig``. Its
            ``net`` section is the architecture trained, its ``test`` section the decoder used for validation AP.
        learning_rate: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        lr_schedule: ``"cosine"`` or ``"step"`` (:class:`LRSchedule`), over ``trainer.estimated_stepping_batches``.
        warmup_steps: linear warm-up from 0.1 x the peak (MMPose's 500-iteration warm-up ratio 0.001 is for lr 1.5e-3
            at batch 24 on GPUs; 0.1 suits short CPU runs).
        min_lr_ratio: final learning rate of the cosine schedule, relative to the peak.
        step_milestones: fractions of the total steps at which the step schedule decays (MMPose: 200/300, 260/300).
        step_gamma: decay factor of the step schedule.
        sigma: Gaussian standard deviation of the heatmap targets in heatmap pixels, one value or one per output.
        heatmap_weights: heatmap-loss factor of the 1/4 and 1/2 outputs (MMPose: 1.0, 1.0).
        pull_weight: factor of the AE pull term. push_weight: of the push term (MMPose ``pull_loss_factor`` and
            ``push_loss_factor``: 0.001 each for HigherHRNet).
        val_annotations: COCO keypoint file of the validation split (mannequin world:
            ``annotations/validation_coco.json``); None scores against the dataset's keypoints instead.
        init: ``"kaiming"`` (training from scratch, :func:`init_from_scratch`) or ``"mmpose"`` (:class:`NetInit`).
        resize_to_input: resize every training batch to the test config's ``input_size`` first, exactly as
            ``PoseEstimator.detect`` resizes images at validation and inference (:meth:`to_network_input`). Needed
            when ``input_size`` differs from the image size (e.g. 128-px images and ``input_size: 256``, heatmaps at
            the image's full resolution); False trains on the images as they come (right when both sizes agree).

    Raises:
        ValueError: invalid option values (with the value received and the valid range).
    """

    def __init__(
        self,
        pose_config: str | Path | PoseEstimatorConfig = "tiny",
        *,
        learning_rate: float = 2e-3,
        weight_decay: float = 1e-4,
        betas: Sequence[float] = (0.9, 0.999),
        lr_schedule: str = LRSchedule.COSINE,
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.01,
        step_milestones: Sequence[float] = (2 / 3, 13 / 15),
        step_gamma: float = 0.1,
        sigma: float | Sequence[float] = DEFAULT_SIGMA,
        heatmap_weights: Sequence[float] = (1.0, 1.0),
        pull_weight: float = DEFAULT_PULL_WEIGHT,
        push_weight: float = DEFAULT_PUSH_WEIGHT,
        val_annotations: str | Path | None = None,
        init: str = NetInit.KAIMING,
        resize_to_input: bool = False,
    ) -> None:
        super().__init__()
        self._check_options(learning_rate, weight_decay, lr_schedule, warmup_steps, min_lr_ratio, step_milestones)
        if init not in set(NetInit):
            raise ValueError(f"Unknown init {init!r}; choose one of {[i.value for i in NetInit]}.")
        self.save_hyperparameters()
        self.pose_config = load_pose_config(pose_config)
        self.net = HigherHRNet(self.pose_config.net)  # MMPose init
        if NetInit(init) is NetInit.KAIMING:
            init_from_scratch(self.net)
        self.lr_schedule = LRSchedule(lr_schedule)
        self.sigma = sigma
        self.heatmap_weights = tuple(float(w) for w in heatmap_weights)
        if len(self.heatmap_weights) != 2:
            raise ValueError(f"heatmap_weights needs one factor per output (2); got {list(heatmap_weights)}.")
        self.pull_weight, self.push_weight = float(pull_weight), float(push_weight)
        self.resize_to_input = bool(resize_to_input)
        self.evaluator = CocoKeypointEvaluator(val_annotations)
        self._val_estimator: list[PoseEstimator] = []  # a list, so the frozen copy is not registered as a child
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        n_params = sum(p.numel() for p in self.net.parameters())
        logger.info("PoseNetModule: HigherHRNet with %.3f M parameters.", n_params / 1e6)

    @staticmethod
    def _check_options(
        learning_rate: float,
        weight_decay: float,
        lr_schedule: str,
        warmup_steps: int,
        min_lr_ratio: float,
        step_milestones: Sequence[float],
    ) -> None:
        if not learning_rate > 0 or weight_decay < 0:
            raise ValueError(f"Need learning_rate > 0 and weight_decay >= 0; got {learning_rate}, {weight_decay}.")
        if lr_schedule not in set(LRSchedule):
            raise ValueError(f"Unknown lr_schedule {lr_schedule!r}; choose one of {[s.value for s in LRSchedule]}.")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0; got {warmup_steps!r}.")
        if not 0 <= min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1]; got {min_lr_ratio}.")
        if list(step_milestones) != sorted(step_milestones) or not all(0 < m < 1 for m in step_milestones):
            raise ValueError(f"step_milestones must be increasing fractions in (0, 1); got {list(step_milestones)}.")

    # ------------------------------------------------------------------ forward
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [-1, 1] -> the network input of ``PoseEstimator.detect`` (ImageNet-normalised)."""
        return ((images + 1) / 2 - self.pixel_mean) / self.pixel_std

    def to_network_input(self, images: torch.Tensor, keypoints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """With ``resize_to_input``: a batch (and its keypoints) resized to the test input size, as ``detect`` does.

        A net validated with ``test.input_size`` larger than the images (e.g. 256 for 128-px images) must also be
        trained at that scale. Same UDP affine map and
        bilinear sampling as :meth:`PoseEstimator.predict_maps`; unchanged when the images already have that size or
        ``resize_to_input`` is False.

        Args:
            images: (B, 3, H, W). keypoints: (B, P, K, 3) (x, y, score) in image pixels.

        Returns:
            The resized images and the keypoints in network-input pixels.
        """
        test = self.pose_config.test
        height, width = images.shape[-2:]
        if not self.resize_to_input:
            return images, keypoints
        transform = compute_resize(
            height, width, input_size=test.input_size, size_divisor=test.size_divisor, use_udp=test.use_udp
        )
        if (transform.input_height, transform.input_width) == (height, width):
            return images, keypoints
        return resize_batch_for_network(images, transform), map_keypoints_to_network(keypoints, transform)

    def _common_step(self, batch: Mapping[str, Any], batch_idx: int, stage: str) -> PoseLossOutput:
        """Targets, forward and loss of one batch; logs ``{stage}/loss``, ``heatmap_loss``, ``ae_pull``, ``ae_push``."""
        images = batch[BatchKey.IMAGE]  # (B, 3, H, W) in [-1, 1]
        keypoints = batch[BatchKey.KEYPOINTS].to(images.device)  # (B, P, K, 3)
        images, keypoints = self.to_network_input(images, keypoints)
        outputs = self.net(self.normalize(images))  # (B, 2K, H/4, W/4), (B, K, H/2, W/2)
        targets = compute_pose_targets(
            keypoints,
            tuple(images.shape[-2:]),
            [tuple(o.shape[-2:]) for o in outputs],
            sigma=self.sigma,
        )
        out = bottom_up_loss(
            outputs,
            targets,
            num_joints=self.net.config.num_joints,
            heatmap_weights=self.heatmap_weights,
            pull_weight=self.pull_weight,
            push_weight=self.push_weight,
        )
        heatmap = sum(w * t for w, t in zip(self.heatmap_weights, out.heatmap))
        on_step = stage == "train"
        logs = {
            f"{stage}/loss": out.loss,
            f"{stage}/heatmap_loss": heatmap,
            f"{stage}/ae_pull": out.pull,
            f"{stage}/ae_push": out.push,
        }
        self.log_dict(logs, on_step=on_step, on_epoch=not on_step, batch_size=images.shape[0], prog_bar=on_step)
        return out

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, batch_idx, "train").loss

    # ------------------------------------------------------------------ validation (loss + COCO AP)
    def on_validation_epoch_start(self) -> None:
        # A frozen copy: PoseEstimator freezes and evals the net it is given, which must not touch the trained one.
        estimator = PoseEstimator(copy.deepcopy(self.net), test_config=self.pose_config.test).to(self.device)
        self._val_estimator[:] = [estimator]
        self.evaluator.reset()

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._common_step(batch, batch_idx, "val")
        images_np = to_uint8_images(batch[BatchKey.IMAGE])  # (B, H, W, 3) uint8 RGB, as read from disk
        keypoints = batch[BatchKey.KEYPOINTS].cpu().numpy()
        for image, key, gt in zip(images_np, batch[BatchKey.PATH], keypoints):
            persons = self._val_estimator[0].detect(image)
            self.evaluator.add(key, persons, width=image.shape[1], height=image.shape[0], keypoints=gt)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.world_size > 1:
            logger.warning("val/ap is computed on each process's shard only (no cross-process gathering).")
        result: KeypointAP = self.evaluator.compute()
        self.log_dict({"val/ap": result.ap, "val/ap50": result.ap50, "val/ap75": result.ap75}, prog_bar=True)
        logger.info(
            "step %d: val AP %.4f (AP50 %.4f, AP75 %.4f) on %d images, %d detections",
            self.global_step,
            result.ap,
            result.ap50,
            result.ap75,
            result.num_images,
            result.num_detections,
        )
        self._val_estimator.clear()

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW on every network parameter with linear warm-up and a per-step cosine or step decay."""
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            self.net.parameters(), lr=hp.learning_rate, betas=tuple(hp.betas), weight_decay=hp.weight_decay
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self.lr_factor(step, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_factor(self, step: int, total_steps: int) -> float:
        """Learning rate at ``step`` of ``total_steps``, relative to ``learning_rate``.

        Args:
            step: optimiser steps taken. total_steps: steps of the whole run.
        """
        hp = self.hparams
        if step < hp.warmup_steps:
            return 0.1 + 0.9 * step / hp.warmup_steps
        if self.lr_schedule is LRSchedule.STEP:
            return hp.step_gamma ** sum(step >= m * total_steps for m in hp.step_milestones)
        progress = min(1.0, (step - hp.warmup_steps) / max(1, total_steps - hp.warmup_steps))
        return hp.min_lr_ratio + (1 - hp.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------------------------------
# Export and config validation


def export_pose_weights(
    net: HigherHRNet,
    path: str | Path,
    *,
    pose_config: PoseEstimatorConfig,
    half: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Save a HigherHRNet's weights as ``.safetensors`` for ``PoseEstimator.from_checkpoint(path, config)``.

    The file holds the state dict only (``backbone.*``, ``keypoint_head.*``); its metadata stores the resolved
    estimator config as JSON under ``pose_config`` (see :func:`read_exported_pose_config`) plus ``metadata``.

    Args:
        net: the trained network.
        path: output file; must end in ``.safetensors`` (parent folders are created).
        pose_config: the estimator config the network was trained with (its ``net`` must match ``net.config``).
        half: store floating-point tensors as float16 (half the size; loaded back into float32 parameters).
        metadata: extra string entries (e.g. the training config path, the validation AP).

    Returns:
        The written path.

    Raises:
        ValueError: wrong suffix, or ``pose_config.net`` differs from the network's architecture.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"Export path must end in .safetensors; got {path}.")
    if pose_config.net != net.config:
        raise ValueError(f"pose_config.net {pose_config.net} does not describe this network ({net.config}).")
    dtype = torch.float16 if half else torch.float32
    state = {
        k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in net.state_dict().items()
    }
    meta = {POSE_CONFIG_METADATA_KEY: json.dumps(dataclasses.asdict(pose_config)), "dtype": str(dtype)}
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)
    logger.info("Exported %d tensors (%s) to %s (%.2f MB).", len(state), dtype, path, path.stat().st_size / 1e6)
    return path


def read_exported_pose_config(path: str | Path) -> PoseEstimatorConfig:
    """The estimator config stored by :func:`export_pose_weights` in a ``.safetensors`` file's metadata.

    Raises:
        ValueError: the file has no ``pose_config`` metadata (it was not written by :func:`export_pose_weights`).
    """
    from safetensors import safe_open

    from ldm.pose.bottom_up import BottomUpConfig
    from ldm.pose.higherhrnet import HigherHRNetConfig, StageConfig

    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(POSE_CONFIG_METADATA_KEY)
    if raw is None:
        raise ValueError(f"{path} has no '{POSE_CONFIG_METADATA_KEY}' metadata; pass the pose config explicitly.")
    data = json.loads(raw)
    net = dict(data["net"])
    for stage in ("stage2", "stage3", "stage4"):
        net[stage] = StageConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in net[stage].items()})
    return PoseEstimatorConfig(net=HigherHRNetConfig(**net), test=BottomUpConfig(**data["test"]))


def check_pose_train_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a pose training config (module docstring) before anything is built.

    Args:
        cfg: the loaded config (OmegaConf or plain mapping), overrides applied.

    Returns:
        The resolved plain-dict config.

    Raises:
        ValueError: unknown or missing sections, a model target other than :class:`PoseNetModule`, or trainer keys
            that ``lightning.pytorch.Trainer`` does not accept or that the script sets itself.
    """
    plain = to_container(cfg)
    if not isinstance(plain, dict):
        raise ValueError(f"A pose training config must be a mapping; got {type(plain).__name__}.")
    unknown = sorted(set(plain) - set(TRAIN_CONFIG_SECTIONS))
    missing = [k for k in ("model", "data", "trainer") if k not in plain]
    if unknown or missing:
        raise ValueError(
            f"Pose training config: unknown section(s) {unknown}, missing {missing}; valid sections are "
            f"{list(TRAIN_CONFIG_SECTIONS)}."
        )
    target = f"{PoseNetModule.__module__}.{PoseNetModule.__name__}"
    if not isinstance(plain["model"], dict) or plain["model"].get("target") != target:
        raise ValueError(f"model.target must be {target!r}; got {plain['model']!r:.200}.")
    trainer = plain["trainer"] or {}
    taken = sorted(set(trainer) & set(RESERVED_TRAINER_KEYS))
    if taken:
        raise ValueError(
            f"trainer keys {taken} are set by scripts/train_pose.py (--max-minutes, --log-dir); remove them."
        )
    check_params(pl.Trainer, trainer, name="trainer (lightning.pytorch.Trainer)")
    if not isinstance(plain.get("seed", 0), int):
        raise ValueError(f"seed must be an integer; got {plain['seed']!r}.")
    return plain


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float images in [-1, 1] -> (B, H, W, 3) uint8 RGB (the inverse of the dataset's scaling)."""
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
