"""Human-Art / LAION-Human pose-image-text dataset and its Lightning data module (spec section 3).

An item is an image, the poses detected on it and a prompt, listed in a mapping JSON
`{key: {"img_path", "pose_path", "prompt"}}` whose paths are relative to a base folder. `__getitem__` follows the
original pipeline (spec 3.3): load RGB, collect the joints of the first `max_person_num` persons, augment image
and joints together with albumentations (spec 3.4, `ldm.data.augment`), keep the surviving joints with their
original score, render the pose map with the training rule (spec 3.5) and return `BatchKey` entries, as CHW
tensors instead of the original's HWC arrays.

Deliberate differences from the original (each is documented where it happens):

* A joint outside the original image is dropped; the original kept it at (0, 0), where it could survive the
  crop and be drawn in a corner (spec 3.7).
* `augment=False` gives a deterministic resize + centre crop; the original augmented validation data randomly.
* A missing or corrupt image or pose file skips to the next item and is counted, instead of crashing the epoch.
* `swap_flipped_joints=True` relabels left/right joints of mirrored images (off by default, as the original).
* Augmentation randomness comes from a seedable generator (`seed`, `seed_worker`), not from global state.

Kept quirks: the first `max_person_num` persons in file order (no sorting by score); the renderer's person test
`sum(keypoints) > 0` counts the (-1, -1, 0) placeholders (spec 3.7); prompts are used as-is.

References:
    HumanSD, https://github.com/IDEA-Research/HumanSD (c5db29d), ldm/data/humansd.py (`HumanSDPoseTrain`),
        main.py (`DataModuleFromConfig`); spec section 3 of shared/spec/humansd-reference.md.
    Human-Art (Ju et al., CVPR 2023), https://github.com/IDEA-Research/HumanArt (folder layout, scenarios).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset, get_worker_info

from ldm.config import check_params, to_container
from ldm.data.augment import SLOT_FIELD, build_transform, is_mirrored
from ldm.data.keys import BatchKey
from ldm.pose.image import to_rgb_uint8
from ldm.pose.io import load_pose
from ldm.pose.keypoints import COCO_FLIP_INDEX, NUM_KEYPOINTS
from ldm.pose.render import HUMANSD_LINE_WIDTH, SkeletonRule, draw_humansd_skeleton

logger = logging.getLogger(__name__)

PathLike = str | Path
MapFileSpec = PathLike | Mapping[str, PathLike]

MAPPING_FIELDS: tuple[str, ...] = ("img_path", "pose_path", "prompt")

# Human-Art folder names (`images/<category>/<scenario>/`), spec 3.9; the 20th scenario is not known.
HUMANART_SCENARIOS: dict[str, tuple[str, ...]] = {
    "real_human": ("acrobatics", "cosplay", "dance", "drama", "movie"),
    "3D_virtual_human": ("garage_kits", "relief", "sculpture"),
    "2D_virtual_human": (
        "cartoon",
        "digital_art",
        "ink_painting",
        "kids_drawing",
        "mural",
        "oil_painting",
        "shadow_play",
        "sketch",
        "stained_glass",
        "ukiyoe",
        "watercolor",
    ),
}

# After this many unreadable items in a row `__getitem__` gives up: the mapping or base path is probably wrong.
MAX_CONSECUTIVE_SKIPS = 50

_LOAD_ERRORS = (OSError, ValueError)  # FileNotFoundError is an OSError; the readers raise ValueError on bad content


@dataclass(frozen=True, slots=True)
class MappingRecord:
    """One mapping-file entry. Paths stay relative strings; `base` is one shared object per mapping file
    (cheap for millions of items)."""

    key: str
    base: Path
    image: str
    pose: str
    prompt: str

    @property
    def rel_image_path(self) -> str:
        return self.image

    @property
    def image_path(self) -> Path:
        return self.base / self.image

    @property
    def pose_path(self) -> Path:
        return self.base / self.pose


def _normalise_sources(
    map_file: MapFileSpec | Sequence[MapFileSpec], base_path: PathLike | None
) -> list[tuple[Path, Path]]:
    """[(mapping file, base folder)] from a path, a {"map_file", "base_path"} dict, or a list of either."""
    specs = [map_file] if isinstance(map_file, (str, Path, Mapping)) else list(map_file)
    if not specs:
        raise ValueError("map_file is an empty list; give at least one mapping JSON path.")
    sources = []
    for spec in specs:
        if isinstance(spec, Mapping):
            unknown = sorted(set(spec) - {"map_file", "base_path"})
            if "map_file" not in spec or unknown:
                raise ValueError(
                    f"A map_file entry given as a dict needs the key 'map_file' and optionally 'base_path'; got keys "
                    f"{sorted(spec)}. Example: {{'map_file': 'HumanArt/mapping_file_training.json', "
                    f"'base_path': 'HumanArt'}}."
                )
            path, base = Path(spec["map_file"]), spec.get("base_path", base_path)
        elif isinstance(spec, (str, Path)):
            path, base = Path(spec), base_path
        else:
            raise ValueError(f"map_file entries must be paths or dicts; got {type(spec).__name__} {spec!r}.")
        # Human-Art and LAION-Human keep the mapping file in the dataset root, which is the default base.
        base = path.parent if base is None else Path(base)
        if not path.is_file():
            raise FileNotFoundError(f"Mapping file not found: {path}")
        if not base.is_dir():
            raise FileNotFoundError(f"Dataset base path not found (or not a folder): {base} (for mapping {path})")
        sources.append((path, base))
    return sources


def read_mapping(path: Path, base: Path) -> list[MappingRecord]:
    """Validate one mapping JSON and return its records in JSON order."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"Mapping file {path} is not valid UTF-8 JSON ({err}).") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"Mapping file {path} must hold a JSON object {{key: {{'img_path', 'pose_path', 'prompt'}}}}; "
            f"got a JSON {type(data).__name__}."
        )
    if not data:
        raise ValueError(f"Mapping file {path} is empty; it must list at least one item.")
    records = []
    for key, entry in data.items():
        missing = [f for f in MAPPING_FIELDS if not isinstance(entry, dict) or f not in entry]
        if missing:
            raise ValueError(
                f"Mapping file {path}: entry {key!r} lacks {missing}; every entry needs string fields "
                f"{list(MAPPING_FIELDS)}."
            )
        bad = [f for f in MAPPING_FIELDS if not isinstance(entry[f], str)]
        if bad:
            raise ValueError(f"Mapping file {path}: entry {key!r} fields {bad} must be strings.")
        records.append(MappingRecord(str(key), base, entry["img_path"], entry["pose_path"], entry["prompt"]))
    return records


def read_mappings(
    map_file: MapFileSpec | Sequence[MapFileSpec], base_path: PathLike | None = None
) -> list[MappingRecord]:
    """All records of one or several mapping files, in file and JSON order (validated up front).

    Args:
        map_file: a mapping JSON path, a {"map_file", "base_path"} dict, or a list of either.
        base_path: root the paths are relative to (default: each mapping file's folder).
    """
    return [r for path, base in _normalise_sources(map_file, base_path) for r in read_mapping(path, base)]


def _to_chw(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [-1, 1] (x / 255 * 2 - 1, as the original)."""
    scaled = (image.astype(np.float64) / 255.0 * 2.0 - 1.0).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))  # (3, H, W)


class HumanPoseDataset(Dataset):
    """Images, poses and prompts of one or more Human-Art / LAION-Human style mapping files (spec 3).

    Items are indexed in mapping order, files concatenated in the order given. Each item is a dict:
    `BatchKey.IMAGE` (3, S, S) float32 in [-1, 1]; `BatchKey.POSE_MAP` (3, S, S) float32 in [-1, 1] (black = -1);
    `BatchKey.CAPTION` str; `BatchKey.KEYPOINTS` (max_person_num, 17, 3) float32 (x, y, score) in crop pixels,
    (-1, -1, 0) where missing; `BatchKey.PATH` the mapping's `img_path` (relative to its base path). S = image_size.

    Unreadable items (missing or corrupt image or pose file) are replaced by the next readable index and counted
    in `skipped`, with one warning per bad item. Each DataLoader worker holds its own copy of the dataset, so
    `skipped` counts the skips of the process it is read in: the main process's copy stays 0 when
    `num_workers > 0` (the workers' warnings name the file and their running count).

    Args:
        map_file: a mapping JSON, a {"map_file": ..., "base_path": ...} dict, or a list of either (datasets are
            concatenated).
        base_path: folder the mapping paths are relative to, for entries without their own; default = the
            mapping file's folder.
        image_size: side of the square output in pixels (a multiple of 8, the VAE factor).
        max_person_num: persons read per image (the first ones in file order).
        keypoint_thresh: a joint is kept and drawn when its score is > this.
        skeleton_width: limb width of the pose map in pixels (10, the original's, at 512 px).
        augment: random augmentation (spec 3.4) if True, else deterministic resize + centre crop. The original
            augmented validation data too; set False for validation and metrics.
        hflip_p: horizontal-flip probability.
        vflip_p: vertical-flip probability.
        rotate_p: rotation probability (angle uniform in +-90 degrees).
        color_p: probability of HueSaturationValue or RGBShift.
        brightness_contrast_p: RandomBrightnessContrast probability.
        swap_flipped_joints: relabel left/right joints when the image was mirrored, so limb colours keep their
            anatomical meaning. The original did not (default False).
        seed: seed of the augmentation generator; None draws one from the OS. DataLoader workers are reseeded
            by `seed_worker`.
        max_items: use only the first `max_items` items.
        mirror: with `augment=False`, serve the mirror image of each deterministic item (joints relabelled if
            `swap_flipped_joints`); latent caches use it for their flipped orientation.

    Raises:
        FileNotFoundError: a mapping file or base path does not exist.
        ValueError: invalid JSON, an empty mapping, an entry without the three fields, or an invalid option.
    """

    def __init__(
        self,
        *,
        map_file: MapFileSpec | Sequence[MapFileSpec],
        base_path: PathLike | None = None,
        image_size: int = 512,
        max_person_num: int = 10,
        keypoint_thresh: float = 0.02,
        skeleton_width: int = HUMANSD_LINE_WIDTH,
        augment: bool = True,
        hflip_p: float = 0.2,
        vflip_p: float = 0.1,
        rotate_p: float = 0.1,
        color_p: float = 0.4,
        brightness_contrast_p: float = 0.2,
        swap_flipped_joints: bool = False,
        seed: int | None = None,
        max_items: int | None = None,
        mirror: bool = False,
    ) -> None:
        super().__init__()
        self._check_options(image_size, max_person_num, keypoint_thresh, skeleton_width, max_items)
        self.image_size = image_size
        self.max_person_num = max_person_num
        self.keypoint_thresh = float(keypoint_thresh)
        self.skeleton_width = skeleton_width
        self.augment = bool(augment)
        self.swap_flipped_joints = bool(swap_flipped_joints)
        self.transform = build_transform(
            image_size,
            augment=self.augment,
            hflip_p=hflip_p,
            vflip_p=vflip_p,
            rotate_p=rotate_p,
            color_p=color_p,
            brightness_contrast_p=brightness_contrast_p,
            seed=seed,
            save_applied_params=self.swap_flipped_joints,
            mirror=mirror,
        )
        records = read_mappings(map_file, base_path)
        self._records = records[:max_items] if max_items is not None else records
        self.skipped = 0
        self._reported: set[int] = set()

    @staticmethod
    def _check_options(
        image_size: int, max_person_num: int, keypoint_thresh: float, skeleton_width: int, max_items: int | None
    ) -> None:
        for name, value in (("image_size", image_size), ("max_person_num", max_person_num)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer; got {value!r}.")
        if image_size % 8:
            raise ValueError(
                f"image_size must be a multiple of 8 (the VAE downsampling factor); got {image_size}. "
                f"Use e.g. {max(8, image_size // 8 * 8)}."
            )
        if isinstance(keypoint_thresh, bool) or not isinstance(keypoint_thresh, (int, float)) or keypoint_thresh < 0:
            raise ValueError(f"keypoint_thresh must be a number >= 0; got {keypoint_thresh!r} (original: 0.02).")
        if isinstance(skeleton_width, bool) or not isinstance(skeleton_width, int) or skeleton_width < 1:
            raise ValueError(f"skeleton_width must be a positive integer; got {skeleton_width!r} (original: 10).")
        if max_items is not None and (isinstance(max_items, bool) or not isinstance(max_items, int) or max_items <= 0):
            raise ValueError(f"max_items must be a positive integer or None; got {max_items!r}.")

    def __len__(self) -> int:
        return len(self._records)

    def _check_index(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"Index {index} out of range for a dataset of {len(self)} items.")
        return index % len(self)

    def scenario(self, index: int) -> str:
        """The item's scenario: the name of its image's parent folder.

        For Human-Art this is the style folder (`images/<category>/<scenario>/<id>.jpg`, e.g. "watercolor",
        spec 3.9); for LAION-Human it is the shard folder.
        """
        return PurePosixPath(self._records[self._check_index(index)].image).parent.name

    def reseed(self, seed: int | None) -> None:
        """Restart the augmentation generator from `seed` (None: from OS entropy)."""
        self.transform.set_random_seed(seed)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The item at `index`, or at the next readable index if its files are missing or corrupt (see class doc)."""
        index = self._check_index(index)
        for attempt in range(min(MAX_CONSECUTIVE_SKIPS, len(self))):
            current = (index + attempt) % len(self)
            record = self._records[current]
            try:
                image, keypoints = self._load(record)
            except _LOAD_ERRORS as err:
                self._skip(current, err)
                continue
            return self._make_item(record, image, keypoints)
        raise RuntimeError(
            f"No readable item in {min(MAX_CONSECUTIVE_SKIPS, len(self))} consecutive indices from {index} "
            f"(last: {self._records[current].image_path}); check the mapping files and base paths."
        )

    def _skip(self, index: int, err: Exception) -> None:
        self.skipped += 1
        if index not in self._reported:
            self._reported.add(index)
            worker = get_worker_info()
            where = f"worker {worker.id}" if worker is not None else "main process"
            logger.warning(
                "Skipping unreadable item %d (%s): %s [%d skip(s) so far in %s]",
                index,
                type(err).__name__,
                err,
                self.skipped,
                where,
            )

    def _load(self, record: MappingRecord) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 image and (P, 17, 3) keypoints of its first `max_person_num` persons (P may be 0)."""
        image = to_rgb_uint8(record.image_path)
        # No size passed (original files store none): the reader would warn per file about out-of-image joints,
        # which `_augment` drops silently.
        pose = load_pose(record.pose_path)
        persons = pose.persons[: self.max_person_num]
        if not persons:
            return image, np.zeros((0, NUM_KEYPOINTS, 3), dtype=np.float32)
        return image, np.stack([p.keypoints for p in persons]).astype(np.float32)

    def _make_item(self, record: MappingRecord, image: np.ndarray, keypoints: np.ndarray) -> dict[str, Any]:
        image, pose = self._augment(image, keypoints)
        pose_map = draw_humansd_skeleton(
            pose,
            self.image_size,
            self.image_size,
            threshold=self.keypoint_thresh,
            rule=SkeletonRule.TRAIN,
            line_width=self.skeleton_width,
        )
        return {
            BatchKey.IMAGE: _to_chw(image),
            BatchKey.POSE_MAP: _to_chw(pose_map),
            BatchKey.CAPTION: record.prompt,
            BatchKey.KEYPOINTS: torch.from_numpy(pose),
            BatchKey.PATH: record.image,
        }

    def _augment(self, image: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Augment image and joints together; returns the crop and (max_person_num, 17, 3) float32 keypoints."""
        height, width = image.shape[:2]
        flat = keypoints.reshape(-1, 3)  # (P * 17, 3), slot = person * 17 + joint
        x, y, score = flat[:, 0], flat[:, 1], flat[:, 2]
        # Deliberate deviation (spec 3.7): the original kept out-of-image joints at (0, 0); they are dropped here.
        # Joints at or below the threshold would be discarded after augmentation anyway (spec 3.3 step 4).
        keep = (x >= 0) & (x < width) & (y >= 0) & (y < height) & (score > self.keypoint_thresh)
        slots = np.flatnonzero(keep).astype(np.int64)
        out = self.transform(image=image, keypoints=flat[slots, :2], **{SLOT_FIELD: slots})
        kept_slots = np.asarray(out[SLOT_FIELD], dtype=np.int64)  # (N',) slots of the joints still in the crop
        new_slots = kept_slots
        if self.swap_flipped_joints and is_mirrored(out["applied_transforms"]):
            person, joint = np.divmod(kept_slots, NUM_KEYPOINTS)
            new_slots = person * NUM_KEYPOINTS + np.asarray(COCO_FLIP_INDEX)[joint]
        pose = np.tile(np.array([-1.0, -1.0, 0.0], dtype=np.float32), (self.max_person_num * NUM_KEYPOINTS, 1))
        if len(kept_slots):
            pose[new_slots, :2] = np.asarray(out["keypoints"], dtype=np.float32).reshape(-1, 2)
            pose[new_slots, 2] = score[kept_slots]  # the original score
        return out["image"], pose.reshape(self.max_person_num, NUM_KEYPOINTS, 3)


def _find_pose_datasets(dataset: Dataset) -> list[HumanPoseDataset]:
    """The reseedable datasets inside `dataset` (`HumanPoseDataset`s, latent caches; or wrapped by Subset /
    ConcatDataset)."""
    if isinstance(dataset, HumanPoseDataset) or callable(getattr(dataset, "reseed", None)):
        return [dataset]
    if isinstance(dataset, Subset):
        return _find_pose_datasets(dataset.dataset)
    if isinstance(dataset, ConcatDataset):
        return [d for part in dataset.datasets for d in _find_pose_datasets(part)]
    return []


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: give each worker its own, reproducible augmentation stream.

    Forked workers inherit the same generator state, so without this every worker would augment identically.
    Each `HumanPoseDataset` in the worker (also inside `Subset` / `ConcatDataset`) and numpy's global generator
    are reseeded from the worker's torch seed, which is `base_seed + worker_id` with `base_seed` drawn from the
    DataLoader's `generator`: batches repeat for a seeded generator and the same `num_workers` (a different
    worker count gives different, equally valid, augmentations). With `num_workers=0` the dataset's own `seed`
    decides.

    Args:
        worker_id: the worker index (unused: the torch seed already includes it).
    """
    info = get_worker_info()
    if info is None:
        return
    seed = info.seed % 2**32
    np.random.seed(seed)
    for dataset in _find_pose_datasets(info.dataset):
        dataset.reseed(seed)


def collate_batch(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack item tensors along a new batch dimension and keep other values (captions, paths) as lists.

    Args:
        items: dataset items with the same keys.

    Returns:
        `BatchKey.IMAGE` / `POSE_MAP` (B, 3, S, S), `KEYPOINTS` (B, P, 17, 3), `CAPTION` / `PATH` lists of B str.
    """
    if not items:
        raise ValueError("collate_batch got an empty list of items.")
    batch = {}
    for key in items[0]:
        values = [item[key] for item in items]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch


class HumanPoseDataModule(pl.LightningDataModule):
    """Train and validation loaders over `HumanPoseDataset`s (replaces the original's `DataModuleFromConfig`).

    Training batches are shuffled by a generator seeded with `seed`; validation keeps mapping order. Every loader
    uses `seed_worker` and `collate_batch`.

    Args:
        train: keyword arguments of the training `HumanPoseDataset` (e.g. `{"map_file": ..., "image_size": 512}`).
        validation: keyword arguments of the validation dataset, or None for no validation loader. Set
            `augment: false` for deterministic validation (the original augmented it randomly).
        batch_size: items per batch (train and validation).
        num_workers: DataLoader worker processes.
        seed: seeds the training shuffle and, unless a dataset config sets its own `seed`, the datasets'
            augmentation generators.
    """

    dataset_class: type[Dataset] = HumanPoseDataset  # what `train` / `validation` configure

    def __init__(
        self,
        train: Mapping[str, Any],
        validation: Mapping[str, Any] | None = None,
        *,
        batch_size: int = 4,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, config in (("train", train), ("validation", validation)):
            if config is None and name == "validation":
                continue
            dataset = self.dataset_class.__name__
            if not isinstance(config, Mapping):
                raise ValueError(f"{name} must be a dict of {dataset} arguments; got {type(config).__name__}.")
            check_params(self.dataset_class, config, name=f"{type(self).__name__}.{name} ({dataset})")
        for name, value, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
        self.save_hyperparameters()
        self.train_config = dict(to_container(train))
        self.validation_config = dict(to_container(validation)) if validation is not None else None
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = int(seed)
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None

    def _build(self, config: Mapping[str, Any]) -> Dataset:
        return self.dataset_class(**{"seed": self.seed, **config})

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets the stage needs ("fit" / None: both, "validate": validation only)."""
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self._build(self.train_config)
        if stage in (None, "fit", "validate") and self.validation_config is not None and self.val_dataset is None:
            self.val_dataset = self._build(self.validation_config)

    def _loader(self, dataset: Dataset | None, *, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("HumanPoseDataModule: call setup() before asking for a dataloader.")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            # Also seeds the workers' base seed, so validation workers are reproducible too.
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.num_workers,
            worker_init_fn=seed_worker,
            collate_fn=collate_batch,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) training batches."""
        return self._loader(self.train_dataset, shuffle=True)

    @property
    def has_validation(self) -> bool:
        """Whether a validation split is configured (the trainer turns validation off otherwise)."""
        return self.validation_config is not None

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches in mapping order; an empty list (Lightning skips validation) when not configured."""
        if self.validation_config is None:
            return []
        return self._loader(self.val_dataset, shuffle=False)
