"""Image feature networks for FID / KID: the FID Inception-v3 from a local weights file, and a tiny stand-in.

Both take what torch-fidelity's Inception takes: a (N, 3, H, W) **uint8** batch in [0, 255], any H and W. The
pixel range is handled exactly once, inside the network (Inception: TF-1.x bilinear resize to 299, then
(x - 128) / 128; tiny: resize to 64, then x / 127.5 - 1). The original fed ImageNet-normalised tensors into
torchmetrics with ``normalize=True``, which multiplied them by 255 and cast to uint8 (spec §6.6): out-of-range,
wrapped values.

* :class:`InceptionFeatures`: torch-fidelity's ``FeatureExtractorInceptionV3`` built from ``--inception-weights``
  (``feature_extractor_weights_path``), 64- or 2048-d pool features. Nothing is ever downloaded.
* :class:`TinyFeatures`: a seeded random 3-layer conv net (64-d) for the tiny mannequin world and for tests. Its
  figures are labelled "(tiny features)" everywhere and are not comparable with Inception FID/KID.

References:
    Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium" (FID), 2017.
    torch-fidelity 0.4 ``feature_extractor_inceptionv3.py``; pytorch-fid (mseitzer/pytorch-fid) FID weights.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_INCEPTION_WEIGHTS",
    "FEATURE_NETS",
    "INCEPTION_DIMS",
    "INCEPTION_WEIGHTS_NAME",
    "InceptionFeatures",
    "TinyFeatures",
    "check_uint8_batch",
    "load_feature_extractor",
]

INCEPTION_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
DEFAULT_INCEPTION_WEIGHTS = Path("humansd_data/checkpoints") / INCEPTION_WEIGHTS_NAME
INCEPTION_WEIGHTS_HELP = (
    f"FID/KID need the TF-2015 FID Inception-v3 weights as a local file, e.g. {INCEPTION_WEIGHTS_NAME} from "
    f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_WEIGHTS_NAME} (pytorch-fid) "
    "or the same network as weights-inception-2015-12-05-6726825d.pth from "
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth "
    f"(torch-fidelity). Put it at {DEFAULT_INCEPTION_WEIGHTS} or pass --inception-weights PATH. Nothing is "
    "downloaded automatically."
)
INCEPTION_DIMS = (64, 2048)
FEATURE_NETS = ("inception", "tiny")


def check_uint8_batch(images: torch.Tensor) -> None:
    """Raise unless ``images`` is a (N, 3, H, W) uint8 tensor."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"Feature networks take a (N, 3, H, W) uint8 batch in [0, 255]; got {got}.")


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    """Tensor-only load (``weights_only=True``): a file that needs arbitrary unpickling is refused."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path} is not a loadable tensor state dict ({err}). {INCEPTION_WEIGHTS_HELP}") from None
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a flat {{name: tensor}} state dict. {INCEPTION_WEIGHTS_HELP}")
    return obj


class InceptionFeatures(nn.Module):
    """FID Inception-v3 pool features from torch-fidelity, loaded from a local file.

    Args:
        extractor: a built ``torch_fidelity.FeatureExtractorInceptionV3`` returning one feature.
        dims: 64 (first max-pool, the original HumanSD config) or 2048 (final pool, standard FID).
    """

    def __init__(self, extractor: nn.Module, *, dims: int) -> None:
        super().__init__()
        self.extractor = extractor
        self.num_features = int(dims)
        self.label = "Inception-v3" if dims == 2048 else f"Inception-{dims}"

    @classmethod
    def from_weights(cls, path: str | Path, *, dims: int = 2048) -> InceptionFeatures:
        """Build from a weights file (pytorch-fid's or torch-fidelity's layout; both load strictly).

        Args:
            path: the ``.pth`` file.
            dims: feature size, 64 or 2048.

        Raises:
            FileNotFoundError: no such file (the message names the expected file and where to get it).
            ValueError: unsupported ``dims``, or the file is not a matching tensor state dict.
        """
        if dims not in INCEPTION_DIMS:
            raise ValueError(f"Inception feature size must be one of {INCEPTION_DIMS}; got {dims}.")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Inception weights not found: {path}. {INCEPTION_WEIGHTS_HELP}")
        _read_state_dict(path)  # refuse unsafe pickles before torch-fidelity's own torch.load(weights_only=False)
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        try:
            extractor = FeatureExtractorInceptionV3(
                "inception-v3-compat", [str(dims)], feature_extractor_weights_path=str(path)
            )
        except RuntimeError as err:  # load_state_dict key/shape mismatch
            raise ValueError(f"{path} does not match the FID Inception-v3: {err}. {INCEPTION_WEIGHTS_HELP}") from None
        logger.info("Loaded FID Inception-v3 (%d-d features) from %s.", dims, path)
        return cls(extractor, dims=dims)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 in [0, 255] -> (N, dims) float32 features."""
        check_uint8_batch(images)
        return self.extractor(images)[0].reshape(images.shape[0], -1)


class TinyFeatures(nn.Module):
    """Seeded random conv features for the tiny world and tests. NOT Inception: figures are labelled as such.

    64x64 input (antialiased bilinear resize), three stride-2 3x3 convs with ReLU (3 -> 16 -> 32 -> num_features),
    global average pooling. Kaiming-normal weights drawn from ``torch.Generator().manual_seed(seed)``, so the
    network is the same on every machine; it can also be saved and reloaded (``.safetensors``).

    Args:
        num_features: output feature size.
        seed: weight seed.
        input_size: side length images are resized to.
    """

    label = "tiny features"

    def __init__(self, *, num_features: int = 64, seed: int = 0, input_size: int = 64) -> None:
        super().__init__()
        self.num_features = int(num_features)
        self.seed = int(seed)
        self.input_size = int(input_size)
        self.convs = nn.ModuleList(
            [nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.Conv2d(16, 32, 3, stride=2, padding=1)]
            + [nn.Conv2d(32, self.num_features, 3, stride=2, padding=1)]
        )
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            for conv in self.convs:
                fan_in = conv.in_channels * 9
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.1)
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 in [0, 255] -> (N, num_features) float32 features."""
        check_uint8_batch(images)
        x = images.to(self.convs[0].weight.dtype) / 127.5 - 1.0  # the only range conversion: [0, 255] -> [-1, 1]
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True)
        for conv in self.convs:
            x = F.relu(conv(x))  # (N, C, s/2, s/2) per layer
        return x.mean(dim=(2, 3))  # (N, num_features)

    def save(self, path: str | Path) -> None:
        """Write weights and settings to a ``.safetensors`` file."""
        from safetensors.torch import save_file

        meta = {"kind": "TinyFeatures", "num_features": str(self.num_features), "seed": str(self.seed)}
        meta["input_size"] = str(self.input_size)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path), metadata=meta)

    @classmethod
    def from_file(cls, path: str | Path) -> TinyFeatures:
        """Load a network written by :meth:`save` (strict)."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Tiny feature weights not found: {path} (write them with TinyFeatures.save).")
        with safe_open(str(path), "pt") as handle:
            meta = handle.metadata() or {}
        if meta.get("kind") != "TinyFeatures":
            raise ValueError(f"{path} is not a TinyFeatures file (metadata kind={meta.get('kind')!r}).")
        net = cls(num_features=int(meta["num_features"]), seed=int(meta["seed"]), input_size=int(meta["input_size"]))
        net.load_state_dict(load_file(str(path)), strict=True)
        return net


def load_feature_extractor(
    kind: str,
    *,
    inception_weights: str | Path | None = None,
    dims: int = 2048,
    tiny_weights: str | Path | None = None,
    seed: int = 0,
) -> InceptionFeatures | TinyFeatures:
    """Build the feature network for FID / KID.

    Args:
        kind: ``"inception"`` or ``"tiny"``.
        inception_weights: weights file for Inception (default :data:`DEFAULT_INCEPTION_WEIGHTS`).
        dims: Inception feature size (64 or 2048).
        tiny_weights: optional saved :class:`TinyFeatures`; without it the seeded network is built.
        seed: seed of the tiny network when built.

    Returns:
        A module with ``num_features`` and ``label`` attributes taking uint8 batches.
    """
    if kind == "inception":
        return InceptionFeatures.from_weights(inception_weights or DEFAULT_INCEPTION_WEIGHTS, dims=dims)
    if kind == "tiny":
        return TinyFeatures.from_file(tiny_weights) if tiny_weights else TinyFeatures(seed=seed)
    raise ValueError(f"Unknown feature network {kind!r}; choose one of {list(FEATURE_NETS)}.")
