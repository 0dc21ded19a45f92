"""Writing a mannequin world to disk in the Human-Art layout HumanSD trains on (spec 3.2, 3.8).

Layout under `out_dir`::

    images/<real_human|2D_virtual_human>/<scenario>/<12-digit id>.jpg   JPEG quality 95, RGB
    pose/<same>/<id>.npz                    `ldm.pose.io.write_humansd_npz`: keypoints in pixels, person score 1
    mapping_file_training.json              {id: {img_path, pose_path, prompt}}, paths relative to out_dir
    mapping_file_validation.json
    annotations/validation_coco.json        COCO person keypoints of the validation split (v=2 visible,
                                            v=1 occluded, v=0 not labelled; bbox and area of the visible figure)
    mannequin_world.json                    generator settings and counts

Image `i` depends only on (seed, i): its scene comes from `numpy.random.default_rng([seed, i])`, and it is in the
validation split iff floor((i + 1) f) > floor(i f) for the validation fraction f, so a larger `n` keeps every
earlier image, label and split. The same arguments give byte-identical files (the pose writer pins .npz member
timestamps).

References:
    HumanSD, https://github.com/IDEA-Research/HumanSD (c5db29d), README (mapping files, Human-Art layout).
    COCO keypoint format, https://cocodataset.org/#format-data.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from ldm.data.mannequin.draw import rasterize_ids
from ldm.data.mannequin.scene import Scene, check_size, sample_scene
from ldm.data.mannequin.styles import render_scene
from ldm.pose.io import write_humansd_npz
from ldm.pose.keypoints import COCO_KEYPOINT_NAMES, HUMANSD_LIMBS

logger = logging.getLogger(__name__)

TRAIN_MAPPING = "mapping_file_training.json"
VALIDATION_MAPPING = "mapping_file_validation.json"
VALIDATION_COCO = "annotations/validation_coco.json"
INFO_FILE = "mannequin_world.json"
JPEG_QUALITY = 95
MAX_VAL_FRACTION = 0.5
_OWNED = ("images", "pose", "annotations", TRAIN_MAPPING, VALIDATION_MAPPING, INFO_FILE)
_FORMAT_VERSION = 1


@dataclass
class WorldSummary:
    """What `write_mannequin_world` wrote.

    Args:
        out_dir: the dataset root.
        n_train: images in the training mapping.
        n_val: images in the validation mapping.
        scenarios: images per `<category>/<scenario>` folder.
        seconds: wall time of the generation.
    """

    out_dir: Path
    n_train: int
    n_val: int
    scenarios: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        """Generation throughput."""
        return (self.n_train + self.n_val) / max(self.seconds, 1e-9)


@dataclass(frozen=True)
class _Record:
    """What the main process needs of one written image (small and picklable)."""

    index: int
    img_path: str
    pose_path: str
    prompt: str
    validation: bool
    annotations: tuple[dict, ...]


def check_world_options(n: int, size: int, val_fraction: float) -> None:
    """Validate the writer's options; raises ValueError with the received value and the allowed range.

    Args:
        n: number of images, >= 1.
        size: image side, a multiple of 8 in [32, 1024].
        val_fraction: share of validation images in [0, 0.5].
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive number of images; got {n!r}.")
    check_size(size)
    if not isinstance(val_fraction, int | float) or not 0.0 <= val_fraction <= MAX_VAL_FRACTION:
        raise ValueError(f"val_fraction must be between 0 and {MAX_VAL_FRACTION}; got {val_fraction!r}.")


def is_validation(index: int, val_fraction: float) -> bool:
    """Whether image `index` is in the validation split (exactly floor(n f) of the first n images are)."""
    return math.floor((index + 1) * val_fraction) > math.floor(index * val_fraction)


def image_id(index: int) -> str:
    """The 12-digit file stem of image `index` (Human-Art ids have 12 digits)."""
    return f"{index:012d}"


def make_scene(index: int, *, seed: int = 0, size: int = 128, mark_left: bool = True) -> Scene:
    """The scene of image `index` of the world with this seed (`mark_left`: see `sample_scene`)."""
    return sample_scene(np.random.default_rng([seed, index]), size=size, mark_left=mark_left)


def _short(value: float) -> float:
    """Shortest decimal that reads back to the same float32 (as the pose JSON writers do)."""
    return float(str(np.float32(value)))


def _coco_annotations(scene: Scene) -> tuple[dict, ...]:
    """COCO keypoint annotations (without ids) of a scene; bbox and area cover each figure's visible pixels."""
    parts = scene.parts
    ids = rasterize_ids(parts, scene.size)
    owner = np.array([-1] + [p.figure for p in parts], dtype=np.int16)[ids]
    annotations = []
    for index, figure in enumerate(scene.figures):
        ys, xs = np.nonzero(owner == index)
        flat = []
        for (x, y, score), occluded in zip(figure.keypoints, figure.occluded):
            flat += [_short(x), _short(y), 1 if occluded else 2] if score > 0 else [0, 0, 0]
        box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        annotations.append(
            {
                "category_id": 1,
                "keypoints": flat,
                "num_keypoints": int((figure.keypoints[:, 2] > 0).sum()),
                "bbox": box if len(xs) else [0, 0, 0, 0],
                "area": int(len(xs)),
                "iscrowd": 0,
            }
        )
    return tuple(annotations)


def _write_item(index: int, *, out_dir: Path, seed: int, size: int, val_fraction: float, mark_left: bool) -> _Record:
    scene = make_scene(index, seed=seed, size=size, mark_left=mark_left)
    style = scene.spec.style
    rel = f"{style.category}/{style.scenario}/{image_id(index)}"
    img_path, pose_path = f"images/{rel}.jpg", f"pose/{rel}.npz"
    image = render_scene(scene)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode image {index} as JPEG.")
    (out_dir / img_path).parent.mkdir(parents=True, exist_ok=True)
    (out_dir / img_path).write_bytes(jpeg.tobytes())
    write_humansd_npz(scene.pose, out_dir / pose_path)
    validation = is_validation(index, val_fraction)
    annotations = _coco_annotations(scene) if validation else ()
    return _Record(index, img_path, pose_path, scene.caption, validation, annotations)


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one image per process; OpenCV's own threads would only compete


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _coco_file(records: list[_Record], size: int) -> dict:
    images, annotations = [], []
    for record in records:
        images.append({"id": record.index, "file_name": record.img_path, "width": size, "height": size})
        for ann in record.annotations:
            annotations.append({"id": len(annotations) + 1, "image_id": record.index, **ann})
    category = {
        "id": 1,
        "name": "person",
        "supercategory": "person",
        "keypoints": list(COCO_KEYPOINT_NAMES),
        "skeleton": [[a + 1, b + 1] for a, b in HUMANSD_LIMBS],
    }
    return {"images": images, "annotations": annotations, "categories": [category]}


def _prepare_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory.")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out_dir} is not empty; pass overwrite=True (--overwrite) or choose another folder."
            )
        for name in _OWNED:  # only what this writer creates; anything else in the folder is left alone
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def write_mannequin_world(
    out_dir: str | Path,
    n: int,
    *,
    size: int = 128,
    seed: int = 0,
    val_fraction: float = 0.1,
    workers: int = 1,
    overwrite: bool = False,
    mark_left: bool = True,
) -> WorldSummary:
    """Generate `n` captioned, pose-labelled mannequin images in the Human-Art layout (see the module docstring).

    Args:
        out_dir: dataset root; created if missing, must be empty unless `overwrite`.
        n: number of images.
        size: image side in pixels (multiple of 8 in [32, 1024]).
        seed: world seed; image i uses `default_rng([seed, i])`.
        val_fraction: share of validation images in [0, 0.5] (every 1/f-th image).
        workers: processes rendering in parallel (the files do not depend on it).
        overwrite: replace what a previous run wrote in `out_dir` (other files are kept).
        mark_left: draw the figures' left arms and legs in a marking tone (the shipped world); False: unmarked
            figures (same scenes and labels otherwise).

    Returns:
        The counts and timing.
    """
    check_world_options(n, size, val_fraction)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer; got {workers!r}.")
    out_dir = Path(out_dir)
    _prepare_dir(out_dir, overwrite)
    start = time.perf_counter()
    job = partial(
        _write_item,
        out_dir=out_dir,
        seed=int(seed),
        size=int(size),
        val_fraction=float(val_fraction),
        mark_left=bool(mark_left),
    )
    if workers == 1:
        records = [job(index) for index in range(n)]
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
            records = list(pool.map(job, range(n), chunksize=max(1, min(64, n // (4 * workers)))))
    train = {image_id(r.index): _entry(r) for r in records if not r.validation}
    val = {image_id(r.index): _entry(r) for r in records if r.validation}
    _write_json(out_dir / TRAIN_MAPPING, train)
    _write_json(out_dir / VALIDATION_MAPPING, val)
    _write_json(out_dir / VALIDATION_COCO, _coco_file([r for r in records if r.validation], size))
    scenarios = dict(sorted(Counter(r.img_path.split("/", 1)[1].rsplit("/", 1)[0] for r in records).items()))
    info = {"generator": "ldm.data.mannequin", "format_version": _FORMAT_VERSION, "n": n, "size": size}
    info |= {"seed": seed, "val_fraction": val_fraction, "mark_left": bool(mark_left)}
    info |= {"n_train": len(train), "n_val": len(val)}
    _write_json(out_dir / INFO_FILE, info | {"scenarios": scenarios})
    if val_fraction > 0 and not val:
        logger.warning("No validation image: n=%d is too small for val_fraction=%g.", n, val_fraction)
    summary = WorldSummary(out_dir, len(train), len(val), scenarios, time.perf_counter() - start)
    logger.info("Wrote %d images to %s (%.0f images/s).", n, out_dir, summary.images_per_second)
    return summary


def _entry(record: _Record) -> dict[str, str]:
    return {"img_path": record.img_path, "pose_path": record.pose_path, "prompt": record.prompt}
