"""ControlNet and T2I-Adapter behind the samplers' `Denoiser` protocol.

Each wraps an SD-1.x `LatentDiffusion` plus its control model and one control image, and injects the control into
every network call: `apply_model(x_t, t, cond)` runs the control model and passes a `UNetControl` to
`LatentDiffusion.apply_model`. Because classifier-free guidance (`ldm.samplers.ClassifierFreeGuidance`) batches
the unconditional and conditional branches into one call, the control reaches **both** branches, as in the
original comparisons (ControlNet: `guess_mode=False`, so the unconditional branch keeps the hint; T2I-Adapter:
the features are added to the whole CFG batch).

Batching: the control image (and the adapter features) may have batch 1 (broadcast), or batch b with the network
batch B a multiple of b; it is then tiled B / b times (`torch.cat([hint] * (B // b))`), which matches CFG's
`[uncond; cond]` layout where both halves list the samples in the same order.

References:
    lllyasviel/ControlNet-v1-1-nightly (e2b4415), cldm/cldm.py `ControlLDM.apply_model`; gradio_openpose.py.
    TencentARC/T2I-Adapter, branch SD (16bba67), ldm/models/diffusion/ddim.py `DDIMSampler.ddim_sampling`
        (`features_adapter=None if index < int((1 - cond_tau) * total_steps)`).
    crowsonkb/k-diffusion, k_diffusion/external.py (wrapping a model as a denoiser).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from comparison_models.controlnet import ControlNet, control_scales, to_unet_control
from comparison_models.t2i_adapter import Adapter, adapter_block_indices
from ldm.conditioning import Conditioning
from ldm.diffusion.parameterization import Parameterization
from ldm.models.latent_diffusion import LatentDiffusion
from ldm.models.unet import UNetControl
from ldm.samplers import SamplingPlan


def _tile(x: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """Tile a batch-b tensor to `batch` (a multiple of b) by concatenation (a broadcast view for b = 1)."""
    b = x.shape[0]
    if b == batch:
        return x
    if b == 1:
        return x.expand(batch, *x.shape[1:])
    if batch % b:
        raise ValueError(f"{what} has batch {b}, which does not divide the network batch {batch}.")
    return torch.cat([x] * (batch // b))


def check_base_model(model: LatentDiffusion, context_dim: int | None, what: str) -> None:
    """Raise unless `model` is a text-to-image model whose text width is `context_dim` (None: not checked)."""
    if model.pose_conditioning:
        raise ValueError(f"{what} controls a text-to-image SD-1.x model; got a pose-conditioned (HumanSD) model.")
    unet_context = model.unet.config["context_dim"]
    if context_dim is not None and unet_context != context_dim:
        raise ValueError(
            f"{what} was built for text context width {context_dim} but the UNet's is {unet_context} "
            "(ControlNet v1.1 / T2I-Adapter v1 need an SD-1.x base: CLIP ViT-L/14, width 768)."
        )


class _ControlledDenoiser:
    """The `Denoiser` members shared by both wrappers (schedule and parameterization of the wrapped model)."""

    def __init__(self, model: LatentDiffusion):
        self.model = model

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """(T,) alpha-bar of the wrapped model's training schedule."""
        return self.model.alphas_cumprod

    @property
    def parameterization(self) -> Parameterization:
        """What the wrapped model predicts (eps for SD-1.5)."""
        return self.model.parameterization


class ControlNetDenoiser(_ControlledDenoiser):
    """SD-1.x + ControlNet as a `Denoiser`.

    Args:
        model: the SD-1.x `LatentDiffusion` (text-to-image, context width = the ControlNet's).
        controlnet: the control model.
        hint: (b, 3, H, W) control image in [0, 1] at image resolution (the rendered OpenPose skeleton / 255);
            b is 1 or divides the network batch (see the module docstring).
        scales: one factor per ControlNet output (`num_outputs`, 13 for SD); None means `control_scales(1.0)`,
            the original's strength 1 with guess mode off.
    """

    def __init__(
        self,
        model: LatentDiffusion,
        controlnet: ControlNet,
        hint: torch.Tensor,
        scales: Sequence[float] | None = None,
    ):
        super().__init__(model)
        check_base_model(model, controlnet.context_dim, "ControlNet")
        if controlnet.model_channels != model.unet.model_channels or controlnet.num_levels != model.unet.num_levels:
            raise ValueError(
                f"ControlNet (model_channels {controlnet.model_channels}, {controlnet.num_levels} levels) does not fit "
                f"the UNet (model_channels {model.unet.model_channels}, {model.unet.num_levels} levels)."
            )
        n = controlnet.num_outputs
        if len(model.unet.input_blocks) + 1 != n:
            raise ValueError(f"ControlNet returns {n} tensors but the UNet needs {len(model.unet.input_blocks) + 1}.")
        self.controlnet = controlnet
        self.hint = hint
        self.scales = list(scales) if scales is not None else control_scales(1.0, num_outputs=n)
        if len(self.scales) != n:
            raise ValueError(f"Got {len(self.scales)} control scales; this ControlNet has {n} outputs.")

    def control(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> UNetControl:
        """The scaled residuals for one network call (shapes as `apply_model`; context (B, 77, 768))."""
        hint = self.hint.to(x_t.device)
        if hint.shape[0] != 1:  # batch 1 stays: the hint block then runs once and its output broadcasts
            hint = _tile(hint, x_t.shape[0], "ControlNet hint")
        return to_unet_control(self.controlnet(x_t, hint, t, context), self.scales)

    def apply_model(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """eps prediction of SD-1.x with the ControlNet residuals; see `Denoiser.apply_model`.

        The ControlNet sees the same text tokens as the UNet (those of the branch: the negative prompt's in the
        unconditional half), as `ControlLDM.apply_model`.
        """
        context = cond.crossattn.to(x_t.dtype)
        return self.model.apply_model(x_t, t, cond, control=self.control(x_t, t, context))


class T2IAdapterDenoiser(_ControlledDenoiser):
    """SD-1.x + T2I-Adapter as a `Denoiser`.

    The adapter features are computed once, here (as the original, before sampling), and multiplied by
    `cond_weight`. They are added while the original's DDIM index `total - 1 - i` (i = sampler step, 0 first) is
    >= `int((1 - cond_tau) * total)`: with `cond_tau = 1` (the default, and HumanSD's) at every step, with
    `cond_tau = 0.5` during the first half (the noisiest steps) only. The step is found by looking `t` up in
    `plan.timesteps`, so `plan` is required when `cond_tau < 1`; a network call at a timestep outside the plan
    then raises. PLMS's start-up evaluation at the next step's timestep is gated like that next step.

    Args:
        model: the SD-1.x `LatentDiffusion` (text-to-image).
        adapter: the adapter; its levels and widths must match the UNet's.
        hint: (b, 3, H, W) control image in [0, 1] at image resolution (the rendered OpenPose skeleton / 255).
        cond_weight: feature multiplier (1.0).
        cond_tau: fraction of the steps, from the first, that get the features (1.0 = all).
        plan: the sampling plan the sampler will run (needed only when `cond_tau < 1`).
    """

    def __init__(
        self,
        model: LatentDiffusion,
        adapter: Adapter,
        hint: torch.Tensor,
        *,
        cond_weight: float = 1.0,
        cond_tau: float = 1.0,
        plan: SamplingPlan | None = None,
    ):
        super().__init__(model)
        check_base_model(model, None, "T2I-Adapter")
        unet = model.unet
        widths = [unet.model_channels * m for m in unet.config["channel_mult"]]
        if adapter.channels != widths:
            raise ValueError(
                f"T2I-Adapter feature widths {adapter.channels} do not match the UNet's level widths {widths}."
            )
        if not 0.0 <= cond_tau <= 1.0:
            raise ValueError(f"cond_tau must be in [0, 1] (fraction of the steps that get features); got {cond_tau}.")
        if cond_tau < 1.0 and plan is None:
            raise ValueError(f"cond_tau={cond_tau} < 1 needs the sampling plan to know each step's index; pass plan.")
        self.adapter = adapter
        self.cond_weight = float(cond_weight)
        self.cond_tau = float(cond_tau)
        self.plan = plan
        self.block_indices = adapter_block_indices(unet.config["num_res_blocks"], unet.num_levels)
        with torch.no_grad():
            self.features = [f * self.cond_weight for f in adapter(hint)]

    def features_active(self, t: torch.Tensor) -> bool:
        """Whether the features are injected at timestep t (all entries equal), by the original's cond_tau rule."""
        if self.cond_tau >= 1.0:
            return True
        assert self.plan is not None  # checked in __init__
        t0 = int(t[0])
        if not bool((t == t0).all()):
            raise ValueError("T2I-Adapter with cond_tau < 1 needs one timestep per network call; got several.")
        hits = (self.plan.timesteps == t0).nonzero()
        if len(hits) == 0:
            raise ValueError(f"Timestep {t0} is not in the sampling plan given to T2IAdapterDenoiser.")
        total = len(self.plan)
        index = total - 1 - int(hits[0, 0])  # the original's DDIM index, counting down to 0
        return index >= int((1.0 - self.cond_tau) * total)

    def control(self, x_t: torch.Tensor, t: torch.Tensor) -> UNetControl | None:
        """The features for one network call, or None when `cond_tau` switches them off."""
        if not self.features_active(t):
            return None
        batch = x_t.shape[0]
        feats = [_tile(f.to(device=x_t.device, dtype=x_t.dtype), batch, "T2I-Adapter feature") for f in self.features]
        return UNetControl(input_features=dict(zip(self.block_indices, feats, strict=True)))

    def apply_model(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """eps prediction of SD-1.x with the adapter features; see `Denoiser.apply_model`."""
        return self.model.apply_model(x_t, t, cond, control=self.control(x_t, t))
