"""`PoseToImagePipeline`: prompt + pose -> images. The API the scripts, the demo and the metrics call.

References:
    Ju et al., "HumanSD", ICCV 2023; IDEA-Research/HumanSD (c5db29d), scripts/pose2img.py `paint_humansd`
    (conditioning order, negative prompt as the unconditional text, pose latent kept in both CFG branches).
    huggingface/diffusers pipelines (`check_inputs`, generator handling, structured outputs).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from ldm.conditioning import Conditioning
from ldm.inference.defaults import SamplingDefaults, sampling_defaults
from ldm.inference.fast_path import FastPathOptions, apply_fast_path, decode_latents
from ldm.inference.loading import load_model
from ldm.models.latent_diffusion import LatentDiffusion
from ldm.pose.image import to_rgb_uint8
from ldm.pose.keypoints import NUM_KEYPOINTS, Pose
from ldm.samplers import (
    ClassifierFreeGuidance,
    Denoiser,
    SamplingPlan,
    TimestepSpacing,
    get_sampler,
    make_plan,
    prepare_latents,
)

logger = logging.getLogger(__name__)

# The original demo's defaults (spec §5.1).
DEFAULT_NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, worst quality, "
    "low quality"
)
DEFAULT_ADDED_PROMPT = "detailed background, best quality, extremely detailed"

PoseInput = Pose | np.ndarray | Image.Image | None
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class PoseCondition:
    """A rendered pose condition.

    Args:
        display: (H, W, 3) uint8 pose map (shown to users, saved next to samples).
        values: (H, W, 3) float64 map the model consumes, in [0, 255] (equal to `display` for HumanSD; the
            un-truncated blended canvas for the OpenPose-style control models, as the original fed them).
    """

    display: np.ndarray
    values: np.ndarray


@dataclass
class PipelineOutput:
    """Result of one pipeline call.

    Args:
        images: the generated images.
        pose_map: the rendered skeleton the model was conditioned on (None for text-only models).
        parameters: every parameter of the call (for sidecar files).
    """

    images: list[Image.Image]
    pose_map: Image.Image | None
    parameters: dict[str, Any] = field(default_factory=dict)


class PoseToImagePipeline:
    """Generate images of people in a given pose (HumanSD), or from text only (SD-2.1).

    Args:
        model: a loaded `LatentDiffusion`.
        device: where to run (the model is moved there).
        precision: "fp32" (default), "bf16" or "fp16" autocast for the UNet and VAE on the device.
        default_size: (height, width) used when neither the call nor a pose image gives a size.
        skeleton_width: limb width of rendered pose maps (10 at 512 px, as the model was trained).
        sampling: steps and guidance scale of calls that give none (`from_config`: the config's `defaults:`;
            None: guidance 10 and 50 steps, the original's, or 20 steps below 512 px native size).
        channels_last: UNet weights in `torch.channels_last` memory format (see `ldm.inference.fast_path`).
        compile_unet: `torch.compile` the UNet (the first call compiles).
        compile_mode: `torch.compile` mode of `compile_unet` (None: the default mode; "reduce-overhead": CUDA
            graphs, the fastest on a GPU once warm; "max-autotune": longer compile, also CUDA graphs).
        prepack_weights: CPU: keep the UNet's convolution/linear weights packed for oneDNN/MKL (about as fast as
            `compile_unet` with freezing, no compiler; costs one extra copy of the UNet weights).
        winograd: CPU fp32: `prepack_weights` plus the UNet's 3x3 convolutions as Winograd F(4x4, 3x3) (faster
            still; the transformed filters take up to 4x those layers' weights; see `ldm.inference.winograd`).
        unet_dtype: "bf16" / "fp16" (with the same `precision`): keep the UNet weights in that dtype instead of
            re-casting the fp32 weights on every autocast call.
        share_cfg_input: classifier-free guidance passes the latent and pose latent once for both branches; the
            UNet's layers before the first cross-attention run at batch B instead of 2B (same result to rounding).
        vae_slicing: decode one image of the batch at a time (lower peak memory, same result).
        vae_tiling: decode overlapping latent tiles blended linearly (bounded memory for large images; close to,
            not bit-equal with, the plain decode when the latent spans several tiles).
    """

    def __init__(
        self,
        model: LatentDiffusion,
        *,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        default_size: tuple[int, int] = (512, 512),
        skeleton_width: int = 10,
        sampling: SamplingDefaults | None = None,
        channels_last: bool = False,
        compile_unet: bool = False,
        compile_mode: str | None = None,
        prepack_weights: bool = False,
        winograd: bool = False,
        unet_dtype: str | None = None,
        share_cfg_input: bool = False,
        vae_slicing: bool = False,
        vae_tiling: bool = False,
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"Unknown precision {precision!r}; choose one of {sorted(PRECISIONS)}.")
        if compile_mode is not None and not compile_unet:
            raise ValueError(f"compile_mode={compile_mode!r} needs compile_unet=True.")
        if unet_dtype is not None and unet_dtype != precision:
            raise ValueError(
                f"unet_dtype={unet_dtype!r} needs precision={unet_dtype!r} (autocast in the weights' dtype); "
                f"got precision={precision!r}."
            )
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.precision = precision
        self.default_size = default_size
        self.skeleton_width = skeleton_width
        if sampling is None:  # the same rule as a config without `defaults.steps` / `defaults.guidance_scale`
            sampling = sampling_defaults({"defaults": {"size": min(default_size)}})
        self.sampling = sampling
        self.fast_path = FastPathOptions(
            channels_last=channels_last,
            compile_unet=compile_unet,
            compile_kwargs={} if compile_mode is None else {"mode": compile_mode},
            prepack_weights=prepack_weights,
            winograd=winograd,
            unet_dtype=unet_dtype,
            share_cfg_input=share_cfg_input,
            vae_slicing=vae_slicing,
            vae_tiling=vae_tiling,
        )
        apply_fast_path(self.model, self.fast_path)

    def resolve_eta(self, eta: float | None, sampler: str = "ddim") -> float:
        """The DDIM eta a call uses: `eta` if given, else the model's default for DDIM and 0 for other samplers."""
        if eta is not None:
            return eta
        return self.sampling.eta if sampler == "ddim" else 0.0

    @classmethod
    def from_config(
        cls,
        config: str | Path | DictConfig,
        checkpoint: str | Path | None = None,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        allow_random: bool = False,
        trust_pickle: bool | None = None,
        **fast_path: Any,
    ) -> PoseToImagePipeline:
        """Build the model from a YAML config and load its checkpoint (see `ldm.inference.loading.load_model`).

        `fast_path` keywords (`channels_last`, `compile_unet`, `compile_mode`, `prepack_weights`, `winograd`,
        `unet_dtype`, `share_cfg_input`, `vae_slicing`, `vae_tiling`) go to `__init__`.
        """
        model, cfg = load_model(config, checkpoint, allow_random=allow_random, trust_pickle=trust_pickle)
        size = cfg.get("defaults", {}).get("size", 512)
        width = cfg.get("defaults", {}).get("skeleton_width", 10)
        return cls(
            model,
            device=device,
            precision=precision,
            default_size=(int(size), int(size)),
            skeleton_width=int(width),
            sampling=sampling_defaults(cfg),
            **fast_path,
        )

    # ------------------------------------------------------------------ inputs
    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision])

    def _resolve_size(self, pose: PoseInput, height: int | None, width: int | None) -> tuple[int, int]:
        if height is None or width is None:
            if isinstance(pose, Image.Image):
                h, w = pose.height, pose.width
            elif isinstance(pose, np.ndarray) and not _is_keypoint_array(pose):
                h, w = pose.shape[:2]
            elif isinstance(pose, Pose):
                h, w = pose.height, pose.width
            else:
                h, w = self.default_size
            height, width = height or h, width or w
        m = self.model.image_multiple
        if height % m or width % m or height <= 0 or width <= 0:
            raise ValueError(
                f"height and width must be positive multiples of {m} for this model; got {height}x{width}. "
                f"Resize the pose (e.g. short side 512, sides multiples of 64, as the original)."
            )
        if height * width > 4096 * 4096:
            raise ValueError(f"Requested size {height}x{width} is too large (at most 4096x4096 pixels).")
        return height, width

    def render_pose(self, pose: PoseInput, height: int, width: int, *, threshold: float = 0.05) -> np.ndarray:
        """The (height, width, 3) uint8 pose map for any accepted pose input (keypoints are rendered)."""
        from ldm.pose.convert import rescale_pose
        from ldm.pose.render import render_pose_map

        if pose is None:
            return np.zeros((height, width, 3), np.uint8)
        if isinstance(pose, np.ndarray) and _is_keypoint_array(pose):
            pose = Pose.from_array(pose, width=width, height=height)  # validates shape and finiteness
        if isinstance(pose, Pose):
            if (pose.width, pose.height) != (width, height):
                pose = rescale_pose(pose, width, height)
            return render_pose_map(pose, threshold=threshold, line_width=self.skeleton_width)
        if isinstance(pose, (Image.Image, np.ndarray)):
            img = to_rgb_uint8(pose)
            if img.shape[:2] != (height, width):
                img = np.asarray(Image.fromarray(img).resize((width, height), Image.Resampling.NEAREST))
            return img
        raise TypeError(
            "pose must be a Pose, a (persons, 17, 3) keypoint array, a rendered pose image (PIL or HxWx3 array) "
            f"or None; got {type(pose).__name__}."
        )

    def check_inputs(
        self,
        prompt: str | list[str],
        num_images: int,
        steps: int,
        guidance_scale: float,
        strength: float,
        init_image: Any,
    ) -> list[str]:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"prompt must be a string or a non-empty list of strings; got {prompt!r:.80}.")
        if not 1 <= num_images <= 64:
            raise ValueError(f"num_images must be in [1, 64]; got {num_images}.")
        if not 1 <= steps <= 1000:
            raise ValueError(f"num_inference_steps must be in [1, 1000]; got {steps}.")
        if not np.isfinite(guidance_scale) or guidance_scale < 0:
            raise ValueError(f"guidance_scale must be a finite number >= 0; got {guidance_scale}.")
        if not 0 < strength <= 1:
            raise ValueError(f"strength must be in (0, 1]; got {strength}.")
        if strength < 1 and init_image is None:
            logger.info("strength < 1 without init_image: starting from a black image, as the original CLI.")
        return prompts

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        pose: PoseInput = None,
        *,
        negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        eta: float | None = None,
        sampler: str = "ddim",
        timestep_spacing: str = "trailing",
        seed: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_images: int = 1,
        strength: float = 1.0,
        init_image: Image.Image | np.ndarray | None = None,
        pose_threshold: float = 0.05,
        callback: Callable[[dict[str, Any]], None] | None = None,
        progress: bool = False,
    ) -> PipelineOutput:
        """Generate `num_images` images per prompt.

        Args:
            prompt: text prompt (or list; each gets `num_images` images).
            pose: keypoints (persons, 17, 3) as (x, y, score) in output-pixel coordinates, a `Pose` (rescaled to
                the output size), a rendered pose image, or None (an empty pose: black map). Ignored by text-only
                models.
            negative_prompt: the unconditional text of classifier-free guidance (HumanSD was never trained on
                empty captions, spec §8).
            num_inference_steps: sampler steps S; None: the model's default (`self.sampling`: its config's
                `defaults.steps`, 50 for HumanSD).
            guidance_scale: CFG scale; 1 disables the unconditional branch. None: the model's default (its
                config's `defaults.guidance_scale`: 10 for HumanSD, 1 for the embedded tiny model).
            eta: DDIM noise (only for sampler "ddim"); None: the model's default (its config's `defaults.eta`: 0
                for HumanSD, as the original; 1 for the embedded tiny model).
            sampler: "ddim", "plms" or "dpmpp_2m".
            timestep_spacing: "trailing" (default) or "original" (bit-parity grid with the 49-of-50-steps quirk).
            seed: makes the call reproducible; None draws a random seed (reported in `parameters`).
            height, width: output size, multiples of `model.image_multiple` (64 at full size).
            num_images: images per prompt.
            strength: < 1 starts from the noised `init_image` (SDEdit); 1 starts from pure noise.
            init_image: image for strength < 1 (resized to the output size); None means black, as the original.
            pose_threshold: keypoint score threshold for drawing.
            callback: called after each sampler step with {"i", "t", "x", "x0_pred", "total"}.
            progress: show a progress bar.

        Returns:
            `PipelineOutput` with PIL images, the pose map and all parameters.
        """
        if num_inference_steps is None:
            num_inference_steps = self.sampling.steps
        if guidance_scale is None:
            guidance_scale = self.sampling.guidance_scale
        eta = self.resolve_eta(eta, sampler)
        prompts = self.check_inputs(prompt, num_images, num_inference_steps, guidance_scale, strength, init_image)
        sample_fn = get_sampler(sampler, eta=eta)
        try:
            spacing = TimestepSpacing(timestep_spacing)
        except ValueError:
            raise ValueError(
                f"Unknown timestep_spacing {timestep_spacing!r}; choose 'trailing' or 'original'."
            ) from None
        height, width = self._resolve_size(pose, height, width)
        seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else int(seed)
        generator = torch.Generator("cpu").manual_seed(seed)
        model, dev = self.model, self.device
        condition = self.render_condition(pose, height, width, threshold=pose_threshold) if self.uses_pose else None
        batch_prompts = [p for p in prompts for _ in range(num_images)]
        b = len(batch_prompts)
        with self._autocast():
            # RNG order as the original (spec §5.3): init image -> text -> pose latent -> negative text -> noise.
            x0 = None
            if strength < 1:
                init = self._init_tensor(init_image, height, width).expand(b, -1, -1, -1)
                x0 = model.encode_images(init, generator)
            crossattn = model.encode_text(batch_prompts)
            concat = self.pose_latents(condition, b, generator) if condition is not None else None
            cond = Conditioning(crossattn, concat)
            uncond = Conditioning(model.encode_text([negative_prompt]).expand(b, -1, -1), concat)
            guidance = ClassifierFreeGuidance(guidance_scale, uncond)
            plan = make_plan(model.alphas_cumprod, num_inference_steps, spacing=spacing, strength=strength)
            denoiser = self.make_denoiser(condition, plan)
            shape = (b, model.vae.embed_dim, height // model.downsample_factor, width // model.downsample_factor)
            noise = torch.randn(shape, generator=generator).to(dev)
            x = prepare_latents(plan, noise, x0)
            step_gen = torch.Generator(dev).manual_seed(seed + 1) if eta > 0 else None
            latents = sample_fn(
                denoiser,
                x,
                plan,
                cond=cond,
                guidance=guidance,
                generator=step_gen,
                callback=callback,
                progress=progress,
            )
            images = decode_latents(model, latents.to(torch.float32), self.fast_path)
        images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
        params = {
            "prompt": prompts if len(prompts) > 1 else prompts[0],
            "negative_prompt": negative_prompt,
            "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "eta": eta,
            "sampler": str(sampler),
            "timestep_spacing": spacing.value,
            "seed": seed,
            "height": height,
            "width": width,
            "num_images": num_images,
            "strength": strength,
            "pose_threshold": pose_threshold,
            "precision": self.precision,
            **self.extra_parameters(),
        }
        return PipelineOutput(
            images=[Image.fromarray(a.numpy()) for a in images],
            pose_map=Image.fromarray(condition.display) if condition is not None else None,
            parameters=params,
        )

    # ------------------------------------------------------------------ hooks (overridden by control pipelines)
    @property
    def uses_pose(self) -> bool:
        """Whether calls render a pose condition (HumanSD: the model concatenates the pose latent)."""
        return self.model.pose_conditioning

    def render_condition(self, pose: PoseInput, height: int, width: int, *, threshold: float) -> PoseCondition:
        """The pose condition of a call: HumanSD's skeleton map (display and values are the same image)."""
        pose_map = self.render_pose(pose, height, width, threshold=threshold)
        return PoseCondition(pose_map, pose_map.astype(np.float64))

    def pose_latents(self, condition: PoseCondition, batch: int, generator: torch.Generator) -> torch.Tensor | None:
        """Latents concatenated to the noisy latent: the VAE posterior sample of the pose map, per batch item."""
        pose_t = _to_model_range(condition.display, self.device).expand(batch, -1, -1, -1)
        return self.model.encode_images(pose_t, generator)

    def make_denoiser(self, condition: PoseCondition | None, plan: SamplingPlan) -> Denoiser:
        """The denoiser the sampler runs (the model itself; control pipelines wrap it)."""
        return self.model

    def extra_parameters(self) -> dict[str, Any]:
        """Pipeline-specific entries of `PipelineOutput.parameters`."""
        return {}

    def _init_tensor(self, init_image: Any, height: int, width: int) -> torch.Tensor:
        if init_image is None:
            arr = np.zeros((height, width, 3), np.uint8)
        else:
            arr = to_rgb_uint8(init_image)
            if arr.shape[:2] != (height, width):
                arr = np.asarray(Image.fromarray(arr).resize((width, height), Image.Resampling.LANCZOS))
        return _to_model_range(arr, self.device)


def _is_keypoint_array(arr: np.ndarray) -> bool:
    """(17, k) or (P, 17, k) arrays are keypoints (validated later); anything else is taken as an image."""
    return arr.ndim in (2, 3) and arr.shape[-2] == NUM_KEYPOINTS


def _to_model_range(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float in [-1, 1]."""
    return (torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 127.5 - 1.0).to(device)
