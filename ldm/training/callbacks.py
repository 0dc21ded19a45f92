"""Training callbacks and the checkpoint writer: run-folder setup, sample grids with the pose overlay, atomic saves.

* ``SetupCallback`` creates the run folder layout and saves the resolved config (rank 0, before the first step).
* ``ImageSampler`` samples images for the first items of a training batch every N steps (DDIM + classifier-free
  guidance with the negative prompt, the pose latent kept in both branches) and saves one PNG grid per event:
  rows = input images, pose maps, samples, samples with the skeleton pasted on top (spec §4.5 ``inputs``,
  ``pose_image``, ``samples_cfg_scale_*``, ``pose_samples_cfg_scale_*``); prompts go to a ``.txt`` next to it.
* ``AtomicCheckpointIO`` writes checkpoints to a temporary file in the destination folder, fsyncs it and renames it
  over the target, so a killed job never leaves a truncated ``.ckpt``. Lightning 2.6's ``TorchCheckpointIO``
  serialises into memory and writes through an fsspec transaction whose local temporary file is created by
  ``tempfile.mkstemp()`` in the *system* temp dir and moved with ``shutil.move``; that is only an atomic rename
  when /tmp and the log dir share a filesystem (otherwise a copy), and it needs a second full copy of the
  checkpoint in /tmp (lightning/fabric/utilities/cloud_io.py ``_atomic_save``; fsspec ``LocalFileOpener``;
  Lightning-AI/pytorch-lightning issue #19970 and PR #20011).

References:
    Lightning examples ``autoencoder.py`` (``ImageSampler`` callback); HumanSD (c5db29d) main.py ``ImageLogger``,
    ``SetupCallback`` (spec §4.1, §4.3, §4.5).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf
from PIL import Image

from ldm.conditioning import Conditioning
from ldm.data.keys import BatchKey
from ldm.inference.pipeline import DEFAULT_NEGATIVE_PROMPT
from ldm.pose.render import overlay_skeleton
from ldm.samplers import ClassifierFreeGuidance, SamplerName, get_sampler, make_plan, prepare_latents

logger = logging.getLogger(__name__)

__all__ = ["AtomicCheckpointIO", "ImageSampler", "RunLayout", "SetupCallback"]


class RunLayout:
    """Folders of one run (spec §4.1): ``checkpoints/``, ``checkpoints/trainstep_checkpoints/``, ``configs/``,
    ``images/train/``; loggers write under the run folder (``csv/`` or ``tensorboard/``).

    Args:
        root: the run folder, e.g. ``logs/2024-01-01T00-00-00_humansd-finetune``.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.step_checkpoints = self.checkpoints / "trainstep_checkpoints"
        self.configs = self.root / "configs"
        self.images = self.root / "images"

    def create(self) -> None:
        # checkpoints/ and trainstep_checkpoints/ are created by ModelCheckpoint when it first saves (it warns about
        # a non-empty folder otherwise).
        for path in (self.configs, self.images / "train"):
            path.mkdir(parents=True, exist_ok=True)


class SetupCallback(Callback):
    """Creates the run folders and writes ``configs/<stamp>-project.yaml`` and ``configs/<stamp>-lightning.yaml``.

    Args:
        layout: the run's folders.
        config: the resolved run config (a plain mapping).
        stamp: file-name prefix (the run's start time).
    """

    def __init__(self, layout: RunLayout, config: Mapping[str, Any], *, stamp: str):
        self.layout = layout
        self.config = dict(config)
        self.stamp = stamp

    @rank_zero_only
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.layout.create()
        project = {k: v for k, v in self.config.items() if k != "lightning"}
        OmegaConf.save(OmegaConf.create(project), self.layout.configs / f"{self.stamp}-project.yaml")
        lightning = {"lightning": self.config.get("lightning", {})}
        OmegaConf.save(OmegaConf.create(lightning), self.layout.configs / f"{self.stamp}-lightning.yaml")
        logger.info("Run folder: %s", self.layout.root)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def make_grid(rows: list[np.ndarray], *, padding: int = 2) -> np.ndarray:
    """Tile rows of (N, H, W, 3) uint8 images into one (R * (H + p) + p, N * (W + p) + p, 3) image."""
    n, h, w, _ = rows[0].shape
    grid = np.zeros((len(rows) * (h + padding) + padding, n * (w + padding) + padding, 3), np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            y, x = padding + r * (h + padding), padding + c * (w + padding)
            grid[y : y + h, x : x + w] = image
    return grid


class ImageSampler(Callback):
    """Saves sample grids with the pose overlay every ``every_n_steps`` optimizer steps.

    Sampling runs on rank 0 only, except under sharded strategies (FSDP), where every rank must take part in the
    forward passes; the file is always written by rank 0.

    Args:
        every_n_steps: sampling period in optimizer steps (200 in the original); the first step is skipped.
        num_images: items of the batch to sample for (4).
        sampler: sampler name (see ``ldm.samplers.SamplerName``).
        steps: sampler steps (50).
        guidance_scale: CFG scale (5.0 in the original's ImageLogger).
        negative_prompt: the unconditional text (the original's negative prompt).
        seed: seed of the sampling noise (the same for every event, so grids are comparable over time).
        use_ema: sample with the EMA weights when the module keeps them.
        dirname: sub-folder of the run's ``images/`` folder.
    """

    def __init__(
        self,
        *,
        layout: RunLayout,
        every_n_steps: int = 200,
        num_images: int = 4,
        sampler: str = "ddim",
        steps: int = 50,
        guidance_scale: float = 5.0,
        negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
        seed: int = 0,
        use_ema: bool = False,
        dirname: str = "train",
    ):
        if every_n_steps < 1 or num_images < 1 or steps < 1:
            raise ValueError(
                f"ImageSampler needs every_n_steps, num_images and steps >= 1; got {every_n_steps}, {num_images}, "
                f"{steps}."
            )
        self.sample_fn = get_sampler(SamplerName(sampler))
        self.layout = layout
        self.every_n_steps = every_n_steps
        self.num_images = num_images
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.negative_prompt = negative_prompt
        self.seed = seed
        self.use_ema = use_ema
        self.dirname = dirname
        self._last_step = -1

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step
        sharded = isinstance(trainer.strategy, FSDPStrategy)
        if not (sharded or trainer.is_global_zero):
            return
        with trainer.precision_plugin.forward_context():
            grid, prompts = self.sample_grid(pl_module, batch)
        self._save(grid, prompts, f"samples_gs-{step:06}_e-{trainer.current_epoch:06}_b-{batch_idx:06}")

    @torch.no_grad()
    def sample_grid(self, pl_module: pl.LightningModule, batch: Mapping[str, Any]) -> tuple[np.ndarray, list[str]]:
        """Sample for the first ``num_images`` items of ``batch``; returns the (H', W', 3) uint8 grid and prompts."""
        model = pl_module.model
        n = min(self.num_images, len(batch[BatchKey.CAPTION]))
        prompts = list(batch[BatchKey.CAPTION][:n])
        cached = BatchKey.IMAGE_MOMENTS in batch  # latent-cache batch: show the VAE reconstructions instead
        if cached:
            images = model.vae.decode(batch[BatchKey.IMAGE_MOMENTS][:n].chunk(2, dim=1)[0]).clamp(-1, 1)
            pose_moments = batch[BatchKey.POSE_MOMENTS][:n] if model.pose_conditioning else None
            pose_maps = None if pose_moments is None else model.vae.decode(pose_moments.chunk(2, dim=1)[0])
        else:
            images = batch[BatchKey.IMAGE][:n]
            pose_maps = batch[BatchKey.POSE_MAP][:n] if model.pose_conditioning else None
        ema = getattr(pl_module, "model_ema", None)
        scope = ema.swapped_in(model.model) if self.use_ema and ema is not None else contextlib.nullcontext()
        was_training = model.training
        model.eval()
        try:
            with scope:
                generator = torch.Generator().manual_seed(self.seed)
                if cached:
                    cond = model.get_conditioning(prompts, None, generator, pose_moments=pose_moments)
                else:
                    cond = model.get_conditioning(prompts, pose_maps, generator)
                negative = model.encode_text([self.negative_prompt]).expand(n, -1, -1)
                guidance = ClassifierFreeGuidance(self.guidance_scale, Conditioning(negative, cond.concat))
                plan = make_plan(model.alphas_cumprod, self.steps)
                shape = (n, model.vae.embed_dim, *(s // model.downsample_factor for s in images.shape[-2:]))
                noise = torch.randn(shape, generator=generator).to(images.device)
                latents = self.sample_fn(model, prepare_latents(plan, noise), plan, cond=cond, guidance=guidance)
                samples = _to_uint8(model.decode_latents(latents))
        finally:
            model.train(was_training)
        rows = [_to_uint8(images)]
        if pose_maps is not None:
            poses = _to_uint8(pose_maps.clamp(-1, 1))
            rows += [poses, samples, np.stack([overlay_skeleton(s, p) for s, p in zip(samples, poses)])]
        else:
            rows.append(samples)
        return make_grid(rows), prompts

    @rank_zero_only
    def _save(self, grid: np.ndarray, prompts: list[str], name: str) -> None:
        folder = self.layout.images / self.dirname
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
        logger.info("Saved samples %s", folder / f"{name}.png")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into ``<dir>/.<name>.tmp-<pid>``, fsync, then ``os.replace`` onto the target (see module doc).

    Local paths only (the run folder); the temporary file lives next to the target, so the rename never crosses
    filesystems and no second in-memory copy of the checkpoint is made.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not support storage_options; got {storage_options!r}.")
        path = Path(path)
        if "://" in str(path):
            raise ValueError(f"{type(self).__name__} writes local files only; got {path}.")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
