"""Pose baselines of HumanSD's comparison, rebuilt on this repository's SD code: ControlNet v1.1 OpenPose and
T2I-Adapter v1 OpenPose on Stable Diffusion 1.5, behind the `PoseToImagePipeline` API.

Modules: `clip_text` (SD-1.x CLIP text encoder), `controlnet`, `t2i_adapter` (the control models), `checkpoints`
(file kinds, prefixes, strict loading), `denoisers` (the `Denoiser` adapters), `pipelines`.

References:
    Ju et al., "HumanSD", ICCV 2023 (comparison table); IDEA-Research/HumanSD (c5db29d), scripts/gradio/pose2img.py.
"""

from comparison_models.controlnet import ControlNet, control_scales, to_unet_control
from comparison_models.denoisers import ControlNetDenoiser, T2IAdapterDenoiser
from comparison_models.pipelines import (
    COMPARISON_PIPELINES,
    ControlNetPipeline,
    PoseControlPipeline,
    T2IAdapterPipeline,
    comparison_slot,
)
from comparison_models.t2i_adapter import Adapter, adapter_block_indices

__all__ = [
    "COMPARISON_PIPELINES",
    "Adapter",
    "ControlNet",
    "ControlNetDenoiser",
    "ControlNetPipeline",
    "PoseControlPipeline",
    "T2IAdapterDenoiser",
    "T2IAdapterPipeline",
    "adapter_block_indices",
    "comparison_slot",
    "control_scales",
    "to_unet_control",
]
