"""Pose detection for HumanSD: the ``PoseDetector`` protocol and the native HigherHRNet ``PoseEstimator``.

``PoseEstimator`` serves two callers:

* ``detect(image) -> list[Person]``: MMPose 0.29's bottom-up inference for ``higherhrnet_w48_coco_512x512_udp.py``
  (ImageNet normalisation, UDP resize to a 512 short side, flip test, associative-embedding decoding; see
  :mod:`ldm.pose.bottom_up`), used by the demo's raw-image mode and the pose metrics.
* ``heatmaps(images)``: the raw path of HumanSD's heatmap-guided loss (reference spec §2.1 steps 4-7):
  un-normalised [0, 1] images, no flip, no resizing, the two stages averaged at 1/2 resolution.

``build_detector`` picks an implementation by name (``higherhrnet``, ``mediapipe``, ``mmpose``).

References:
    HumanSD (IDEA-Research/HumanSD, c5db29d): ldm/models/diffusion/ddpm.py (``p_losses``), scripts/gradio/pose2img.py.
    MMPose v0.29.0 ``AssociativeEmbedding.forward_test`` and ``inference_bottom_up_pose_model`` (behaviour only).
    Checkpoint layout: shared/spec/checkpoint-layouts/README.md, section "higherhrnet-w48-humanart.json".
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from ldm.pose.bottom_up import (
    BottomUpConfig,
    DecodedPoses,
    aggregate_outputs,
    aggregate_stages,
    decode_poses,
)
from ldm.pose.higherhrnet import HIGHERHRNET_PRESETS, HigherHRNet, HigherHRNetConfig, StageConfig
from ldm.pose.image import ImageLike, to_rgb_uint8
from ldm.pose.keypoints import COCO_FLIP_INDEX, NUM_KEYPOINTS, Person
from ldm.pose.resize import ResizeTransform, compute_resize, resize_for_network

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CHECKPOINT",
    "DETECTOR_KINDS",
    "POSE_ESTIMATOR_PRESETS",
    "PoseDetector",
    "PoseEstimator",
    "PoseEstimatorConfig",
    "build_detector",
    "check_pose_state_dict",
    "load_pose_config",
    "load_pose_state_dict",
]

DEFAULT_CHECKPOINT = Path("humansd_data/checkpoints/higherhrnet_w48_humanart_512x512_udp.pth")
_CHECKPOINT_HELP = (
    "Download higherhrnet_w48_humanart_512x512_udp.pth from the Google Drive folder linked under 'Model and "
    "Checkpoints' in the HumanSD README (https://github.com/IDEA-Research/HumanSD) and put it under "
    "humansd_data/checkpoints/."
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DETECTOR_KINDS = ("higherhrnet", "mediapipe", "mmpose")


@runtime_checkable
class PoseDetector(Protocol):
    """Anything that finds COCO-17 poses in an image."""

    def detect(self, image: ImageLike) -> list[Person]:
        """Detect persons.

        Args:
            image: path, PIL image or (H, W[, C]) array (see :func:`ldm.pose.image.to_rgb_uint8`).

        Returns:
            Persons in the image's pixel coordinates, highest score first.
        """
        ...


# ---------------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class PoseEstimatorConfig:
    """Network architecture plus decoder settings.

    Args:
        net: HigherHRNet architecture.
        test: bottom-up test settings (thresholds, flip test, UDP, input size).
    """

    net: HigherHRNetConfig = field(default_factory=HigherHRNetConfig)
    test: BottomUpConfig = field(default_factory=BottomUpConfig)


POSE_ESTIMATOR_PRESETS: dict[str, PoseEstimatorConfig] = {
    name: PoseEstimatorConfig(net=net) for name, net in HIGHERHRNET_PRESETS.items()
}


def _from_mapping(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys with the list of valid ones."""
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"Unknown key(s) {unknown} in {where}; valid keys are {valid}.")
    return cls(**values)


def _net_config_from_yaml(node: Any, where: str) -> HigherHRNetConfig:
    if isinstance(node, str):
        if node not in HIGHERHRNET_PRESETS:
            raise ValueError(f"Unknown net preset {node!r} in {where}; choose one of {sorted(HIGHERHRNET_PRESETS)}.")
        return HIGHERHRNET_PRESETS[node]
    if not isinstance(node, Mapping):
        raise ValueError(f"'net' in {where} must be a preset name or a mapping of HigherHRNetConfig fields.")
    values = dict(node)
    for stage in ("stage2", "stage3", "stage4"):
        if stage in values:
            stage_values = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(values[stage]).items()}
            values[stage] = _from_mapping(StageConfig, stage_values, f"{where} net.{stage}")
    return _from_mapping(HigherHRNetConfig, values, f"{where} net")


def load_pose_config(config: str | Path | PoseEstimatorConfig | HigherHRNetConfig) -> PoseEstimatorConfig:
    """Resolve a preset name, a YAML file (``configs/pose/*.yaml``) or a config object.

    The YAML holds ``net`` (a preset name from :data:`HIGHERHRNET_PRESETS` or a mapping of
    :class:`HigherHRNetConfig` fields) and ``test`` (fields of :class:`BottomUpConfig`; omitted ones keep the
    W48-UDP defaults).

    Args:
        config: ``"w48"``, ``"tiny"``, a ``.yaml`` path, a :class:`PoseEstimatorConfig` or a bare
            :class:`HigherHRNetConfig` (default test settings).

    Returns:
        The resolved :class:`PoseEstimatorConfig`.
    """
    if isinstance(config, PoseEstimatorConfig):
        return config
    if isinstance(config, HigherHRNetConfig):
        return PoseEstimatorConfig(net=config)
    if isinstance(config, str) and config in POSE_ESTIMATOR_PRESETS:
        return POSE_ESTIMATOR_PRESETS[config]
    path = Path(config)
    if path.suffix not in (".yaml", ".yml"):
        raise ValueError(
            f"Pose config must be one of the presets {sorted(POSE_ESTIMATOR_PRESETS)}, a .yaml file, or a "
            f"PoseEstimatorConfig; got {config!r}."
        )
    if not path.is_file():
        raise FileNotFoundError(f"Pose config file not found: {path} (see configs/pose/ for the shipped ones).")
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must contain a mapping with keys 'net' and 'test'.")
    unknown = sorted(set(raw) - {"net", "test"})
    if unknown:
        raise ValueError(f"Unknown top-level key(s) {unknown} in {path}; valid keys are ['net', 'test'].")
    net = _net_config_from_yaml(raw.get("net", "w48"), str(path))
    test = _from_mapping(BottomUpConfig, raw.get("test") or {}, f"{path} test")
    return PoseEstimatorConfig(net=net, test=test)


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoint loading


def _numpy_safe_globals() -> list[Any]:
    """The numpy reconstructors mmcv ``meta`` entries need (scalars/arrays), also under numpy-1 module names."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    return [
        multiarray.scalar,
        multiarray._reconstruct,
        (multiarray.scalar, "numpy.core.multiarray.scalar"),
        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        *(getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")),
    ]


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; on a numpy-global refusal retry with a numpy-only allowlist."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "numpy" not in str(err):
            raise ValueError(
                f"{path} could not be loaded with torch.load(weights_only=True): {err}. Only plain tensor "
                "checkpoints (plus numpy metadata) are accepted; arbitrary pickles are never executed."
            ) from err
    logger.info("%s stores numpy objects in its metadata; loading with a numpy-only allowlist.", path)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds objects beyond tensors and numpy scalars/arrays, which are not loaded for safety: "
            f"{err}. Re-save it as {{'state_dict': model.state_dict()}} or as .safetensors."
        ) from err


def _strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state_dict.items()}
    if not any(k.startswith("backbone.") for k in out) and any(k.startswith("mmpose_model.backbone.") for k in out):
        # A HumanSD heatmap-loss training checkpoint embeds the pose net as `mmpose_model.*`.
        logger.info("Using the mmpose_model.* sub-state-dict (HumanSD training checkpoint).")
        out = {k[len("mmpose_model.") :]: v for k, v in out.items() if k.startswith("mmpose_model.")}
    return out


def load_pose_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a HigherHRNet state dict from an mmcv ``.pth`` (``ckpt["state_dict"]`` or flat) or ``.safetensors``.

    Args:
        path: checkpoint file.

    Returns:
        Tensors by key with any ``module.`` prefix removed (and ``mmpose_model.`` for HumanSD training files).

    Raises:
        FileNotFoundError: the file does not exist (the message says where to get the released one).
        ValueError: the file holds no tensor state dict or needs unsafe unpickling.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HigherHRNet checkpoint not found: {path}. {_CHECKPOINT_HELP}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(path))
    else:
        obj = _torch_load(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{path} does not contain a state dict (got {type(obj).__name__}); {_CHECKPOINT_HELP}")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"{path} is not a flat tensor state dict: entries {not_tensors[:5]} are not tensors. Expected "
            "{'state_dict': {...}} (mmcv) or a flat {key: tensor} mapping."
        )
    return _strip_prefixes(obj)


def _describe_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> str:
    keys = list(state_dict)
    if any(k.startswith(("model.diffusion_model.", "first_stage_model.")) for k in keys):
        return "a Stable Diffusion / HumanSD latent-diffusion checkpoint"
    if any(k.startswith("control_model.") for k in keys):
        return "a ControlNet checkpoint"
    if "keypoint_head.final_layer.weight" in state_dict:
        return "a top-down heatmap-head (TopdownHeatmapSimpleHead) checkpoint, not a bottom-up HigherHRNet one"
    head = state_dict.get("keypoint_head.final_layers.0.weight")
    if head is not None and head.ndim == 4:
        out_ch, in_ch = head.shape[:2]
        return f"an associative-embedding checkpoint with backbone width {in_ch} and {out_ch // 2} joints"
    if not any(k.startswith("backbone.") for k in keys):
        return "not an MMPose pose-network checkpoint (no backbone.* keys)"
    return "a different MMPose pose network (head keys differ)"


def check_pose_state_dict(
    state_dict: dict[str, torch.Tensor], net: HigherHRNet, source: str
) -> dict[str, torch.Tensor]:
    """Strict key/shape check; returns the state dict completed with the optional BN ``num_batches_tracked``."""
    expected = net.state_dict()
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = [k for k in expected if k not in state_dict and k not in optional]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        head0, head1 = expected["keypoint_head.final_layers.0.weight"], expected["keypoint_head.final_layers.1.weight"]
        raise ValueError(
            f"{source} does not match HigherHRNet: this looks like "
            f"{_describe_checkpoint(state_dict)}; expected keypoint_head.final_layers.0.weight "
            f"{tuple(head0.shape)} and keypoint_head.final_layers.1.weight {tuple(head1.shape)} "
            f"(AEHigherResolutionHead). Missing {len(missing)}: {missing[:5]}; unexpected {len(unexpected)}: "
            f"{unexpected[:5]}; shape mismatches {len(mismatched)}: {mismatched[:5]}. Use "
            f"higherhrnet_w48_humanart_512x512_udp.pth with config 'w48', or pass the config the file was "
            f"trained with."
        )
    completed = dict(state_dict)
    for key in optional - set(state_dict):
        completed[key] = expected[key]  # older/pruned files omit these counters; their value is unused in eval
    return completed


# ---------------------------------------------------------------------------------------------------------------------
# The estimator


class PoseEstimator(nn.Module):
    """Frozen HigherHRNet with MMPose-0.29-compatible bottom-up inference.

    The network is frozen (``requires_grad_(False)``) and permanently in eval mode: :meth:`train` ignores its
    argument. HumanSD registered the pose net as a child of the diffusion LightningModule, so ``model.train()``
    switched its BatchNorms to batch statistics of 4 difference images and let the running statistics drift
    during fine-tuning (reference spec §2.1, "Side effects"); a loss network must stay fixed.

    Args:
        net: the network (weights already loaded).
        test_config: decoder settings; defaults to the W48-UDP test config.
    """

    def __init__(self, net: HigherHRNet, *, test_config: BottomUpConfig | None = None) -> None:
        super().__init__()
        self.net = net
        self.test_config = test_config or BottomUpConfig()
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.net.requires_grad_(False)
        self.train(False)

    @classmethod
    def from_config(cls, config: str | Path | PoseEstimatorConfig | HigherHRNetConfig = "w48") -> PoseEstimator:
        """Build with random (MMPose-style) initial weights: for tests and benchmarks only.

        Args:
            config: preset name, YAML path or config object (see :func:`load_pose_config`).
        """
        cfg = load_pose_config(config)
        return cls(HigherHRNet(cfg.net), test_config=cfg.test)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, config: str | Path | PoseEstimatorConfig | HigherHRNetConfig = "w48"
    ) -> PoseEstimator:
        """Build the network and load an mmcv ``.pth`` or ``.safetensors`` checkpoint strictly.

        Args:
            path: checkpoint file, e.g. ``humansd_data/checkpoints/higherhrnet_w48_humanart_512x512_udp.pth``.
            config: preset name, YAML path (``configs/pose/higherhrnet_w48_udp.yaml``) or config object.

        Returns:
            A frozen estimator on CPU in float32 (move it with ``.to(device)``).

        Raises:
            FileNotFoundError: missing checkpoint (the message says where to download it).
            ValueError: keys or shapes do not match the configured network.
        """
        cfg = load_pose_config(config)
        state_dict = load_pose_state_dict(path)
        net = HigherHRNet(cfg.net)
        net.load_state_dict(check_pose_state_dict(state_dict, net, str(path)), strict=True)
        logger.info("Loaded HigherHRNet weights from %s (%d tensors).", path, len(state_dict))
        return cls(net, test_config=cfg.test)

    def train(self, mode: bool = True) -> PoseEstimator:
        """Keep eval mode whatever ``mode`` is (frozen BatchNorm statistics; see the class docstring)."""
        return super().train(False)

    def _check_images(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"Expected images as a (B, 3, H, W) tensor; got {shape}.")
        if images.shape[-2] % 32 or images.shape[-1] % 32:
            raise ValueError(
                f"Image height and width must be multiples of 32 for HigherHRNet; got {tuple(images.shape[-2:])}. "
                "HumanSD trains at 512x512."
            )

    @torch.no_grad()
    def heatmaps(self, images: torch.Tensor) -> torch.Tensor:
        """Raw stage-averaged heatmaps for HumanSD's heatmap-guided loss (spec §2.1 steps 4-7).

        No normalisation, no flip test, no resizing: ``backbone`` + ``keypoint_head`` on the images as given, then
        the 1/4 heatmaps are resized (bilinear, ``align_corners=True``) to 1/2 and averaged with the 1/2 ones.
        Runs without autograd, as in the reference (the loss weight is a constant).

        Args:
            images: (B, 3, H, W) in [0, 1] (the clamped decoded noise difference), H and W multiples of 32.

        Returns:
            (B, K, H/2, W/2) heatmaps, unbounded real values (about [0, 1] for a trained net).
        """
        self._check_images(images)
        quarter, half = self.net(images.to(self.pixel_mean.device, self.pixel_mean.dtype))
        return aggregate_stages(quarter, half, num_joints=self.net.config.num_joints, align_corners=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Alias of :meth:`heatmaps` (the module's use inside the training loss)."""
        return self.heatmaps(images)

    @torch.no_grad()
    def predict_maps(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, ResizeTransform]:
        """Resize, normalise and run the network (with flip test if configured) on one RGB image.

        Args:
            image: (H, W, 3) uint8 RGB.

        Returns:
            heatmaps (1, K, h, w), tags (1, K, h, w, L) at half the network-input size, and the resize transform.
        """
        cfg = self.test_config
        height, width = image.shape[:2]
        transform = compute_resize(
            height, width, input_size=cfg.input_size, size_divisor=cfg.size_divisor, use_udp=cfg.use_udp
        )
        resized = resize_for_network(image, transform)  # (h_in, w_in, 3) uint8, zero padded
        x = torch.from_numpy(resized).to(self.pixel_mean.device).permute(2, 0, 1)[None]
        x = (x.to(self.pixel_mean.dtype) / 255.0 - self.pixel_mean) / self.pixel_std  # (1, 3, h_in, w_in)
        if cfg.flip_test:
            quarter, half = self.net(torch.cat([x, x.flip(3)]))  # one batch of 2: image, mirrored image
            outputs, flipped = (quarter[:1], half[:1]), (quarter[1:], half[1:])
        else:
            outputs, flipped = self.net(x), None
        heatmaps, tags = aggregate_outputs(
            outputs,
            flipped,
            num_joints=self.net.config.num_joints,
            flip_index=COCO_FLIP_INDEX,
            align_corners=cfg.align_corners,
        )
        return heatmaps, tags, transform

    def detect(self, image: ImageLike) -> list[Person]:
        """Detect all persons in an image (MMPose 0.29 bottom-up test, W48-UDP settings by default).

        Args:
            image: path, PIL image or array (grayscale, RGB or RGBA; see :func:`ldm.pose.image.to_rgb_uint8`).

        Returns:
            Up to ``max_num_people`` persons sorted by score (mean joint score), keypoints in input-image pixels.
            Missing joints have score 0 and (x, y) = (0, 0); coordinates are clamped to the image.

        Raises:
            ValueError: the input is not an image.
        """
        if self.net.config.num_joints != NUM_KEYPOINTS:
            raise ValueError(f"detect() returns COCO-17 persons; this network has {self.net.config.num_joints} joints.")
        rgb = to_rgb_uint8(image)
        heatmaps, tags, transform = self.predict_maps(rgb)
        decoded = decode_poses(heatmaps[0], tags[0], self.test_config)
        return self._to_persons(decoded, transform, heatmaps.shape[-1], heatmaps.shape[-2], rgb.shape[1], rgb.shape[0])

    def _to_persons(
        self, decoded: DecodedPoses, transform: ResizeTransform, hm_width: int, hm_height: int, width: int, height: int
    ) -> list[Person]:
        """(9) Map to image pixels, sort by score, keep ``max_num_people``."""
        persons = []
        order = np.argsort(-decoded.scores, kind="stable")[: self.test_config.max_num_people]
        for idx in order:
            pose = decoded.poses[idx]
            xy = transform.heatmap_to_image(pose[:, :2], hm_width, hm_height)
            # Clamp: a DARK step on a degenerate heatmap can leave the image (MMPose does not clamp).
            xy = np.nan_to_num(xy, nan=0.0, posinf=0.0, neginf=0.0)
            xy = np.clip(xy, 0, [width - 1, height - 1])
            score = pose[:, 2:3]
            keypoints = np.concatenate([np.where(score > 0, xy, 0.0), score], axis=1)
            person = Person(keypoints, score=float(decoded.scores[idx]))
            person.bbox = person.bbox_from_keypoints()
            persons.append(person)
        return persons


# ---------------------------------------------------------------------------------------------------------------------
# Factory


def build_detector(kind: str, **kwargs: Any) -> PoseDetector:
    """Create a pose detector by name.

    Args:
        kind: ``"higherhrnet"`` (native; kwargs ``checkpoint`` (default :data:`DEFAULT_CHECKPOINT`) and
            ``config``), ``"mediapipe"`` (``ldm.pose.mediapipe_detector.MediaPipeDetector(**kwargs)``) or
            ``"mmpose"`` (MMPose 1.x, ``ldm.pose.mmpose_detector.MMPoseDetector(**kwargs)``).
        **kwargs: passed to the implementation.

    Returns:
        An object satisfying :class:`PoseDetector`.
    """
    if kind == "higherhrnet":
        checkpoint = kwargs.pop("checkpoint", DEFAULT_CHECKPOINT)
        return PoseEstimator.from_checkpoint(checkpoint, **kwargs)
    if kind == "mediapipe":
        from ldm.pose.mediapipe_detector import MediaPipeDetector

        return MediaPipeDetector(**kwargs)
    if kind == "mmpose":
        from ldm.pose.mmpose_detector import MMPoseDetector

        return MMPoseDetector(**kwargs)
    raise ValueError(f"Unknown pose detector kind {kind!r}; choose one of {list(DETECTOR_KINDS)}.")
