"""Build models from configs and load their weights (the one place scripts and the demo go through)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from ldm.checkpoint import load_weights, missing_file_message
from ldm.config import instantiate, load_config
from ldm.models.latent_diffusion import LatentDiffusion

logger = logging.getLogger(__name__)

UNET_CONV_IN_KEY = "model.diffusion_model.input_blocks.0.0.weight"


def build_model(cfg: DictConfig) -> LatentDiffusion:
    """Instantiate the `model` node of a config (random weights, CPU, float32)."""
    if "model" not in cfg:
        raise ValueError("Config has no 'model' section.")
    model = instantiate(cfg.model)
    if not isinstance(model, LatentDiffusion):
        raise ValueError(f"Config 'model' must build an ldm LatentDiffusion; got {type(model).__name__}.")
    return model


def load_model(
    config: str | Path | DictConfig,
    checkpoint: str | Path | list[str | Path] | None = None,
    *,
    overrides: tuple[str, ...] = (),
    expand_conv_in: bool = False,
    trust_pickle: bool | None = None,
    allow_random: bool = False,
) -> tuple[LatentDiffusion, DictConfig]:
    """Build a model from its config and load weights strictly.

    Args:
        config: YAML path or a loaded config.
        checkpoint: weights file (or a list of files that together hold the model); None uses the config's
            top-level `checkpoint` entry.
        overrides: dotted `key=value` config overrides.
        expand_conv_in: widen a 4-channel SD-2.1 UNet input conv to the model's 8 channels (zero-init pose
            channels) — the fine-tuning initialisation of spec §1.8.
        trust_pickle: allow pickles that need more than weights_only (see `ldm.checkpoint.read_checkpoint`).
        allow_random: when no checkpoint is named anywhere, return random weights (with a warning) instead of
            raising.

    Returns:
        (model in eval mode, resolved config).
    """
    cfg = config if isinstance(config, DictConfig) else load_config(config, overrides)
    model = build_model(cfg)
    path = checkpoint if checkpoint is not None else cfg.get("checkpoint")
    if path is None:
        if not allow_random:
            raise ValueError("No checkpoint given and the config names none; pass a checkpoint path.")
        logger.warning("No checkpoint: the model has random, untrained weights.")
        return model.eval(), cfg
    paths = [Path(p) for p in (path if isinstance(path, (list, tuple, ListConfig)) else [path])]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(missing_file_message(p))
    expand = (UNET_CONV_IN_KEY,) if expand_conv_in else ()
    load_weights(model, paths if len(paths) > 1 else paths[0], expand_keys=expand, trust_pickle=trust_pickle)
    return model.eval(), cfg
