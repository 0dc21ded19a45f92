"""Loading the comparison models' files: what kind of checkpoint a file is, its prefixes, strict loading.

Released layouts (spec `checkpoint-layouts/README.md`):

* `control_v11p_sd15_openpose.pth` (ControlNet v1.1): a flat dict of 340 `control_model.*` keys. Unprefixed files
  (other publishers) and `{"state_dict": ...}` wrappers are accepted too. A full ControlLDM file (ControlNet 1.0's
  `control_sd15_openpose.pth`: SD-1.5 plus `control_model.*`) contributes its `control_model.*` keys only; its
  SD weights are ignored (logged) because the base checkpoint provides them (the original loaded SD-1.5 last).
* `t2iadapter_openpose_sd14v1.pth` (T2I-Adapter v1): a flat dict of 38 unprefixed keys (`conv_in.*`, `body.*`);
  an `adapter.` prefix is stripped, as the official loader does.
* The SD-1.x base (`v1-5-pruned.ckpt`, `v1-5-pruned-emaonly.ckpt`): a Lightning `state_dict` with the UNet at
  `model.diffusion_model.*` and the CLIP text encoder at `cond_stage_model.transformer.*`; `model_ema.*` is
  dropped (`ldm.checkpoint.drop_extras`).

A file of the wrong kind (a ControlNet where an adapter is expected and vice versa, an SD-2.x/HumanSD base, a
control file as base) is refused with one line naming what it is and what was expected.

References:
    lllyasviel/ControlNet-v1-1-nightly (e2b4415), cldm/model.py `load_state_dict` (`d.get('state_dict', d)`).
    TencentARC/T2I-Adapter (16bba67), ldm/inference_base.py `get_adapters` (strips `adapter.`, strict=True).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path

import torch
from torch import nn

from ldm.checkpoint import drop_extras, load_state_dict_strict, read_checkpoints
from ldm.models.latent_diffusion import LatentDiffusion

logger = logging.getLogger(__name__)

CONTROL_PREFIX = "control_model."
ADAPTER_PREFIX = "adapter."
UNET_PREFIX = "model.diffusion_model."
OPENCLIP_PREFIX = "cond_stage_model.model."
CONTROLNET_MARKERS = ("zero_convs.", "input_hint_block.")
SD2_CONTEXT_DIM = 1024
# Stored by transformers 4.19 (SD-1.x files) but not by newer tools: tolerated when absent.
OPTIONAL_BASE_KEYS = ("cond_stage_model.transformer.text_model.embeddings.position_ids",)


class CheckpointKind(StrEnum):
    """What a checkpoint file holds (as named in error messages)."""

    CONTROLNET = "a ControlNet checkpoint"
    T2I_ADAPTER = "a T2I-Adapter checkpoint"
    SD1 = "a Stable Diffusion 1.x checkpoint"
    SD2 = "a Stable Diffusion 2.x checkpoint (OpenCLIP text encoder, context width 1024; e.g. SD-2.1 or HumanSD)"
    UNKNOWN = "not a recognised checkpoint"


def _strip(key: str, *prefixes: str) -> str:
    for prefix in prefixes:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _context_width(state: Mapping[str, torch.Tensor]) -> int | None:
    """Text width the UNet's cross-attention expects (attn2.to_k input), or None without a UNet."""
    for key, value in state.items():
        if key.startswith(UNET_PREFIX) and key.endswith("attn2.to_k.weight"):
            return int(value.shape[1])
    return None


def detect_kind(state: Mapping[str, torch.Tensor]) -> CheckpointKind:
    """Classify a state dict by its keys (ControlNet markers first: a full ControlLDM file also holds SD keys)."""
    keys = list(state)
    if any(_strip(k, CONTROL_PREFIX).startswith(CONTROLNET_MARKERS) for k in keys):
        return CheckpointKind.CONTROLNET
    stripped = {_strip(k, ADAPTER_PREFIX) for k in keys}
    if "conv_in.weight" in stripped and any(k.startswith("body.") for k in stripped):
        return CheckpointKind.T2I_ADAPTER
    if any(k.startswith(UNET_PREFIX) for k in keys):
        if any(k.startswith(OPENCLIP_PREFIX) for k in keys) or _context_width(state) == SD2_CONTEXT_DIM:
            return CheckpointKind.SD2
        return CheckpointKind.SD1
    return CheckpointKind.UNKNOWN


def _refuse(kind: CheckpointKind, expected: CheckpointKind, source: str, hint: str) -> ValueError:
    return ValueError(f"{source} is {kind.value}, but {expected.value} was expected here; {hint}.")


def controlnet_weights(state: Mapping[str, torch.Tensor], *, source: str) -> dict[str, torch.Tensor]:
    """The ControlNet's own keys (unprefixed) from a ControlNet file.

    Raises:
        ValueError: the file is not a ControlNet checkpoint.
    """
    kind = detect_kind(state)
    if kind is not CheckpointKind.CONTROLNET:
        hint = {
            CheckpointKind.T2I_ADAPTER: "use it with T2IAdapterPipeline (--control-model t2i-adapter)",
            CheckpointKind.SD1: "pass it as the base checkpoint and give control_v11p_sd15_openpose.pth as control",
        }.get(kind, "give control_v11p_sd15_openpose.pth (lllyasviel/ControlNet-v1-1)")
        raise _refuse(kind, CheckpointKind.CONTROLNET, source, hint)
    if any(k.startswith(UNET_PREFIX) for k in state):
        others = [k for k in state if not k.startswith(CONTROL_PREFIX)]
        logger.info(
            "%s is a full ControlLDM checkpoint: using its %d control_model.* tensors and ignoring its %d other "
            "(Stable Diffusion) tensors; the base checkpoint provides those.",
            source,
            len(state) - len(others),
            len(others),
        )
        return {k[len(CONTROL_PREFIX) :]: v for k, v in state.items() if k.startswith(CONTROL_PREFIX)}
    return {_strip(k, CONTROL_PREFIX): v for k, v in state.items()}


def adapter_weights(state: Mapping[str, torch.Tensor], *, source: str) -> dict[str, torch.Tensor]:
    """The adapter's keys (an `adapter.` prefix stripped) from a T2I-Adapter file.

    Raises:
        ValueError: the file is not a T2I-Adapter checkpoint.
    """
    kind = detect_kind(state)
    if kind is not CheckpointKind.T2I_ADAPTER:
        hint = {
            CheckpointKind.CONTROLNET: "use it with ControlNetPipeline (--control-model controlnet)",
            CheckpointKind.SD1: "pass it as the base checkpoint and give t2iadapter_openpose_sd14v1.pth as control",
        }.get(kind, "give t2iadapter_openpose_sd14v1.pth (TencentARC/T2I-Adapter)")
        raise _refuse(kind, CheckpointKind.T2I_ADAPTER, source, hint)
    return {_strip(k, ADAPTER_PREFIX): v for k, v in state.items()}


def check_sd1_base(state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Raise unless the state dict is an SD-1.x base (the only base ControlNet v1.1 / T2I-Adapter v1 fit)."""
    kind = detect_kind(state)
    if kind is CheckpointKind.SD1:
        return
    hint = {
        CheckpointKind.SD2: "the SD-1.5 control models need an SD-1.x base such as v1-5-pruned.ckpt",
        CheckpointKind.CONTROLNET: "pass it as the control checkpoint and give an SD-1.x base (v1-5-pruned.ckpt)",
        CheckpointKind.T2I_ADAPTER: "pass it as the control checkpoint and give an SD-1.x base (v1-5-pruned.ckpt)",
    }.get(kind, "give an SD-1.x base such as v1-5-pruned.ckpt")
    raise _refuse(kind, CheckpointKind.SD1, source, hint)


def _read(path: str | Path | Iterable[str | Path], trust_pickle: bool | None) -> tuple[dict, str]:
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    state, _ = read_checkpoints(paths, trust_pickle=trust_pickle)
    return state, " + ".join(str(p) for p in paths)


def load_base_weights(
    model: LatentDiffusion, path: str | Path | Iterable[str | Path], *, trust_pickle: bool | None = None
) -> None:
    """Load an SD-1.x checkpoint strictly into `model` (after dropping `model_ema.*` and other documented extras).

    Raises:
        FileNotFoundError: a missing file (the message says where to get it).
        ValueError: not an SD-1.x checkpoint, or any key/shape difference.
    """
    state, source = _read(path, trust_pickle)
    check_sd1_base(state, source=source)
    load_state_dict_strict(model, drop_extras(state), source=source, optional=OPTIONAL_BASE_KEYS)
    logger.info("Loaded the SD-1.x base from %s", source)


def load_controlnet(controlnet: nn.Module, path: str | Path, *, trust_pickle: bool | None = None) -> None:
    """Load a ControlNet file (`control_model.`-prefixed, unprefixed or a full ControlLDM) strictly."""
    state, source = _read(path, trust_pickle)
    load_state_dict_strict(controlnet, controlnet_weights(state, source=source), source=source)
    logger.info("Loaded the ControlNet from %s", source)


def load_adapter(adapter: nn.Module, path: str | Path, *, trust_pickle: bool | None = None) -> None:
    """Load a T2I-Adapter file (flat keys, optional `adapter.` prefix) strictly."""
    state, source = _read(path, trust_pickle)
    load_state_dict_strict(adapter, adapter_weights(state, source=source), source=source)
    logger.info("Loaded the T2I-Adapter from %s", source)
