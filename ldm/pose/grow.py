"""Grow a trained HigherHRNet into a wider one that computes exactly the same outputs (then train on).

Every layer of the wide network keeps the trained weights in its leading channels. The new channels start from the
wide network's own initialisation, and every weight that reads a new channel into an old one is zero, so at the
start the new channels see the image but cannot change the old channels, the heatmaps or the tags; training then
grows those weights from zero (the "zero extension" variant of Net2WiderNet, Chen et al., ICLR 2016). The extra
capacity costs no drop in accuracy at the start, unlike training the wider network from scratch.

The only layer whose input is not "old channels first" is the head's deconvolution, whose input is
``concat(feature, quarter-resolution prediction)``: its trained input channels are mapped around the new feature
channels.

Example:
    wide = HigherHRNet(wide_config)
    wide.load_state_dict(widen_pose_state_dict(narrow_state, wide))
"""

from __future__ import annotations

import torch
from torch import nn

from ldm.pose.higherhrnet import HigherHRNet

__all__ = ["widen_pose_state_dict"]


def _head_input_map(old_feature: int, new_feature: int, old_total: int) -> torch.Tensor:
    """Indices, in the wide deconvolution's input, of the narrow one's inputs (feature first, then predictions)."""
    index = torch.arange(old_total)
    return torch.where(index < old_feature, index, index + (new_feature - old_feature))


def _grow_weight(old: torch.Tensor, new: torch.Tensor, in_map: torch.Tensor, *, transposed: bool) -> torch.Tensor:
    """Place ``old`` into ``new``: trained rows keep their inputs, and read zeros from the added input channels."""
    out = new.detach().clone()
    if transposed:  # ConvTranspose2d weights are (in, out, kH, kW)
        out, old = out.transpose(0, 1), old.transpose(0, 1)
    rows = old.shape[0]
    if out.shape[0] < rows or out.shape[2:] != old.shape[2:]:
        raise ValueError(f"cannot widen a weight of shape {tuple(old.shape)} into {tuple(out.shape)}.")
    out[:rows] = 0
    out[:rows, in_map] = old.to(out.dtype)
    return out.transpose(0, 1) if transposed else out


def _grow_vector(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Per-channel tensors (biases, BatchNorm affine and running statistics): trained values first."""
    if new.ndim == 0:
        return old.clone()
    if new.shape[0] < old.shape[0]:
        raise ValueError(f"cannot widen a vector of {old.shape[0]} channels into {new.shape[0]}.")
    out = new.detach().clone()
    out[: old.shape[0]] = old.to(out.dtype)
    return out


def widen_pose_state_dict(state: dict[str, torch.Tensor], wide: HigherHRNet) -> dict[str, torch.Tensor]:
    """A state dict for ``wide`` that reproduces the narrower network ``state`` exactly.

    Args:
        state: trained weights of a HigherHRNet with the same topology (stages, modules, blocks) and channel
            counts no larger than ``wide``'s.
        wide: the wider network, already initialised (its initial values fill the new channels).

    Returns:
        A complete state dict for ``wide`` (load it with ``wide.load_state_dict``).

    Raises:
        ValueError: the key sets differ (a different topology) or a tensor would have to shrink.
    """
    target = wide.state_dict()
    optional = {k for k in target if k.endswith("num_batches_tracked")}
    missing = sorted(set(target) - set(state) - optional)
    unexpected = sorted(set(state) - set(target))
    if missing or unexpected:
        raise ValueError(
            "widening needs the same layers in both networks (only channel counts may grow); "
            f"missing {len(missing)}: {missing[:3]}; unexpected {len(unexpected)}: {unexpected[:3]}."
        )
    modules = dict(wide.named_modules())
    head_deconv = wide.keypoint_head.deconv_layers[0][0][0]
    grown = dict(target)
    for key, old in state.items():
        module_name, _, leaf = key.rpartition(".")
        module, new = modules[module_name], target[key]
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and leaf == "weight":
            transposed = isinstance(module, nn.ConvTranspose2d)
            old_in = old.shape[0] if transposed else old.shape[1]
            if module is head_deconv:
                feature = wide.keypoint_head.final_layers[0].in_channels
                in_map = _head_input_map(old_in - 2 * wide.config.num_joints, feature, old_in)
            else:
                in_map = torch.arange(old_in)
            grown[key] = _grow_weight(old, new, in_map, transposed=transposed)
        else:
            grown[key] = _grow_vector(old, new)
    return grown
