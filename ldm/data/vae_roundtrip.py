"""A dataset's images replaced by their VAE reconstructions (encode, decode), labels unchanged.

A latent diffusion model can draw no sharper than its decoder, so a pose network that only ever saw crisp images
scores decoded images below what they show. Training it on round trips as well (same poses, same prompts) makes the
network read decoder output; `evaluate_mannequin.py` scores the round trips as the ceiling for generated images.

The copy is written in the Human-Art layout (``images/...png``, ``pose/...npz``, ``mapping_file_<split>.json``), so
every loader reads it unchanged; images are PNG (a JPEG pass would add artefacts the decoder did not make).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from ldm.data.humansd import MappingRecord
from ldm.data.latent_cache import vae_fingerprint
from ldm.models.autoencoder import AutoencoderKL

__all__ = ["roundtrip_coco", "roundtrip_images", "write_roundtrip_dataset"]

INFO_FILE = "roundtrip.json"  # which VAE wrote the images

logger = logging.getLogger(__name__)


@torch.no_grad()
def roundtrip_images(vae: AutoencoderKL, images: np.ndarray, *, sample: bool = False, generator=None) -> np.ndarray:
    """Encode and decode a batch of images.

    Args:
        vae: the autoencoder (its device and dtype are used).
        images: (B, H, W, 3) uint8, H and W divisible by the VAE's downsampling factor.
        sample: draw from the posterior instead of taking its mode.
        generator: torch generator for `sample`.

    Returns:
        (B, H, W, 3) uint8 reconstructions.
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"roundtrip_images expects (B, H, W, 3) uint8 images; got {images.dtype} {images.shape}.")
    param = next(vae.parameters())
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(param.device, param.dtype)
    posterior = vae.encode(x.div(127.5).sub(1.0))
    z = posterior.sample(generator) if sample else posterior.mode()
    y = vae.decode(z).clamp(-1.0, 1.0)
    return y.add(1.0).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _batches(records: Sequence[MappingRecord], size: int) -> Iterator[Sequence[MappingRecord]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


def write_roundtrip_dataset(
    records: Sequence[MappingRecord],
    vae: AutoencoderKL,
    out_dir: str | Path,
    *,
    split: str = "training",
    batch_size: int = 32,
    overwrite: bool = False,
) -> Path:
    """Write the VAE round trips of `records` as a dataset in `out_dir` and return its mapping file.

    Images keep their relative path with a ``.png`` suffix; pose files are copied as they are; keys and prompts are
    kept; images of one size share a VAE call. Existing images are kept unless `overwrite`, so an interrupted run
    resumes where it stopped; ``roundtrip.json`` records a fingerprint of the VAE, and a folder written by another
    VAE is an error unless `overwrite`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    if not records:
        raise ValueError("write_roundtrip_dataset: no records to write.")
    out_dir = Path(out_dir)
    info = {"vae_fingerprint": vae_fingerprint(vae, prefixes=("",))}
    info_path = out_dir / INFO_FILE
    if info_path.is_file() and not overwrite:
        written = json.loads(info_path.read_text(encoding="utf-8")).get("vae_fingerprint")
        if written != info["vae_fingerprint"]:
            raise ValueError(
                f"{out_dir} holds round trips of another VAE (fingerprint {written}, this one "
                f"{info['vae_fingerprint']}); pass overwrite=True (--overwrite) to redo them."
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    info_path.write_text(json.dumps(info), encoding="utf-8")
    mapping = {}
    for batch in _batches(records, batch_size):
        targets = [out_dir / PurePosixPath(r.image).with_suffix(".png") for r in batch]
        todo = [(r, t) for r, t in zip(batch, targets, strict=True) if overwrite or not t.is_file()]
        by_shape: dict[tuple[int, ...], list[tuple[np.ndarray, Path]]] = {}
        for r, target in todo:
            image = np.asarray(Image.open(r.image_path).convert("RGB"))
            by_shape.setdefault(image.shape, []).append((image, target))
        for group in by_shape.values():
            decoded = roundtrip_images(vae, np.stack([image for image, _ in group]))
            for (_, target), image in zip(group, decoded, strict=True):
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(target)
        for r, target in zip(batch, targets, strict=True):
            pose_target = out_dir / r.pose
            if overwrite or not pose_target.is_file():
                pose_target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(r.pose_path, pose_target)
            mapping[r.key] = {
                "img_path": target.relative_to(out_dir).as_posix(),
                "pose_path": r.pose,
                "prompt": r.prompt,
            }
        logger.info("VAE round trips: %d / %d", len(mapping), len(records))
    map_file = out_dir / f"mapping_file_{split}.json"
    map_file.write_text(json.dumps(mapping, indent=1), encoding="utf-8")
    return map_file


def roundtrip_coco(annotations: str | Path, out_dir: str | Path) -> Path:
    """Copy a COCO keypoint file of the source dataset into `out_dir`/annotations/ with its images' ``file_name``
    pointing at the round trips (``.png``), so COCO-based tools (``scripts/eval_pose.py``) score the round trips."""
    annotations = Path(annotations)
    data = json.loads(annotations.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{annotations} is not a COCO file (no 'images' list).")
    for image in data["images"]:
        image["file_name"] = PurePosixPath(image["file_name"]).with_suffix(".png").as_posix()
    out = Path(out_dir) / "annotations" / annotations.name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data), encoding="utf-8")
    return out
