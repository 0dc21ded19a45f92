r"""Latent cache: the frozen VAE's posterior moments of every training image and pose map, computed once.

HumanSD fine-tuning encodes the image and the rendered skeleton with the frozen VAE at every step. When the
augmentation is only a horizontal flip (the mannequin world; any dataset trained without photometric or geometric
jitter), both orientations can be encoded once and the training step samples the latents from the stored moments
(`LatentDiffusion.latents_from_moments`), drawing exactly what `encode_images` would draw. The step then costs the
UNet (plus, for the heatmap-guided loss, its decode and pose-net pass) instead of two VAE encodes of full images.

A cache is one `.safetensors` file:
    image_moments (N, F, 2z, h, w) float16   VAE moments (mean then logvar) of each image, F = 1 or 2 orientations
    pose_moments  (N, F, 2z, h, w) float16   the same for the rendered pose maps
    keypoints     (N, F, P, 17, 3) float32   (x, y, score) in pixels of the (flipped) image
and metadata: the captions and paths (JSON), the dataset options used, and the VAE's fingerprint, which
`LatentCacheDataset` can check against the model it trains.

    python scripts/cache_latents.py --model-config configs/tiny/mannequin-humansd.yaml \
        --ckpt humansd_data/checkpoints/tiny/base-tiny.safetensors \
        --map-file humansd_data/datasets/Mannequin/mapping_file_training.json --image-size 128 --skeleton-width 3 \
        --out humansd_data/datasets/Mannequin/latents-train.safetensors
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ldm.config import check_params
from ldm.data.humansd import HumanPoseDataModule, HumanPoseDataset, collate_batch
from ldm.data.keys import BatchKey
from ldm.models.autoencoder import AutoencoderKL

logger = logging.getLogger(__name__)

FORMAT = "humansd-latent-cache/1"


def vae_fingerprint(vae: AutoencoderKL, prefixes: tuple[str, ...] = ("encoder.", "quant_conv.")) -> str:
    """A short hash of the VAE's weights whose names start with `prefixes` (default: the encoder's; a cache made
    with another encoder is useless). ``prefixes=("",)`` hashes the whole VAE."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        if name.startswith(prefixes):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def build_latent_cache(
    vae: AutoencoderKL,
    dataset_options: Mapping[str, Any],
    out: str | Path,
    *,
    flips: bool = True,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> Path:
    """Encode every item of a `HumanPoseDataset` (and its mirror image if `flips`) and write the cache file.

    Args:
        vae: the frozen autoencoder of the model that will train on the cache.
        dataset_options: `HumanPoseDataset` keyword arguments (`map_file`, `image_size`, `skeleton_width`,
            `max_person_num`, `swap_flipped_joints`, ...). Augmentation options are replaced: both passes use the
            deterministic resize + centre crop, the second one of the mirror image (`mirror=True`).
        out: the `.safetensors` file to write (its folder is created).
        flips: also store the horizontally flipped orientation (what `hflip_p` would draw during training).
        batch_size: images per VAE call.
        device: where the VAE runs.
        num_workers: DataLoader workers reading the images.

    Returns:
        The path written.
    """
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"The cache must be a .safetensors file; got {out}.")
    check_params(HumanPoseDataset, dataset_options, name="build_latent_cache dataset_options (HumanPoseDataset)")
    augment_keys = ("augment", "hflip_p", "vflip_p", "rotate_p", "color_p", "brightness_contrast_p", "seed")
    base = {k: v for k, v in dataset_options.items() if k not in augment_keys}
    base.pop("mirror", None)
    passes = [{**base, "augment": False}]
    if flips:
        passes.append({**base, "augment": False, "mirror": True})
    vae = vae.eval().to(device)
    image_parts, pose_parts, keypoint_parts = [], [], []
    captions: list[str] = []
    paths: list[str] = []
    for orientation, options in enumerate(passes):
        dataset = HumanPoseDataset(**options)
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_batch)
        images, poses, keypoints = [], [], []
        for batch in tqdm(loader, desc=f"latent cache, orientation {orientation + 1}/{len(passes)}", leave=False):
            images.append(vae.encode_moments(batch[BatchKey.IMAGE].to(device)).to("cpu", torch.float16))
            poses.append(vae.encode_moments(batch[BatchKey.POSE_MAP].to(device)).to("cpu", torch.float16))
            keypoints.append(batch[BatchKey.KEYPOINTS].float())
            if orientation == 0:
                captions += list(batch[BatchKey.CAPTION])
                paths += list(batch[BatchKey.PATH])
        image_parts.append(torch.cat(images))
        pose_parts.append(torch.cat(poses))
        keypoint_parts.append(torch.cat(keypoints))
        logger.info("Encoded %d items (orientation %d of %d).", len(dataset), orientation + 1, len(passes))
    tensors = {
        "image_moments": torch.stack(image_parts, dim=1).contiguous(),
        "pose_moments": torch.stack(pose_parts, dim=1).contiguous(),
        "keypoints": torch.stack(keypoint_parts, dim=1).contiguous(),
    }
    metadata = {
        "format": FORMAT,
        "captions": json.dumps(captions),
        "paths": json.dumps(paths),
        "dataset_options": json.dumps({k: str(v) for k, v in base.items()}),
        "flips": str(flips),
        "vae_fingerprint": vae_fingerprint(vae),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=metadata)
    size_mb = out.stat().st_size / 1e6
    logger.info("Wrote %s (%d items x %d orientations, %.1f MB).", out, len(captions), len(passes), size_mb)
    return out


class LatentCacheDataset(Dataset):
    """Items of a latent cache: `BatchKey.IMAGE_MOMENTS`, `POSE_MOMENTS` (2z, h, w) float32, `CAPTION`, `KEYPOINTS`
    (P, 17, 3) and `PATH`, with the stored mirror image drawn with probability `hflip_p`.

    The whole cache is held in memory (the mannequin world's 9,000 items x 2 orientations are ~150 MB). Several
    caches of one VAE and one set of dataset options (e.g. two generated worlds) can be read as one dataset.

    Args:
        path: the cache file written by `build_latent_cache`, or a list of them (items in that order).
        hflip_p: probability of serving the flipped orientation (needs caches built with flips unless 0).
        seed: seed of the flip draws; DataLoader workers are reseeded by `seed_worker`.
        max_items: use only the first `max_items` items (of all files together).
        expect_vae: a fingerprint (`vae_fingerprint`) the caches must have been built with, or None to skip.

    Raises:
        FileNotFoundError: no cache at a path.
        ValueError: not a latent cache, no flipped orientation for `hflip_p > 0`, another VAE's cache, or caches
            that differ in VAE, dataset options or shapes.
    """

    def __init__(
        self,
        *,
        path: str | Path | Sequence[str | Path],
        hflip_p: float = 0.5,
        seed: int | None = 0,
        max_items: int | None = None,
        expect_vae: str | None = None,
    ) -> None:
        if not 0.0 <= hflip_p <= 1.0:
            raise ValueError(f"hflip_p must be in [0, 1]; got {hflip_p}.")
        files = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
        if not files:
            raise ValueError("path is an empty list; give at least one latent cache file.")
        parts = [_read_cache(file, hflip_p=hflip_p, expect_vae=expect_vae) for file in files]
        first_meta = parts[0][1]
        for file, (tensors, meta) in zip(files[1:], parts[1:], strict=True):
            _check_compatible(files[0], first_meta, parts[0][0], file, meta, tensors)
        # hflip_p == 0 reads orientation 0 only, so caches with and without flips can be joined then.
        orientations = min(tensors["image_moments"].shape[1] for tensors, _ in parts)
        limit = slice(None, max_items)

        def joined(key: str) -> torch.Tensor:
            return torch.cat([tensors[key][:, :orientations] for tensors, _ in parts])[limit]

        self.image_moments = joined("image_moments")
        self.pose_moments = joined("pose_moments")
        self.keypoints = joined("keypoints")
        self.captions: list[str] = [c for _, meta in parts for c in json.loads(meta["captions"])][limit]
        self.paths: list[str] = [p for _, meta in parts for p in json.loads(meta["paths"])][limit]
        self.hflip_p = float(hflip_p)
        self.metadata = {k: v for k, v in first_meta.items() if k not in ("captions", "paths")}
        self.metadata["files"] = json.dumps([str(file) for file in files])
        self.reseed(seed)

    def reseed(self, seed: int | None) -> None:
        """Restart the flip generator from `seed` (None: from OS entropy); called by `seed_worker`."""
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        o = int(self.hflip_p > 0 and self._rng.random() < self.hflip_p)
        return {
            BatchKey.IMAGE_MOMENTS: self.image_moments[index, o].float(),
            BatchKey.POSE_MOMENTS: self.pose_moments[index, o].float(),
            BatchKey.CAPTION: self.captions[index],
            BatchKey.KEYPOINTS: self.keypoints[index, o],
            BatchKey.PATH: self.paths[index],
        }


def _read_cache(path: Path, *, hflip_p: float, expect_vae: str | None) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and metadata of one cache file, checked on its own."""
    if not path.is_file():
        raise FileNotFoundError(
            f"No latent cache at {path}; build it with scripts/cache_latents.py (see ldm/data/latent_cache.py)."
        )
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a latent cache (format {meta.get('format')!r}, want {FORMAT!r}).")
        tensors = {k: f.get_tensor(k) for k in ("image_moments", "pose_moments", "keypoints")}
    if expect_vae is not None and meta.get("vae_fingerprint") != expect_vae:
        raise ValueError(
            f"{path} was encoded by another VAE (fingerprint {meta.get('vae_fingerprint')}, the model's is "
            f"{expect_vae}); rebuild it with scripts/cache_latents.py."
        )
    if hflip_p > 0 and tensors["image_moments"].shape[1] < 2:
        raise ValueError(f"{path} holds no flipped orientation; build it with flips or set hflip_p=0.")
    return tensors, meta


def _check_compatible(
    first: Path, first_meta: dict, first_tensors: dict[str, torch.Tensor], path: Path, meta: dict, tensors: dict
) -> None:
    """Caches read as one dataset must come from one VAE encoder and one set of dataset options (but the map file)."""
    if meta.get("vae_fingerprint") != first_meta.get("vae_fingerprint"):
        raise ValueError(
            f"{path} and {first} were encoded by different VAEs (fingerprints {meta.get('vae_fingerprint')} and "
            f"{first_meta.get('vae_fingerprint')}); rebuild one with the other's model."
        )

    def options(m: dict) -> dict:
        return {k: v for k, v in json.loads(m.get("dataset_options", "{}")).items() if k != "map_file"}

    if options(meta) != options(first_meta):
        raise ValueError(
            f"{path} and {first} were built with different dataset options ({options(meta)} vs {options(first_meta)})."
        )
    for key in ("image_moments", "pose_moments", "keypoints"):
        if tensors[key].shape[2:] != first_tensors[key].shape[2:]:
            raise ValueError(
                f"{path} and {first} hold {key} of different shapes per item "
                f"({tuple(tensors[key].shape[2:])} vs {tuple(first_tensors[key].shape[2:])})."
            )


class LatentCacheDataModule(HumanPoseDataModule):
    """`HumanPoseDataModule` over latent caches: `train` / `validation` are `LatentCacheDataset` arguments."""

    dataset_class = LatentCacheDataset
