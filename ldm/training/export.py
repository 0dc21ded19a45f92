"""Training checkpoint (Lightning ``.ckpt``) -> inference ``.safetensors`` with config and code version in metadata.

The exported file holds the ``LatentDiffusion`` state dict (EMA weights substituted for the UNet when the checkpoint
has them) and these metadata entries (strings; ``ldm.checkpoint.read_checkpoint`` JSON-decodes them):

* ``config``: the inference config as JSON (``{"model": {...}, "checkpoint": null}``), so
  ``ldm.inference.loading.load_model(config, path)`` rebuilds the model;
* ``code_version`` (package version), ``git_commit`` (or "unknown"), ``source_checkpoint``, ``global_step``,
  ``ema`` ("true"/"false"), ``dtype``, ``format`` ("humansd-inference-v1").

References:
    crowsonkb/k-diffusion ``convert_for_inference.py`` (config in safetensors metadata, EMA weights);
    facebookresearch/DiT ``find_model`` (prefer "ema").
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file

from ldm.checkpoint import compare_keys, drop_extras, read_checkpoint
from ldm.config import load_config, to_container
from ldm.diffusion.schedule import SCHEDULE_BUFFER_NAMES
from ldm.inference.loading import build_model
from ldm.training.ema import shadow_name

logger = logging.getLogger(__name__)

__all__ = ["EXPORT_FORMAT", "code_version", "export_inference_weights"]

EXPORT_FORMAT = "humansd-inference-v1"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
UNET_PREFIX = "model."  # LatentDiffusion.model (DiffusionWrapper) -> EMA names are relative to it


def code_version() -> tuple[str, str]:
    """(package version, git commit of the source tree or "unknown")."""
    try:
        version = importlib.metadata.version("humansd")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return version, commit or "unknown"


def _apply_ema(state: dict[str, torch.Tensor]) -> int:
    """Replace UNet weights by their EMA shadows (``model_ema.<name without dots>``); returns how many."""
    replaced = 0
    for key in list(state):
        if key.startswith(UNET_PREFIX + "diffusion_model."):
            ema_key = "model_ema." + shadow_name(key[len(UNET_PREFIX) :])
            if ema_key in state:
                state[key] = state[ema_key].to(state[key].dtype)
                replaced += 1
    return replaced


def _inference_config(meta: Mapping[str, Any], config: str | Path | DictConfig | None) -> dict[str, Any]:
    if config is not None:
        cfg = config if isinstance(config, DictConfig) else load_config(config)
        if "model" not in cfg:
            raise ValueError(f"Config {config} has no 'model' section.")
        out = {"model": to_container(cfg.model)}
        if "defaults" in cfg:
            out["defaults"] = to_container(cfg.defaults)
        return {**out, "checkpoint": None}
    run_config = (meta.get("hyper_parameters") or {}).get("config")
    if not isinstance(run_config, Mapping) or "model" not in run_config:
        raise ValueError(
            "The checkpoint carries no training config (it was not written by scripts/train.py); pass --config "
            "with the inference config of its model."
        )
    out = {"model": run_config["model"], "checkpoint": None}
    size = (((run_config.get("data") or {}).get("params") or {}).get("train") or {}).get("image_size")
    if isinstance(size, int):
        out["defaults"] = {"size": size}
    return out


def export_inference_weights(
    checkpoint: str | Path,
    output: str | Path,
    *,
    use_ema: bool = True,
    dtype: str = "fp32",
    config: str | Path | DictConfig | None = None,
    trust_pickle: bool | None = None,
    unet_only: bool = False,
) -> dict[str, str]:
    """Write the inference weights of a training checkpoint as ``.safetensors`` (atomically).

    Args:
        checkpoint: Lightning ``.ckpt`` from ``scripts/train.py`` (or any LDM checkpoint together with ``config``).
        output: destination ``.safetensors`` path.
        use_ema: substitute the EMA weights when the checkpoint has them.
        dtype: "fp32", "fp16" or "bf16" for the network weights (schedule buffers stay float32).
        config: inference config to embed instead of the one stored in the checkpoint.
        trust_pickle: allow checkpoints that need full unpickling.
        unet_only: write only the UNet (``model.diffusion_model.*``), for models that share their VAE and text
            encoder through a separate base file (the tiny shipped layout: load ``[base, unet]`` together).

    Returns:
        The metadata written.

    Raises:
        ValueError: unknown dtype, no config available, or weights that do not match the config's model.
    """
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}.")
    output = Path(output)
    if output.suffix != ".safetensors":
        raise ValueError(f"The output must be a .safetensors file; got {output}.")
    state, meta = read_checkpoint(checkpoint, trust_pickle=trust_pickle)
    inference_config = _inference_config(meta, config)
    has_ema = any(k.startswith("model_ema.") and k not in ("model_ema.decay", "model_ema.num_updates") for k in state)
    replaced = _apply_ema(state) if use_ema and has_ema else 0
    if use_ema and not has_ema:
        logger.info("%s has no EMA weights; exporting the trained weights.", checkpoint)
    state = drop_extras(state)
    with torch.device("meta"):  # shapes only, no memory
        expected = build_model(OmegaConf.create(inference_config)).state_dict()
    report = compare_keys(expected, state)
    if not report.ok:
        raise ValueError(f"{checkpoint} does not match the model of its config: {report.describe()}.")
    target = DTYPES[dtype]
    tensors = {
        k: (v.to(target) if v.is_floating_point() and k not in SCHEDULE_BUFFER_NAMES else v).contiguous().clone()
        for k, v in state.items()
        if not unet_only or k.startswith(UNET_PREFIX + "diffusion_model.")
    }
    version, commit = code_version()
    metadata = {
        "format": EXPORT_FORMAT,
        "config": json.dumps(inference_config),
        "code_version": version,
        "git_commit": commit,
        "source_checkpoint": Path(checkpoint).name,
        "global_step": str(meta.get("global_step", "unknown")),
        "ema": "true" if replaced else "false",
        "dtype": dtype,
        "parts": "unet" if unet_only else "all",
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.tmp-", dir=output.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("Wrote %s (%d tensors, EMA: %s, %s).", output, len(tensors), metadata["ema"], dtype)
    return metadata
