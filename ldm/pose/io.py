"""Reading and writing poses: HumanSD `.npz`, COCO keypoint JSON, OpenPose JSON and our plain JSON.

Every reader returns a validated `Pose` (COCO-17, pixel coordinates) and every writer takes one. Rules shared by
all readers:

* Malformed content (wrong shapes, non-numeric or non-finite values, missing keys) raises a one-line
  `ValueError` that starts with the file path.
* A visible joint (score > 0) outside the image (`0 <= x < width`, `0 <= y < height`, the dataset's rule) gets
  score 0; its coordinates are kept and one warning per file says how many joints were affected.
* A file with no persons gives a valid empty `Pose`.
* Explicit `width` / `height` arguments override a size stored in the file.

Pose `.npz` files are pickles. They are read with a restricted unpickler that only rebuilds numpy arrays,
dtypes and scalars (everything an MMPose result needs), so a crafted file cannot run code, and written so that
numpy 1.x (the original environment) can load them too (`ldm.pose._npz_pickle`).

References:
    HumanSD, https://github.com/IDEA-Research/HumanSD (c5db29d), ldm/data/humansd.py and scripts/pose2img.py
        (`np.load(path, allow_pickle=True)["arr_0"]`); spec section 3.2 of shared/spec/humansd-reference.md.
    COCO data format, https://cocodataset.org/#format-data (keypoint annotations).
    OpenPose output format, https://github.com/CMU-Perceptual-Computing-Lab/openpose/blob/master/doc/02_output.md.
"""

from __future__ import annotations

import json
import logging
import math
import zipfile
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from ldm.pose._npz_pickle import load_npz_member, save_npz
from ldm.pose.convert import coco_to_openpose18, openpose_to_coco
from ldm.pose.keypoints import COCO_KEYPOINT_NAMES, HUMANSD_LIMBS, NUM_KEYPOINTS, Person, Pose

logger = logging.getLogger(__name__)

PathLike = str | Path

# Extra npz member holding (width, height); the original loader only reads "arr_0" and ignores it.
NPZ_SIZE_KEY = "image_size"
DEFAULT_SIZE = 512
COCO_PERSON_CATEGORY = 1


class PoseFormat(StrEnum):
    """Pose file formats `load_pose` / `save_pose` understand."""

    HUMANSD_NPZ = "humansd-npz"
    COCO = "coco"
    OPENPOSE = "openpose"
    PLAIN = "plain"


def _error(path: PathLike, message: str) -> ValueError:
    return ValueError(f"{path}: {message}")


def _check_dim(value: Any, path: PathLike, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise _error(path, f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def _as_keypoints(value: Any, path: PathLike, where: str, shape: tuple[int, ...] = (NUM_KEYPOINTS, 3)) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise _error(path, f"{where} must be numeric with shape {shape}; got a non-numeric or ragged value.") from None
    if arr.shape != shape:
        raise _error(path, f"{where} must have shape {shape} as (x, y, score); got {arr.shape}.")
    if not np.isfinite(arr).all():
        raise _error(path, f"{where} contains NaN or infinite values; mark a missing joint with score 0.")
    return arr


def _as_score(value: Any, path: PathLike, where: str) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise _error(path, f"{where} must be a number; got {value!r}.") from None
    if not math.isfinite(score):
        raise _error(path, f"{where} must be finite; got {score}.")
    return score


def _as_bbox(value: Any, path: PathLike, where: str) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    bbox = np.asarray(value, dtype=np.float64) if isinstance(value, (list, tuple)) else None
    if bbox is None or bbox.shape != (4,) or not np.isfinite(bbox).all():
        raise _error(path, f"{where} must be 4 finite numbers (x, y, w, h); got {value!r}.")
    return float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])


def _infer_extent(keypoints: list[np.ndarray], axis: int) -> int:
    """Smallest image side containing every visible joint: floor(max coordinate) + 1 (512 when nothing is visible)."""
    coords = [k[k[:, 2] > 0, axis] for k in keypoints]
    coords = np.concatenate(coords) if coords else np.zeros(0)
    if coords.size == 0 or coords.max() < 0:
        return DEFAULT_SIZE
    return int(math.floor(float(coords.max()))) + 1


def _build_pose(
    path: PathLike,
    keypoints: list[np.ndarray],
    scores: list[float],
    bboxes: list[tuple[float, float, float, float] | None],
    width: int | None,
    height: int | None,
) -> Pose:
    """Assemble a `Pose`, inferring a missing size and zeroing the score of visible joints outside the image."""
    width = _infer_extent(keypoints, 0) if width is None else _check_dim(width, path, "width")
    height = _infer_extent(keypoints, 1) if height is None else _check_dim(height, path, "height")
    persons, n_outside = [], 0
    for kpts, score, bbox in zip(keypoints, scores, bboxes, strict=True):
        kpts = kpts.copy()
        x, y, s = kpts[:, 0], kpts[:, 1], kpts[:, 2]
        outside = (s > 0) & ~((x >= 0) & (x < width) & (y >= 0) & (y < height))
        n_outside += int(outside.sum())
        kpts[outside, 2] = 0.0
        persons.append(Person(kpts, score=score, bbox=bbox))
    if n_outside:
        logger.warning(
            "%s: %d visible joint(s) outside the %dx%d image set to score 0.", path, n_outside, width, height
        )
    return Pose(persons, width=width, height=height)


def _read_json(path: PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Pose file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _error(path, f"not valid UTF-8 JSON ({err}).") from None


def _write_text(path: PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _short_float(value: float) -> float:
    """The shortest decimal that reads back to the same float32 (keeps JSON small and round trips exact)."""
    return float(str(np.float32(value)))


def _rows(keypoints: np.ndarray) -> list[list[float]]:
    return [[_short_float(v) for v in row] for row in keypoints]


def _npz_stored_size(path: Path) -> tuple[int | None, int | None]:
    with np.load(path, allow_pickle=False) as data:
        if NPZ_SIZE_KEY not in data.files:
            return None, None
        size = data[NPZ_SIZE_KEY]
    if size.shape != (2,) or not np.issubdtype(size.dtype, np.integer):
        raise _error(path, f"'{NPZ_SIZE_KEY}' must be 2 integers (width, height); got {size.dtype} {size.shape}.")
    return _check_dim(size[0], path, "stored width"), _check_dim(size[1], path, "stored height")


def read_humansd_npz(path: PathLike, *, width: int | None = None, height: int | None = None) -> Pose:
    """Read a HumanSD / MMPose-0.x pose file (spec 3.2).

    `arr_0` is an object array of per-person dicts: `keypoints` (17, 3) (x, y, score) in pixels, `score` (person
    confidence, default 1.0 when absent), `area` (ignored). A numeric (P, 17, 3) `arr_0` is accepted too (person
    score 1.0). The image size is not part of the original format: it comes from `width` / `height`, else from the
    `image_size` member `write_humansd_npz` adds, else it is inferred as floor(max visible x or y) + 1 (512 for a
    pose with no visible joint) so that no joint is dropped.

    Args:
        path: the .npz file.
        width: image width the coordinates refer to.
        height: image height the coordinates refer to.

    Returns:
        The `Pose`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Pose file not found: {path}")
    array = load_npz_member(path)
    stored_w, stored_h = _npz_stored_size(path)
    keypoints, scores = [], []
    if array.dtype.hasobject:
        if array.ndim != 1:
            raise _error(path, f"'arr_0' must be a 1-D array of person dicts; got shape {array.shape}.")
        for i, record in enumerate(array):
            if not isinstance(record, Mapping) or "keypoints" not in record:
                raise _error(path, f"person {i} must be a dict with a 'keypoints' entry; got {type(record).__name__}.")
            keypoints.append(_as_keypoints(record["keypoints"], path, f"person {i} 'keypoints'"))
            scores.append(_as_score(record.get("score", 1.0), path, f"person {i} 'score'"))
    else:
        if array.ndim != 3 or array.shape[1:] != (NUM_KEYPOINTS, 3):
            raise _error(path, f"numeric 'arr_0' must have shape (persons, 17, 3); got {array.shape}.")
        keypoints = [_as_keypoints(k, path, f"person {i} keypoints") for i, k in enumerate(array)]
        scores = [1.0] * len(keypoints)
    width = width if width is not None else stored_w
    height = height if height is not None else stored_h
    return _build_pose(path, keypoints, scores, [None] * len(keypoints), width, height)


def write_humansd_npz(pose: Pose, path: PathLike) -> None:
    """Write a pose in HumanSD's .npz layout, readable by `np.load(path, allow_pickle=True)["arr_0"]`.

    Each person becomes `{"keypoints": float32 (17, 3), "score": float32, "area": float32}` with MMPose's area
    (keypoint extent width x height over all 17 joints). The size goes into an extra `image_size` member
    (int64 [width, height]) that the original loader ignores. The pickle names numpy 1.x globals, so the original
    numpy 1.x environment can read the file as well as numpy 2.

    Args:
        pose: the pose.
        path: destination file; written as given (no ".npz" appended), parent folders are created.
    """
    records = np.empty(len(pose.persons), dtype=object)
    for i, person in enumerate(pose.persons):
        kpts = person.keypoints.astype(np.float32)
        area = np.ptp(kpts[:, 0]) * np.ptp(kpts[:, 1])
        records[i] = {"keypoints": kpts, "score": np.float32(person.score), "area": np.float32(area)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npz(path, records, **{NPZ_SIZE_KEY: np.array([pose.width, pose.height], dtype=np.int64)})


def _coco_keypoints(ann: Mapping, path: PathLike, where: str, keep_visibility: bool) -> np.ndarray:
    values = ann.get("keypoints")
    flat = _as_keypoints(values, path, f"{where} 'keypoints'", shape=(NUM_KEYPOINTS * 3,))
    kpts = flat.reshape(NUM_KEYPOINTS, 3)
    visibility = kpts[:, 2]
    if not np.isin(visibility, (0, 1, 2)).all():
        raise _error(path, f"{where} visibility flags must be 0, 1 or 2; got {sorted(set(visibility.tolist()))}.")
    if not keep_visibility:
        kpts[:, 2] = (visibility > 0).astype(np.float32)
    return kpts


def _coco_images(data: Any, path: PathLike) -> dict[int, tuple[int, int]]:
    if not isinstance(data, Mapping) or not isinstance(data.get("images"), list):
        raise _error(path, "a COCO keypoint file needs an 'images' list and an 'annotations' list.")
    if not isinstance(data.get("annotations"), list):
        raise _error(path, "a COCO keypoint file needs an 'annotations' list.")
    sizes = {}
    for i, image in enumerate(data["images"]):
        if not isinstance(image, Mapping) or not {"id", "width", "height"} <= image.keys():
            raise _error(path, f"images[{i}] must have 'id', 'width' and 'height'; got {image!r:.80}.")
        image_id = image["id"]
        if isinstance(image_id, bool) or not isinstance(image_id, int) or image_id < 0:
            raise _error(path, f"images[{i}] 'id' must be an integer >= 0; got {image_id!r}.")
        width = _check_dim(image["width"], path, f"images[{i}] 'width'")
        sizes[image_id] = (width, _check_dim(image["height"], path, f"images[{i}] 'height'"))
    return sizes


def _coco_from_data(
    data: Any, path: PathLike, keep_visibility: bool, width: int | None = None, height: int | None = None
) -> dict[int, Pose]:
    sizes = {
        image_id: (width if width is not None else w, height if height is not None else h)
        for image_id, (w, h) in _coco_images(data, path).items()
    }
    persons: dict[int, tuple[list, list, list]] = {image_id: ([], [], []) for image_id in sizes}
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(ann, Mapping) or "keypoints" not in ann:
            raise _error(path, f"{where} has no 'keypoints'; expected a COCO person-keypoints annotation.")
        if ann.get("image_id") not in sizes:
            raise _error(path, f"{where} refers to image_id {ann.get('image_id')!r}, which is not in 'images'.")
        if ann.get("iscrowd", 0):
            continue  # crowd regions carry no usable joints
        kpts, scores, bboxes = persons[ann["image_id"]]
        kpts.append(_coco_keypoints(ann, path, where, keep_visibility))
        scores.append(_as_score(ann.get("score", 1.0), path, f"{where} 'score'"))
        bboxes.append(_as_bbox(ann.get("bbox"), path, f"{where} 'bbox'"))
    return {image_id: _build_pose(path, *persons[image_id], *sizes[image_id]) for image_id in sorted(persons)}


def read_coco_poses(path: PathLike, *, keep_visibility: bool = False) -> dict[int, Pose]:
    """Read every image of a COCO person-keypoints JSON (`images` + `annotations`).

    Each annotation's 51 `keypoints` are (x, y, v) with visibility v in {0, 1, 2}. COCO stores no joint
    confidence, so the score becomes 1.0 for v > 0 and 0 for v = 0 (`keep_visibility=True` keeps v itself).
    Crowd annotations (`iscrowd` = 1) are skipped; the person score is the annotation's `score` (results files)
    or 1.0; `bbox` is kept. Images without annotations give empty poses.

    Args:
        path: the JSON file.
        keep_visibility: use v (0, 1, 2) as the joint score instead of 0 / 1.

    Returns:
        image id -> `Pose`, in increasing id order.
    """
    return _coco_from_data(_read_json(path), path, keep_visibility)


def read_coco_pose(path: PathLike, image_id: int | None = None, *, keep_visibility: bool = False) -> Pose:
    """Read the persons of one image of a COCO person-keypoints JSON (see `read_coco_poses`).

    Args:
        path: the JSON file.
        image_id: which image; None is allowed only when the file holds exactly one image.
        keep_visibility: use v (0, 1, 2) as the joint score instead of 0 / 1.

    Returns:
        The image's `Pose`.
    """
    poses = read_coco_poses(path, keep_visibility=keep_visibility)
    if image_id is None:
        if len(poses) != 1:
            raise _error(path, f"holds {len(poses)} images; pass image_id= (one of {list(poses)[:5]}...).")
        return next(iter(poses.values()))
    if image_id not in poses:
        raise _error(path, f"has no image with id {image_id!r}; ids present: {list(poses)[:10]}.")
    return poses[image_id]


def _coco_annotation(person: Person, image_id: int, ann_id: int) -> dict:
    kpts = person.keypoints
    visible = kpts[:, 2] > 0
    flat = []
    for (x, y, _), vis in zip(kpts, visible, strict=True):
        flat += [_short_float(x), _short_float(y), 2] if vis else [0, 0, 0]
    bbox = person.bbox or person.bbox_from_keypoints() or (0.0, 0.0, 0.0, 0.0)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": COCO_PERSON_CATEGORY,
        "keypoints": flat,
        "num_keypoints": int(visible.sum()),
        "bbox": [_short_float(v) for v in bbox],
        "area": _short_float(bbox[2] * bbox[3]),
        "iscrowd": 0,
        "score": _short_float(person.score),
    }


def write_coco_poses(poses: Mapping[int, Pose], path: PathLike) -> None:
    """Write poses as a COCO person-keypoints JSON (loadable by pycocotools' `COCO`).

    Joints with score > 0 are written with v = 2 at their coordinates, others as (0, 0, 0), so joint confidences
    are lost (COCO has none); person scores go into each annotation's `score`.

    Args:
        poses: image id (int >= 0) -> `Pose`.
        path: destination JSON file; parent folders are created.
    """
    images, annotations = [], []
    for image_id, pose in sorted(poses.items()):
        if isinstance(image_id, bool) or not isinstance(image_id, (int, np.integer)) or image_id < 0:
            raise ValueError(f"write_coco_poses: image ids must be integers >= 0; got {image_id!r}.")
        images.append({"id": int(image_id), "width": pose.width, "height": pose.height})
        for person in pose.persons:
            annotations.append(_coco_annotation(person, int(image_id), len(annotations) + 1))
    category = {
        "id": COCO_PERSON_CATEGORY,
        "name": "person",
        "supercategory": "person",
        "keypoints": list(COCO_KEYPOINT_NAMES),
        "skeleton": [[a + 1, b + 1] for a, b in HUMANSD_LIMBS],  # 1-based, HumanSD's 16 limbs
    }
    data = {"images": images, "annotations": annotations, "categories": [category]}
    _write_text(path, json.dumps(data))


def _openpose_from_data(data: Any, path: PathLike, width: int | None, height: int | None) -> Pose:
    if not isinstance(data, Mapping) or not isinstance(data.get("people"), list):
        raise _error(path, "an OpenPose file needs a 'people' list.")
    keypoints = []
    for i, person in enumerate(data["people"]):
        values = person.get("pose_keypoints_2d", person.get("pose_keypoints")) if isinstance(person, Mapping) else None
        if not isinstance(values, list) or len(values) not in (18 * 3, 25 * 3):
            got = len(values) if isinstance(values, list) else type(values).__name__
            raise _error(
                path, f"people[{i}] 'pose_keypoints_2d' must hold 54 (BODY-18) or 75 (BODY_25) numbers; got {got}."
            )
        op = _as_keypoints(values, path, f"people[{i}] 'pose_keypoints_2d'", shape=(len(values),))
        keypoints.append(openpose_to_coco(op.reshape(1, -1, 3))[0])
    width = width if width is not None else data.get("canvas_width")
    height = height if height is not None else data.get("canvas_height")
    return _build_pose(path, keypoints, [1.0] * len(keypoints), [None] * len(keypoints), width, height)


def read_openpose_json(path: PathLike, *, width: int | None = None, height: int | None = None) -> Pose:
    """Read an OpenPose JSON (`{"people": [{"pose_keypoints_2d": [...]}, ...]}`), BODY-18 or BODY_25.

    BODY-18 (54 numbers) and BODY_25 (75 numbers) are told apart by length and mapped to COCO-17; the neck,
    mid-hip and foot joints are dropped. Person scores are 1.0 (OpenPose has none). The size comes from
    `width` / `height`, else `canvas_width` / `canvas_height` (ControlNet editors write them), else it is inferred
    as for .npz.

    Args:
        path: the JSON file (pixel coordinates).
        width: image width the coordinates refer to.
        height: image height the coordinates refer to.

    Returns:
        The `Pose`.
    """
    return _openpose_from_data(_read_json(path), path, width, height)


def write_openpose_json(pose: Pose, path: PathLike) -> None:
    """Write a pose as OpenPose BODY-18 JSON with `canvas_width` / `canvas_height`.

    The neck is the shoulders' mean when both shoulders are visible (score > 0); joints with score <= 0 are
    written as (0, 0, 0), OpenPose's "missing".

    Args:
        pose: the pose.
        path: destination JSON file; parent folders are created.
    """
    people = []
    if pose.persons:
        openpose = coco_to_openpose18(pose.to_array(), threshold=0.0)
        openpose[openpose[..., 2] <= 0] = 0.0
        for kpts in openpose:
            flat = [v for row in _rows(kpts) for v in row]
            people.append({"person_id": [-1], "pose_keypoints_2d": flat})
    data = {"version": 1.3, "people": people, "canvas_width": pose.width, "canvas_height": pose.height}
    _write_text(path, json.dumps(data))


def _plain_from_data(data: Any, path: PathLike, width: int | None, height: int | None) -> Pose:
    if not isinstance(data, Mapping) or not isinstance(data.get("persons"), list):
        raise _error(path, 'a plain pose file is {"width": W, "height": H, "persons": [...]}; "persons" is missing.')
    keypoints, scores, bboxes = [], [], []
    for i, person in enumerate(data["persons"]):
        if not isinstance(person, Mapping) or "keypoints" not in person:
            raise _error(path, f"persons[{i}] must be an object with 'keypoints' (17 [x, y, score] rows).")
        keypoints.append(_as_keypoints(person["keypoints"], path, f"persons[{i}] 'keypoints'"))
        scores.append(_as_score(person.get("score", 1.0), path, f"persons[{i}] 'score'"))
        bboxes.append(_as_bbox(person.get("bbox"), path, f"persons[{i}] 'bbox'"))
    width = width if width is not None else data.get("width")
    height = height if height is not None else data.get("height")
    if width is None or height is None:
        raise _error(path, "'width' and 'height' are required in a plain pose file.")
    return _build_pose(path, keypoints, scores, bboxes, width, height)


def read_plain_json(path: PathLike, *, width: int | None = None, height: int | None = None) -> Pose:
    """Read our plain pose JSON.

    Format: `{"width": W, "height": H, "persons": [{"keypoints": [[x, y, score] x 17], "score": s}]}`, with an
    optional per-person `"bbox": [x, y, w, h]`; a missing person `score` means 1.0.

    Args:
        path: the JSON file.
        width: overrides the stored width.
        height: overrides the stored height.

    Returns:
        The `Pose`.
    """
    return _plain_from_data(_read_json(path), path, width, height)


def write_plain_json(pose: Pose, path: PathLike) -> None:
    """Write a pose as our plain JSON (one keypoint row per line; floats in their shortest float32 form).

    Args:
        pose: the pose.
        path: destination JSON file; parent folders are created.
    """
    blocks = []
    for person in pose.persons:
        fields = [f'"score": {json.dumps(_short_float(person.score))}']
        if person.bbox is not None:
            fields.append(f'"bbox": {json.dumps([_short_float(v) for v in person.bbox])}')
        rows = ",\n".join(f"        {json.dumps(row)}" for row in _rows(person.keypoints))
        fields.append(f'"keypoints": [\n{rows}\n      ]')
        blocks.append("    {\n      " + ",\n      ".join(fields) + "\n    }")
    persons = "[\n" + ",\n".join(blocks) + "\n  ]" if blocks else "[]"
    _write_text(path, f'{{\n  "width": {pose.width},\n  "height": {pose.height},\n  "persons": {persons}\n}}\n')


def detect_pose_format(path: PathLike) -> PoseFormat:
    """Guess a pose file's format: .npz (or zip content) -> HumanSD npz; JSON by its keys.

    JSON with `persons` is plain, with `people` OpenPose, with `annotations` COCO.

    Args:
        path: the pose file.

    Returns:
        The `PoseFormat`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Pose file not found: {path}")
    if path.suffix.lower() == ".npz" or zipfile.is_zipfile(path):
        return PoseFormat.HUMANSD_NPZ
    data = _read_json(path)
    for key, fmt in (("persons", PoseFormat.PLAIN), ("people", PoseFormat.OPENPOSE), ("annotations", PoseFormat.COCO)):
        if isinstance(data, Mapping) and key in data:
            return fmt
    found = sorted(data)[:8] if isinstance(data, Mapping) else type(data).__name__
    raise _error(path, f"unknown pose JSON (top level: {found}); expected a 'persons', 'people' or 'annotations' key.")


def load_pose(path: PathLike, *, width: int | None = None, height: int | None = None) -> Pose:
    """Load a pose from any supported file (`detect_pose_format`).

    A COCO file must hold exactly one image here (use `read_coco_poses` / `read_coco_pose` otherwise).

    Args:
        path: .npz, plain JSON, OpenPose JSON or COCO keypoint JSON.
        width: image width the coordinates refer to (overrides the file; needed for .npz to avoid inference).
        height: image height the coordinates refer to.

    Returns:
        The `Pose`.
    """
    fmt = detect_pose_format(path)
    if fmt is PoseFormat.HUMANSD_NPZ:
        return read_humansd_npz(path, width=width, height=height)
    data = _read_json(path)
    if fmt is PoseFormat.PLAIN:
        return _plain_from_data(data, path, width, height)
    if fmt is PoseFormat.OPENPOSE:
        return _openpose_from_data(data, path, width, height)
    poses = _coco_from_data(data, path, False, width, height)
    if len(poses) != 1:
        raise _error(path, f"COCO file holds {len(poses)} images; use read_coco_pose(path, image_id) instead.")
    return next(iter(poses.values()))


def save_pose(pose: Pose, path: PathLike, *, format: PoseFormat | str | None = None) -> None:
    """Save a pose; the format defaults to the suffix (.npz -> HumanSD npz, .json -> plain JSON).

    Args:
        pose: the pose.
        path: destination file.
        format: force a `PoseFormat` (e.g. "openpose" or "coco" for a .json file; COCO uses image id 1).
    """
    path = Path(path)
    if format is None:
        by_suffix = {".npz": PoseFormat.HUMANSD_NPZ, ".json": PoseFormat.PLAIN}
        if path.suffix.lower() not in by_suffix:
            raise ValueError(f"save_pose: cannot tell the format of {path} from its suffix; use .npz, .json or format=")
        fmt = by_suffix[path.suffix.lower()]
    else:
        try:
            fmt = PoseFormat(format)
        except ValueError:
            choices = [f.value for f in PoseFormat]
            raise ValueError(f"save_pose: unknown format {format!r}; expected one of {choices}.") from None
    writers = {
        PoseFormat.HUMANSD_NPZ: write_humansd_npz,
        PoseFormat.PLAIN: write_plain_json,
        PoseFormat.OPENPOSE: write_openpose_json,
        PoseFormat.COCO: lambda p, dst: write_coco_poses({1: p}, dst),
    }
    writers[fmt](pose, path)
