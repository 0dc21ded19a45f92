"""Exponential moving average of the trainable UNet weights, checkpointed under ``model_ema.*``.

Key layout follows the original ``LitEma`` (shadow buffer name = parameter name relative to the UNet wrapper with
the dots removed, plus ``decay`` and ``num_updates`` buffers), so the inference loader drops these keys by prefix and
``scripts/export_checkpoint.py`` can read both our checkpoints and original LDM ones.

References:
    Stability-AI/stablediffusion (cf8f7b6), ldm/modules/ema.py ``LitEma`` (warm-up min(decay, (1 + n) / (10 + n))).
    Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging", 1992.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def shadow_name(param_name: str) -> str:
    """``diffusion_model.input_blocks.0.0.weight`` -> ``diffusion_modelinput_blocks00weight`` (LitEma's names)."""
    return param_name.replace(".", "")


class EMA(nn.Module):
    """Shadow copies of a module's trainable parameters.

    Args:
        module: the module whose parameters with ``requires_grad`` are averaged (the UNet wrapper
            ``LatentDiffusion.model``, so names are ``diffusion_model.*``).
        decay: target decay in [0, 1).
        use_num_updates: warm up the decay as min(decay, (1 + n) / (10 + n)) over the first updates, as LitEma.
    """

    def __init__(self, module: nn.Module, *, decay: float = 0.9999, use_num_updates: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1); got {decay}.")
        self.register_buffer("decay", torch.tensor(decay, dtype=torch.float32))
        self.register_buffer("num_updates", torch.tensor(0 if use_num_updates else -1, dtype=torch.int64))
        self.names: dict[str, str] = {}  # parameter name -> shadow buffer name
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            key = shadow_name(name)
            if key in self.names.values() or key in ("decay", "num_updates"):
                raise ValueError(f"EMA shadow name collision for parameter {name!r} ({key!r}).")
            self.names[name] = key
            self.register_buffer(key, param.detach().clone().float())
        if not self.names:
            raise ValueError(f"EMA: {type(module).__name__} has no trainable parameters to average.")

    def shadow(self, param_name: str) -> torch.Tensor:
        """The averaged value of a parameter of the tracked module."""
        return getattr(self, self.names[param_name])

    def current_decay(self) -> float:
        decay = float(self.decay)
        if int(self.num_updates) >= 0:
            self.num_updates += 1
            n = int(self.num_updates)
            decay = min(decay, (1 + n) / (10 + n))
        return decay

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """shadow <- shadow - (1 - decay) * (shadow - param) for every tracked parameter."""
        one_minus = 1.0 - self.current_decay()
        params = dict(module.named_parameters())
        for name in self.names:
            shadow = self.shadow(name)
            shadow.sub_(one_minus * (shadow - params[name].detach().to(shadow.dtype)))

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Write the averaged values into the module's parameters."""
        params = dict(module.named_parameters())
        for name in self.names:
            params[name].copy_(self.shadow(name).to(params[name].dtype))

    @contextlib.contextmanager
    def swapped_in(self, module: nn.Module) -> Iterator[None]:
        """Temporarily run ``module`` with the EMA weights (restored on exit, also on errors)."""
        params = dict(module.named_parameters())
        backup = {name: params[name].detach().clone() for name in self.names}
        self.copy_to(module)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in backup.items():
                    params[name].copy_(value)

    def extra_repr(self) -> str:
        return f"tensors={len(self.names)}, decay={float(self.decay)}"
