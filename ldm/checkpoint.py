"""Reading checkpoints (Lightning `.ckpt`, `.pth`, `.safetensors`) and loading them strictly into models.

Constructors never load files: `load_model(config, path)` builds the model from its config, then loads the
weights by name. Loading is strict; only documented extras are dropped (and logged), and any other missing,
unexpected or mis-shaped key is an error that lists the first offenders.

References:
    karpathy/nanoGPT `from_pretrained` (assert every key and shape); crowsonkb/k-diffusion `convert_for_inference.py`.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = Path("humansd_data/checkpoints")

# Where users obtain each public file (printed when it is missing; nothing is ever downloaded).
CHECKPOINT_SOURCES: dict[str, str] = {
    "humansd-v1.ckpt": "the 'Model and Checkpoints' Google Drive folder linked from the IDEA-Research/HumanSD README",
    "v2-1_512-ema-pruned.ckpt": "Hugging Face, repository stabilityai/stable-diffusion-2-1-base",
    "higherhrnet_w48_humanart_512x512_udp.pth": "the Google Drive folder linked from the IDEA-Research/HumanSD README",
    "v1-5-pruned.ckpt": "a mirror of runwayml/stable-diffusion-v1-5 on Hugging Face",
    "v1-5-pruned-emaonly.ckpt": "a mirror of runwayml/stable-diffusion-v1-5 on Hugging Face",
    "control_v11p_sd15_openpose.pth": "Hugging Face, repository lllyasviel/ControlNet-v1-1",
    "t2iadapter_openpose_sd14v1.pth": "Hugging Face, repository TencentARC/T2I-Adapter (models/)",
}

# Keys that real files carry but our inference models do not own. Dropped by name, with a log line.
DROPPED_PREFIXES: tuple[str, ...] = (
    "mmpose_model.",  # the heatmap-loss pose net that HumanSD's training class registered as a child module
    "model_ema.",  # EMA shadow weights / counters (ema-pruned files keep decay and num_updates)
)
# Buffers that exist in some code versions but are not persistent state.
DROPPED_KEYS: tuple[str, ...] = ("lvlb_weights", "logvar", "cond_stage_model.model.attn_mask")

TRUST_ENV = "HUMANSD_TRUST_CHECKPOINTS"


def missing_file_message(path: Path) -> str:
    source = CHECKPOINT_SOURCES.get(path.name)
    where = f"; download it from {source}" if source else ""
    return f"Checkpoint not found: {path} (expected a file at this path{where}; see README 'Checkpoints')."


def read_checkpoint(path: str | Path, *, trust_pickle: bool | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read the tensors of a checkpoint file and its metadata.

    `.safetensors` are read directly (metadata = its header's `__metadata__`, JSON-decoded where possible).
    Pickle files are read with `torch.load(weights_only=True)`; a file that needs arbitrary pickled objects is
    refused unless `trust_pickle` (or the environment variable HUMANSD_TRUST_CHECKPOINTS=1) says the file is trusted.
    A Lightning/mmcv `state_dict` entry is unwrapped.

    Returns:
        (state_dict, metadata) with all tensors on CPU.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing_file_message(path))
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
        meta = {}
        for k, v in raw_meta.items():
            try:
                meta[k] = json.loads(v)
            except json.JSONDecodeError:
                meta[k] = v
        return load_file(str(path), device="cpu"), meta
    trust = trust_pickle if trust_pickle is not None else os.environ.get(TRUST_ENV) == "1"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError) as err:
        if not trust:
            raise ValueError(
                f"{path} holds pickled Python objects besides tensors, so it was not loaded with "
                f"weights_only=True ({str(err).splitlines()[0][:160]}). If you trust this file, pass "
                f"--trust-checkpoint (or set {TRUST_ENV}=1)."
            ) from None
        logger.warning("Loading %s with weights_only=False because it was marked as trusted.", path)
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} does not contain a state dict (got {type(obj).__name__}).")
    meta = {k: v for k, v in obj.items() if k != "state_dict" and not isinstance(v, torch.Tensor)}
    state = obj.get("state_dict", obj)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{path} contains no tensors.")
    return tensors, meta


def drop_extras(
    state_dict: Mapping[str, torch.Tensor],
    *,
    prefixes: Iterable[str] = DROPPED_PREFIXES,
    keys: Iterable[str] = DROPPED_KEYS,
) -> dict[str, torch.Tensor]:
    """Remove the documented extra keys (logged with counts per prefix)."""
    prefixes, keys = tuple(prefixes), set(keys)
    kept, dropped = {}, {}
    for k, v in state_dict.items():
        hit = next((p for p in prefixes if k.startswith(p)), None) or (k if k in keys else None)
        if hit is None:
            kept[k] = v
        else:
            dropped[hit] = dropped.get(hit, 0) + 1
    for what, n in dropped.items():
        logger.info("Ignoring %d checkpoint key(s) %s%s", n, what, "*" if what in prefixes else "")
    return kept


def expand_conv_in(state_dict: dict[str, torch.Tensor], key: str, in_channels: int) -> dict[str, torch.Tensor]:
    """Widen a conv weight's input channels, new channels zero-initialised (HumanSD fine-tune init, spec §1.8).

    Used to start HumanSD's 8-channel UNet from SD-2.1's 4-channel one: the pose-latent channels start at
    zero so the expanded model initially behaves exactly like SD-2.1.

    Args:
        state_dict: modified in place and returned.
        key: e.g. "model.diffusion_model.input_blocks.0.0.weight".
        in_channels: the new input width (8).
    """
    if key not in state_dict:
        raise ValueError(f"Cannot expand {key!r}: the checkpoint has no such key.")
    old = state_dict[key]
    if old.ndim != 4 or old.shape[1] > in_channels:
        raise ValueError(f"Cannot expand {key} of shape {tuple(old.shape)} to {in_channels} input channels.")
    if old.shape[1] == in_channels:
        return state_dict
    new = old.new_zeros(old.shape[0], in_channels, *old.shape[2:])
    new[:, : old.shape[1]] = old
    state_dict[key] = new
    logger.info(
        "Expanded %s from %d to %d input channels (new channels zero-initialised).", key, old.shape[1], in_channels
    )
    return state_dict


@dataclass
class KeyReport:
    """Differences between a model's state dict and a checkpoint's."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 5) -> str:
        parts = []
        if self.mismatched:
            items = ", ".join(f"{k} (model {list(a)} vs file {list(b)})" for k, a, b in self.mismatched[:limit])
            parts.append(f"{len(self.mismatched)} shape mismatch(es): {items}")
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s): {', '.join(self.missing[:limit])}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key(s): {', '.join(self.unexpected[:limit])}")
        return "; ".join(parts)


def compare_keys(
    expected: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], optional: Iterable[str] = ()
) -> KeyReport:
    """Compare expected {key: shape or tensor} with a state dict; keys in `optional` may be absent."""
    optional = set(optional)
    report = KeyReport()
    for k, v in expected.items():
        shape = tuple(v.shape) if hasattr(v, "shape") else tuple(v)
        if k not in state_dict:
            if k not in optional:
                report.missing.append(k)
        elif tuple(state_dict[k].shape) != shape:
            report.mismatched.append((k, shape, tuple(state_dict[k].shape)))
    report.unexpected = [k for k in state_dict if k not in expected]
    return report


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str, optional: Iterable[str] = ()
) -> None:
    """Load by name; raise ValueError listing the first differences if anything does not match exactly."""
    own = model.state_dict()
    report = compare_keys(own, state_dict, optional)
    if not report.ok:
        raise ValueError(f"{source} does not match {type(model).__name__}: {report.describe()}.")
    full = dict(state_dict)
    full.update({k: own[k] for k in optional if k not in full and k in own})  # absent optional keys keep their value
    model.load_state_dict(full, strict=True)


def read_checkpoints(
    paths: str | Path | Sequence[str | Path], *, trust_pickle: bool | None = None
) -> tuple[dict[str, torch.Tensor], dict]:
    """Read one checkpoint, or several that together hold one model (e.g. shared VAE + text encoder files and a
    UNet file, as the tiny shipped weights are split). A key present in two files is an error.

    Returns:
        (merged state dict, metadata of the last file).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    merged: dict[str, torch.Tensor] = {}
    meta: dict = {}
    for path in paths:
        state, meta = read_checkpoint(path, trust_pickle=trust_pickle)
        clash = sorted(set(state) & set(merged))
        if clash:
            raise ValueError(f"{path} repeats {len(clash)} key(s) already given by an earlier file, e.g. {clash[0]}.")
        merged.update(state)
    return merged, meta


def load_prefixed(
    module: nn.Module,
    paths: str | Path | Sequence[str | Path],
    prefix: str,
    *,
    trust_pickle: bool | None = None,
) -> None:
    """Strictly load the ``prefix``-keyed part of checkpoint file(s) into one sub-model.

    E.g. the VAE of a full model file: ``load_prefixed(model.vae, "base-tiny.safetensors", "first_stage_model.")``.
    Tensors are cast to the module's dtypes by ``load_state_dict``.

    Raises:
        FileNotFoundError: a file is missing (the message says where to get it).
        ValueError: the files hold no ``prefix`` keys, or those keys do not match the module exactly.
    """
    files = [paths] if isinstance(paths, (str, Path)) else list(paths)
    for path in files:
        if not Path(path).is_file():
            raise FileNotFoundError(missing_file_message(Path(path)))
    state, _ = read_checkpoints(files, trust_pickle=trust_pickle)
    sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    names = ", ".join(str(p) for p in files)
    if not sub:
        raise ValueError(f"no {prefix}* weights in {names}")
    load_state_dict_strict(module, sub, source=f"the {prefix}* weights of {names}")


def load_weights(
    model: nn.Module,
    path: str | Path | Sequence[str | Path],
    *,
    expand_keys: Iterable[str] = (),
    trust_pickle: bool | None = None,
) -> dict:
    """Load checkpoint file(s) strictly into `model` (after dropping documented extras).

    Args:
        model: the built model.
        path: a `.ckpt`, `.pth` or `.safetensors` file, or a list of files that together hold the model.
        expand_keys: conv weights whose input channels are widened (zero-init) to the model's shape first.
        trust_pickle: allow non-weights-only pickles (see `read_checkpoint`).

    Returns:
        The checkpoint's metadata (of the last file).
    """
    state, meta = read_checkpoints(path, trust_pickle=trust_pickle)
    state = drop_extras(state)
    own = model.state_dict()
    for key in expand_keys:
        if key in own:
            expand_conv_in(state, key, own[key].shape[1])
    source = str(path) if isinstance(path, (str, Path)) else " + ".join(str(p) for p in path)
    load_state_dict_strict(model, state, source=source)
    logger.info("Loaded %d tensors from %s", len(state), source)
    return meta
