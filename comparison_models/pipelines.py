"""`ControlNetPipeline` and `T2IAdapterPipeline`: the pose baselines of HumanSD's comparison, behind the same API.

Both take the same call as `ldm.inference.pipeline.PoseToImagePipeline` (prompt, COCO-17 pose, sampler options)
and return its `PipelineOutput`, so scripts, the demo and the metrics can run all three models on the same inputs.
The pose is rendered as the OpenPose-18 skeleton HumanSD drew for the baselines (`draw_openpose_skeleton`, spec
§5.5); the control image is that float canvas / 255, in [0, 1], at image resolution. Sampling reuses our samplers
and classifier-free guidance with the control in both branches (`comparison_models.denoisers`).

Differences from the original scripts (all deliberate): our samplers and timestep spacing (`timestep_spacing`,
"trailing" by default, "original" for the original DDIM grid); one seeded generator instead of the global RNG;
the T2I-Adapter runs the `num_images` samples as one batch (the original looped with batch 1: same math, another
noise order); images are rounded to uint8 like `PoseToImagePipeline` (the originals truncated).

References:
    IDEA-Research/HumanSD (c5db29d), scripts/gradio/pose2img.py (comparison: skeleton, prompts, defaults).
    lllyasviel/ControlNet-v1-1-nightly (e2b4415), gradio_openpose.py; TencentARC/T2I-Adapter (16bba67),
        test_adapter.py.
"""

from __future__ import annotations

import abc
import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import nn

from comparison_models.checkpoints import load_adapter, load_base_weights, load_controlnet
from comparison_models.controlnet import ControlNet, control_scales
from comparison_models.denoisers import ControlNetDenoiser, T2IAdapterDenoiser, check_base_model
from comparison_models.t2i_adapter import Adapter
from ldm.checkpoint import missing_file_message
from ldm.config import instantiate, load_config
from ldm.inference.loading import build_model
from ldm.inference.pipeline import PoseCondition, PoseInput, PoseToImagePipeline
from ldm.models.latent_diffusion import LatentDiffusion
from ldm.pose.image import to_rgb_uint8
from ldm.pose.keypoints import NUM_KEYPOINTS, Pose
from ldm.samplers import Denoiser, SamplingPlan

if TYPE_CHECKING:
    from ldm.demo.slots import ModelSlot, SlotOptions

logger = logging.getLogger(__name__)

CONTROLNET_CONFIG = Path("configs/comparison/controlnet-v11-openpose-sd15.yaml")
T2I_ADAPTER_CONFIG = Path("configs/comparison/t2iadapter-openpose-sd14.yaml")


def load_comparison_config(config: str | Path | DictConfig, overrides: tuple[str, ...] = ()) -> DictConfig:
    """Read a comparison config (`base`, `control_model`, `control`, checkpoints, `defaults`); the `base` SD-1.x
    config it names is loaded into `base_config`.

    Raises:
        ValueError: a required section is missing.
    """
    cfg = config if isinstance(config, DictConfig) else load_config(config, overrides)
    missing = [k for k in ("base", "control_model") if k not in cfg]
    if missing:
        raise ValueError(f"Comparison config lacks {missing}; see configs/comparison/*.yaml for the layout.")
    if "base_config" not in cfg:
        cfg = cfg.copy()  # never modify the caller's config
        cfg.base_config = load_config(cfg.base)
    return cfg


def build_comparison_models(cfg: DictConfig) -> tuple[LatentDiffusion, nn.Module]:
    """(SD-1.x model, control model) with random weights (CPU, float32), as a comparison config describes."""
    cfg = load_comparison_config(cfg)
    return build_model(cfg.base_config), instantiate(cfg.control_model)


class PoseControlPipeline(PoseToImagePipeline, abc.ABC):
    """Common part of the ControlNet and T2I-Adapter pipelines: an SD-1.x model, a control model and the
    OpenPose-18 control image. Subclasses say how the control reaches the UNet (`controlled_denoiser`).

    It is a `PoseToImagePipeline` (same call, same output, same input checks, sizing and precision handling);
    `__call__` differs only in the conditioning: no pose latent, a control image instead.

    Args:
        model: the SD-1.x `LatentDiffusion` (text-to-image).
        control_model: the ControlNet or adapter.
        device: where to run (both models are moved there).
        precision: "fp32", "bf16" or "fp16" autocast.
        default_size: (height, width) when neither the call nor a pose image gives a size.
    """

    control_name: ClassVar[str] = ""
    default_config: ClassVar[Path] = Path()

    def __init__(
        self,
        model: LatentDiffusion,
        control_model: nn.Module,
        *,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        default_size: tuple[int, int] = (512, 512),
    ):
        check_base_model(model, getattr(control_model, "context_dim", None), self.control_name)
        super().__init__(model, device=device, precision=precision, default_size=default_size)
        self.control_model = control_model.eval().to(self.device)

    # ------------------------------------------------------------------ construction
    @classmethod
    @abc.abstractmethod
    def from_models(
        cls, model: LatentDiffusion, control_model: nn.Module, cfg: DictConfig, **kwargs: Any
    ) -> PoseControlPipeline:
        """Build the pipeline from loaded models and the comparison config's `control` options and defaults."""

    @classmethod
    def from_files(
        cls,
        base_ckpt: str | Path,
        control_ckpt: str | Path,
        *,
        config: str | Path | DictConfig | None = None,
        device: str = "cpu",
        precision: str = "fp32",
        trust_pickle: bool | None = None,
    ) -> PoseControlPipeline:
        """Build both models from the comparison config and load their files strictly.

        Args:
            base_ckpt: the SD-1.x base (`v1-5-pruned.ckpt`; `model_ema.*` is ignored).
            control_ckpt: the ControlNet / T2I-Adapter file.
            config: comparison config; None means the class's full-size default.
            device: torch device.
            precision: "fp32", "bf16" or "fp16".
            trust_pickle: allow pickles that need more than weights_only (see `ldm.checkpoint.read_checkpoint`).

        Raises:
            FileNotFoundError: a file is missing (the message says where to get it).
            ValueError: a file of the wrong kind (e.g. an adapter for ControlNet, an SD-2.x base) or any key or
                shape difference.
        """
        for path in (Path(control_ckpt), Path(base_ckpt)):
            if not path.is_file():
                raise FileNotFoundError(missing_file_message(path))
        cfg = load_comparison_config(config if config is not None else cls.default_config)
        model, control_model = build_comparison_models(cfg)
        cls.load_control_weights(control_model, control_ckpt, trust_pickle=trust_pickle)  # small file first
        load_base_weights(model, base_ckpt, trust_pickle=trust_pickle)
        return cls.from_models(model.eval(), control_model.eval(), cfg, device=device, precision=precision)

    @classmethod
    def from_config(
        cls,
        config: str | Path,
        checkpoint: tuple[str | Path, str | Path] | None = None,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        allow_random: bool = False,
        trust_pickle: bool | None = None,
    ) -> PoseControlPipeline:
        """Build from a comparison config.

        Args:
            config: comparison config path.
            checkpoint: (base, control) files; None uses the config's `base_checkpoint` / `control_checkpoint`.
            device, precision, trust_pickle: see `from_files`.
            allow_random: when the config names no files, use random weights (with a warning) instead of raising.
        """
        cfg = load_comparison_config(config)
        files = checkpoint if checkpoint is not None else (cfg.get("base_checkpoint"), cfg.get("control_checkpoint"))
        if None not in files:
            return cls.from_files(*files, config=cfg, device=device, precision=precision, trust_pickle=trust_pickle)
        if not allow_random:
            raise ValueError(f"{config} names no base_checkpoint/control_checkpoint; pass checkpoint=(base, control).")
        logger.warning("No checkpoints: the %s pipeline has random, untrained weights.", cls.control_name)
        model, control_model = build_comparison_models(cfg)
        return cls.from_models(model.eval(), control_model.eval(), cfg, device=device, precision=precision)

    @staticmethod
    @abc.abstractmethod
    def load_control_weights(control_model: nn.Module, path: str | Path, *, trust_pickle: bool | None) -> None:
        """Load the control file into the control model (strict, with the kind checks)."""

    # ------------------------------------------------------------------ control image
    def render_condition(self, pose: PoseInput, height: int, width: int, *, threshold: float = 0.05) -> PoseCondition:
        """The OpenPose-18 control image of a pose input.

        Keypoints (a `Pose`, rescaled to the output size, or a (P, 17, 3) array in output pixels) are drawn with
        `draw_openpose_skeleton` after dropping persons whose score is <= threshold (as HumanSD did); a rendered
        skeleton image is used as is (resized, nearest); None gives a black image.

        Returns:
            `PoseCondition`: the (height, width, 3) uint8 pose map for display and the float64 canvas in [0, 255]
            (the control input is the canvas / 255, as the original).
        """
        from ldm.pose.convert import rescale_pose
        from ldm.pose.render import draw_openpose_skeleton

        if pose is None:
            canvas = np.zeros((height, width, 3), np.float64)
            return PoseCondition(canvas.astype(np.uint8), canvas)
        if isinstance(pose, np.ndarray) and pose.ndim in (2, 3) and pose.shape[-2] == NUM_KEYPOINTS:
            pose = Pose.from_array(pose, width=width, height=height)
        if isinstance(pose, Pose):
            if (pose.width, pose.height) != (width, height):
                pose = rescale_pose(pose, width, height)
            kept = [p.keypoints for p in pose.persons if np.float32(p.score) > threshold]
            kpts = np.stack(kept) if kept else np.zeros((0, NUM_KEYPOINTS, 3), np.float32)
            canvas = draw_openpose_skeleton(kpts, height, width, threshold=threshold, as_float=True)
            return PoseCondition(canvas.astype(np.uint8), canvas)
        if isinstance(pose, (Image.Image, np.ndarray)):
            img = to_rgb_uint8(pose)
            if img.shape[:2] != (height, width):
                img = np.asarray(Image.fromarray(img).resize((width, height), Image.Resampling.NEAREST))
            return PoseCondition(img, img.astype(np.float64))
        raise TypeError(
            "pose must be a Pose, a (persons, 17, 3) keypoint array, a rendered pose image (PIL or HxWx3 array) "
            f"or None; got {type(pose).__name__}."
        )

    def render_pose(self, pose: PoseInput, height: int, width: int, *, threshold: float = 0.05) -> np.ndarray:
        """The (height, width, 3) uint8 OpenPose-18 pose map these models are conditioned on."""
        return self.render_condition(pose, height, width, threshold=threshold).display

    @property
    def uses_pose(self) -> bool:
        """Control models always render the pose (it reaches the UNet through the control model)."""
        return True

    def pose_latents(self, condition: PoseCondition, batch: int, generator: torch.Generator) -> None:
        """No pose latent is concatenated: the SD-1.x UNet has 4 input channels."""
        return None

    def make_denoiser(self, condition: PoseCondition | None, plan: SamplingPlan) -> Denoiser:
        """The controlled denoiser of one call (hint = canvas / 255, (1, 3, H, W) on the device)."""
        values = condition.values if condition is not None else None
        hint = torch.from_numpy(values / 255.0).permute(2, 0, 1)[None].float().to(self.device)
        return self.controlled_denoiser(hint, plan)

    @abc.abstractmethod
    def controlled_denoiser(self, hint: torch.Tensor, plan: SamplingPlan) -> Denoiser:
        """The controlled denoiser for one call; `hint`: (1, 3, H, W) control image in [0, 1] on the device."""

    def extra_parameters(self) -> dict[str, Any]:
        """The model name and the control options reported in `PipelineOutput.parameters`."""
        return {"model": self.control_name, **self.control_parameters()}

    def control_parameters(self) -> dict[str, Any]:
        """Control options reported in `PipelineOutput.parameters`."""
        return {}


class ControlNetPipeline(PoseControlPipeline):
    """Stable Diffusion 1.5 + ControlNet v1.1 OpenPose (HumanSD's "ControlNet" baseline).

    Args:
        model: the SD-1.x `LatentDiffusion`.
        controlnet: the ControlNet.
        device, precision, default_size: see `PoseControlPipeline`.
        control_strength: every ControlNet output is scaled by it (`control_scales`; 1.0 as HumanSD).
    """

    control_name: ClassVar[str] = "ControlNet"
    default_config: ClassVar[Path] = CONTROLNET_CONFIG

    def __init__(
        self,
        model: LatentDiffusion,
        controlnet: ControlNet,
        *,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        default_size: tuple[int, int] = (512, 512),
        control_strength: float = 1.0,
    ):
        if not isinstance(controlnet, ControlNet):
            raise TypeError(f"ControlNetPipeline needs a ControlNet; got {type(controlnet).__name__}.")
        super().__init__(model, controlnet, device=device, precision=precision, default_size=default_size)
        self.control_strength = float(control_strength)

    @classmethod
    def from_models(
        cls, model: LatentDiffusion, control_model: nn.Module, cfg: DictConfig, **kwargs: Any
    ) -> PoseControlPipeline:
        """See `PoseControlPipeline.from_models` (`control.strength`, `defaults.size`)."""
        size = int(cfg.get("defaults", {}).get("size", 512))
        strength = float(cfg.get("control", {}).get("strength", 1.0))
        return cls(model, control_model, default_size=(size, size), control_strength=strength, **kwargs)

    @staticmethod
    def load_control_weights(control_model: nn.Module, path: str | Path, *, trust_pickle: bool | None) -> None:
        """`comparison_models.checkpoints.load_controlnet`."""
        load_controlnet(control_model, path, trust_pickle=trust_pickle)

    def controlled_denoiser(self, hint: torch.Tensor, plan: SamplingPlan) -> ControlNetDenoiser:
        """`ControlNetDenoiser` with `[control_strength] * 13` scales (the plan is not needed)."""
        scales = control_scales(self.control_strength, num_outputs=self.control_model.num_outputs)
        return ControlNetDenoiser(self.model, self.control_model, hint, scales)

    def control_parameters(self) -> dict[str, Any]:
        """The control strength."""
        return {"control_strength": self.control_strength}


class T2IAdapterPipeline(PoseControlPipeline):
    """Stable Diffusion 1.5 + T2I-Adapter v1 OpenPose (HumanSD's "T2I-Adapter" baseline).

    Args:
        model: the SD-1.x `LatentDiffusion`.
        adapter: the adapter.
        device, precision, default_size: see `PoseControlPipeline`.
        cond_weight: feature multiplier (1.0).
        cond_tau: fraction of the steps, from the first, that get the features (1.0 = all; see
            `T2IAdapterDenoiser`).
    """

    control_name: ClassVar[str] = "T2I-Adapter"
    default_config: ClassVar[Path] = T2I_ADAPTER_CONFIG

    def __init__(
        self,
        model: LatentDiffusion,
        adapter: Adapter,
        *,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        default_size: tuple[int, int] = (512, 512),
        cond_weight: float = 1.0,
        cond_tau: float = 1.0,
    ):
        if not isinstance(adapter, Adapter):
            raise TypeError(f"T2IAdapterPipeline needs an Adapter; got {type(adapter).__name__}.")
        if not 0.0 <= cond_tau <= 1.0:
            raise ValueError(f"cond_tau must be in [0, 1]; got {cond_tau}.")
        super().__init__(model, adapter, device=device, precision=precision, default_size=default_size)
        self.cond_weight = float(cond_weight)
        self.cond_tau = float(cond_tau)

    @classmethod
    def from_models(
        cls, model: LatentDiffusion, control_model: nn.Module, cfg: DictConfig, **kwargs: Any
    ) -> PoseControlPipeline:
        """See `PoseControlPipeline.from_models` (`control.strength`, `defaults.size`)."""
        size = int(cfg.get("defaults", {}).get("size", 512))
        control = cfg.get("control", {})
        return cls(
            model,
            control_model,
            default_size=(size, size),
            cond_weight=float(control.get("cond_weight", 1.0)),
            cond_tau=float(control.get("cond_tau", 1.0)),
            **kwargs,
        )

    @staticmethod
    def load_control_weights(control_model: nn.Module, path: str | Path, *, trust_pickle: bool | None) -> None:
        """`comparison_models.checkpoints.load_adapter`."""
        load_adapter(control_model, path, trust_pickle=trust_pickle)

    def controlled_denoiser(self, hint: torch.Tensor, plan: SamplingPlan) -> T2IAdapterDenoiser:
        """`T2IAdapterDenoiser` (features computed once, here; the plan drives `cond_tau`)."""
        return T2IAdapterDenoiser(
            self.model, self.control_model, hint, cond_weight=self.cond_weight, cond_tau=self.cond_tau, plan=plan
        )

    def control_parameters(self) -> dict[str, Any]:
        """The feature weight and cond_tau."""
        return {"cond_weight": self.cond_weight, "cond_tau": self.cond_tau}


# Comparison pipelines by the names the demo and the scripts use.
COMPARISON_PIPELINES: dict[str, type[PoseControlPipeline]] = {
    ControlNetPipeline.control_name: ControlNetPipeline,
    T2IAdapterPipeline.control_name: T2IAdapterPipeline,
}


def comparison_slot(name: str, options: SlotOptions, *, config: str | Path | None = None) -> ModelSlot:
    """A demo slot (`ldm.demo.slots`) for a comparison model: its default config and checkpoints, loaded on the
    first generation; an unavailable slot saying which file is missing and where to get it otherwise.

    Args:
        name: a key of `COMPARISON_PIPELINES` ("ControlNet", "T2I-Adapter").
        options: the demo's slot options (device and precision are used).
        config: comparison config; None means the model's full-size default.
    """
    from ldm.demo.slots import pipeline_slot, unavailable_slot

    if name not in COMPARISON_PIPELINES:
        raise ValueError(f"Unknown comparison model {name!r}; choose one of {sorted(COMPARISON_PIPELINES)}.")
    if importlib.util.find_spec("transformers") is None:
        return unavailable_slot(name, "needs the `transformers` package (SD-1.5's CLIP text encoder).")
    cls = COMPARISON_PIPELINES[name]
    cfg = load_comparison_config(config if config is not None else cls.default_config)
    if cfg.get("base_checkpoint") is None or cfg.get("control_checkpoint") is None:
        return unavailable_slot(name, "its config names no base_checkpoint/control_checkpoint.")
    base, control = Path(cfg.base_checkpoint), Path(cfg.control_checkpoint)
    for path in (control, base):
        if not path.is_file():
            return unavailable_slot(name, missing_file_message(path))

    def load() -> PoseControlPipeline:
        return cls.from_files(base, control, config=cfg, device=options.device, precision=options.precision)

    return pipeline_slot(load, name=name, note=f"Stable Diffusion 1.5 + {name}: {base.name} + {control.name}")
