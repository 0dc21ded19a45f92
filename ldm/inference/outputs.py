"""Writing generation results: images, pose map, overlay, grid and a JSON sidecar with every parameter."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ldm.inference.pipeline import PipelineOutput
from ldm.pose.render import overlay_skeleton

FULL_HASH_LIMIT = 1 << 30  # files above 1 GiB get a sampled fingerprint (hashing 5 GB would dominate a run)
_CHUNK = 16 << 20


def weights_fingerprint(path: str | Path | list[str | Path] | None) -> str | None:
    """SHA-256 of a weights file ("sha256:<hex>"), or of its size + first and last 16 MiB for files over 1 GiB
    ("sha256-sampled:<hex>"); for several files, their fingerprints joined by "+". None for None."""
    if path is None:
        return None
    if isinstance(path, (list, tuple)):
        return "+".join(weights_fingerprint(p) for p in path)
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as f:
        if size <= FULL_HASH_LIMIT:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
            return f"sha256:{h.hexdigest()}"
        h.update(str(size).encode())
        h.update(f.read(_CHUNK))
        f.seek(size - _CHUNK)
        h.update(f.read(_CHUNK))
    return f"sha256-sampled:{h.hexdigest()}"


def atomic_save_image(image: Image.Image, path: Path) -> None:
    """Write an image via a temporary file + rename, so an interrupted run never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=path.suffix)
    os.close(fd)
    try:
        image.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def make_grid(panels: Sequence[np.ndarray], *, columns: int) -> Image.Image:
    """Tile equally sized (H, W, 3) uint8 panels, `columns` per row."""
    h, w = panels[0].shape[:2]
    rows = -(-len(panels) // columns)
    grid = np.zeros((rows * h, columns * w, 3), np.uint8)
    for i, panel in enumerate(panels):
        r, c = divmod(i, columns)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = panel
    return Image.fromarray(grid)


def save_generation(
    out: PipelineOutput, outdir: Path, stem: str, *, extra: dict[str, Any] | None = None, grid: bool = True
) -> list[Path]:
    """Write `<stem>_<k>.png` per image, `<stem>_pose.png`, `<stem>_overlay.png`, `<stem>_grid.png` and
    `<stem>.json` (all parameters plus `extra`, e.g. the checkpoint fingerprint). Returns the image paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, image in enumerate(out.images):
        path = outdir / f"{stem}_{k}.png"
        atomic_save_image(image, path)
        paths.append(path)
    panels = [np.asarray(im) for im in out.images]
    if out.pose_map is not None:
        pose = np.asarray(out.pose_map)
        atomic_save_image(out.pose_map, outdir / f"{stem}_pose.png")
        atomic_save_image(Image.fromarray(overlay_skeleton(panels[0], pose)), outdir / f"{stem}_overlay.png")
        panels = [pose, *panels]
    if grid:
        atomic_save_image(make_grid(panels, columns=len(panels)), outdir / f"{stem}_grid.png")
    sidecar = {**out.parameters, **(extra or {}), "images": [p.name for p in paths]}
    atomic_write_text(json.dumps(sidecar, indent=2, default=str), outdir / f"{stem}.json")
    return paths
