"""Train a (tiny) KL autoencoder on a Human-Art-layout dataset and export its weights as safetensors.

Example:
    python scripts/train_autoencoder.py --config configs/tiny/mannequin-vae.yaml training.max_minutes=4
    # fine-tune only the decoder of a trained VAE (the latent space, and so every UNet trained on it, stays valid)
    python scripts/train_autoencoder.py --config configs/tiny/mannequin-vae-decoder.yaml
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from pathlib import Path

import lightning.pytorch as pl
from safetensors.torch import save_file

from ldm.checkpoint import load_prefixed
from ldm.cli import HelpFormatter
from ldm.config import instantiate, load_config, to_container
from ldm.data.humansd import HumanPoseDataModule
from ldm.training.autoencoder import AutoencoderModule

logger = logging.getLogger("train_autoencoder")


def _export(vae, cfg, trainer: pl.Trainer) -> None:
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {f"first_stage_model.{k}": v.detach().half().contiguous() for k, v in vae.state_dict().items()}
    meta = {
        "config": json.dumps(to_container(cfg.vae)),
        "metrics": json.dumps(metrics),
        "step": str(trainer.global_step),
    }
    save_file(state, str(out), metadata=meta)
    logger.info("Wrote %s after %d steps; metrics: %s", out, trainer.global_step, metrics)


PREFIX = "first_stage_model."


def load_init(vae, path: str | Path) -> None:
    """Start from trained weights: a VAE file of this script or a full model file (its `first_stage_model.*` keys).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: it holds no VAE weights, or weights of another VAE shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training.init: no file {path} (train the VAE first, or drop training.init)")
    try:
        load_prefixed(vae, path, PREFIX)
    except ValueError as err:
        raise ValueError(f"training.init: {err}") from err
    logger.info("Initialised the VAE from %s.", path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="autoencoder training config")
    parser.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    parser.add_argument("--logdir", type=Path, default=Path("logs/autoencoder"), help="Lightning log folder")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
        root = Path(cfg.data.root)
        split = {"map_file": str(root / "mapping_file_training.json"), "image_size": cfg.data.image_size}
        val = {**split, "map_file": str(root / "mapping_file_validation.json"), "augment": False}
        # data.extra_train_roots: more worlds (e.g. MannequinExtra) whose training splits join the training data
        train_maps = [split["map_file"]] + [
            str(Path(r) / "mapping_file_training.json") for r in cfg.data.get("extra_train_roots") or []
        ]
        data = HumanPoseDataModule(
            train={**split, "map_file": train_maps, "vflip_p": 0.0, "rotate_p": 0.0},
            validation=val,
            batch_size=cfg.data.batch_size,
            num_workers=int(cfg.data.get("num_workers", 0)),
            seed=cfg.training.seed,
        )
        pl.seed_everything(cfg.training.seed, workers=True)
        vae = instantiate(cfg.vae)
        if cfg.training.get("init"):
            load_init(vae, cfg.training.init)
        module = AutoencoderModule(
            vae=vae,
            learning_rate=cfg.training.learning_rate,
            kl_weight=cfg.training.kl_weight,
            crop_size=cfg.training.get("crop_size"),
            decoder_only=bool(cfg.training.get("decoder_only", False)),
            lr_decay_steps=cfg.training.get("lr_decay_steps"),
        )
        module.check_lr_decay(int(cfg.training.max_steps))  # before training starts, not inside fit
    except (ValueError, FileNotFoundError) as err:
        print(f"train_autoencoder: error: {err}", file=sys.stderr)
        return 2
    trainer = pl.Trainer(
        accelerator="auto",
        max_steps=cfg.training.max_steps,
        max_time=datetime.timedelta(minutes=float(cfg.training.max_minutes)),
        default_root_dir=str(args.logdir),
        logger=pl.loggers.CSVLogger(str(args.logdir)),
        enable_checkpointing=False,
        log_every_n_steps=25,
        val_check_interval=500,
        check_val_every_n_epoch=None,
    )
    try:
        trainer.fit(module, datamodule=data)
    finally:  # also after an interrupt or a crash mid-run: the weights trained so far are never lost
        _export(vae, cfg, trainer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
