"""Prepacked weights for CPU inference (the `prepack_weights` fast path).

Plain `F.conv2d` / `F.linear` on CPU reorder their weights into oneDNN's / MKL's blocked layouts on every call;
`prepack_weights` swaps a module's `nn.Conv2d` / `nn.Linear` classes for subclasses that pack each weight once and
cache it. Parameters, state-dict keys and the training path are unchanged.

References:
    `torch/_inductor/fx_passes/mkldnn_fusion.py` (the same `mkldnn._reorder_convolution_weight` /
    `_convolution_pointwise` pair, used by inductor's freezing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class _Prepacked:
    """Mixin: a cache of one packed weight, keyed on the weight's identity and version, the compute dtype and the
    input shape, so in-place updates (optimizer steps, `load_state_dict`), `.to()`, autocast or a new size repack."""

    _packed: tuple[tuple[Any, ...], torch.Tensor] | None = None
    weight: torch.Tensor

    def _packed_weight(
        self, x: torch.Tensor | None, dtype: torch.dtype, pack: Callable[[torch.Tensor], torch.Tensor], kind: str = ""
    ):
        """The cached `pack(weight.to(dtype))`; `x` is the input when the packing depends on its shape, else None."""
        key = (self.weight.data_ptr(), self.weight._version, dtype, None if x is None else tuple(x.shape), kind)
        if self._packed is None or self._packed[0] != key:
            self._packed = None  # release the stale copy before packing the new one
            self._packed = (key, pack(self.weight.to(dtype)))
        return self._packed[1]

    def __getstate__(self) -> dict[str, Any]:
        # oneDNN's opaque packed tensors cannot be copied or pickled; a copy repacks on its first call.
        state = dict(super().__getstate__())
        state.pop("_packed", None)
        return state


class PrepackedConv2d(_Prepacked, nn.Conv2d):
    """`nn.Conv2d` that, in CPU inference, runs oneDNN on a weight reordered once and cached.

    Plain `F.conv2d` on CPU reorders the weight into oneDNN's blocked layout on every call; for the 1280-channel
    3x3 convolutions of SD's inner levels at 256-512 px that reorder costs as much as the convolution itself. The
    cache holds at most one packed copy (see `_Prepacked`). Outputs are channels-last (oneDNN's native layout).
    Outside no-grad CPU inference in fp32 / bf16 (training, autograd, other devices or dtypes) it is exactly
    `nn.Conv2d`. Parameters and state-dict keys are those of `nn.Conv2d`; convert modules with `prepack_weights`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _packed_dtype(x, (torch.float32, torch.bfloat16))
        if dtype is None or x.dim() != 4 or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(x)
        geometry = (list(self.padding), list(self.stride), list(self.dilation), self.groups)
        weight = self._packed_weight(
            x, dtype, lambda w: torch.ops.mkldnn._reorder_convolution_weight(w, *geometry, list(x.shape))
        )
        bias = None if self.bias is None else self.bias.to(dtype)
        return torch.ops.mkldnn._convolution_pointwise(x.to(dtype), weight, bias, *geometry, "none", [], "")


class PrepackedLinear(_Prepacked, nn.Linear):
    """`nn.Linear` that, in CPU inference, multiplies by a weight packed once and cached.

    fp32 uses MKL's packed sgemm (`mkl._mkl_linear`, as inductor's freezing does; measured ~5% faster UNet at 256
    px), bf16 autocast oneDNN's packed matmul (`mkldnn._linear_pointwise`, ~7%). Otherwise as `PrepackedConv2d`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _packed_dtype(x, (torch.float32, torch.bfloat16) if torch._C.has_mkl else (torch.bfloat16,))
        if dtype is None:
            return super().forward(x)
        rows = x.numel() // x.shape[-1]
        if dtype == torch.bfloat16:
            weight = self._packed_weight(x, dtype, lambda w: torch.ops.mkldnn._reorder_linear_weight(w, rows))
            bias = None if self.bias is None else self.bias.to(dtype)
            return torch.ops.mkldnn._linear_pointwise(x.to(dtype), weight, bias, "none", [], "")
        weight = self._packed_weight(x, dtype, lambda w: torch.ops.mkl._mkl_reorder_linear_weight(w, rows))
        out = torch.ops.mkl._mkl_linear(x.reshape(rows, x.shape[-1]), weight, self.weight, self.bias, rows)
        return out.view(*x.shape[:-1], self.out_features)


def _packed_dtype(x: torch.Tensor, dtypes: tuple[torch.dtype, ...]) -> torch.dtype | None:
    """The dtype the plain op would compute in (autocast's on CPU) if packing applies to `x`, else None."""
    if torch.is_grad_enabled() or x.device.type != "cpu":
        return None
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    return dtype if dtype in dtypes else None


def prepack_weights(module: nn.Module) -> int:
    """Turn every plain `nn.Conv2d` / `nn.Linear` in `module` into `PrepackedConv2d` / `PrepackedLinear` (in place).

    Only the classes change: parameters, state-dict keys and the training path are untouched; no-grad CPU outputs
    agree with the plain path to float rounding (~1e-5 on SD's activations in fp32). Costs up to one extra copy of
    the weights (the packed ones). Requires oneDNN (mkldnn). Returns the number of converted modules.
    """
    if not torch.backends.mkldnn.is_available():
        raise RuntimeError("prepack_weights needs a torch build with oneDNN (torch.backends.mkldnn.is_available()).")
    classes = {nn.Conv2d: PrepackedConv2d, nn.Linear: PrepackedLinear}
    count = 0
    for m in module.modules():
        if type(m) in classes:
            m.__class__ = classes[type(m)]
            count += 1
    return count
