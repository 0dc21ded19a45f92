"""Pure functions behind the demo's pose editor: the editable pose, its rendering, and pose imports.

The editor works on a `Pose` in an *editor frame*: short side 512, both sides multiples of 64 (the original's
generation size, spec §5.1), so a click on the rendered canvas is directly a keypoint coordinate. Each model slot
rescales the pose to its own generation size. Nothing here imports gradio or holds state: every function takes a
pose and returns a new one (inputs are never modified).

References:
    HumanSD, https://github.com/IDEA-Research/HumanSD (c5db29d), scripts/gradio/pose2img.py (photo -> detected
        pose, or skeleton image used as is; spec §5.2).
    COCO keypoint order, https://cocodataset.org/#keypoints-eval.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, ImageOps

from ldm.inference.pose_input import generation_size, looks_like_skeleton
from ldm.pose.convert import rescale_pose
from ldm.pose.image import ImageLike, to_rgb_uint8
from ldm.pose.io import load_pose, save_pose
from ldm.pose.keypoints import COCO_KEYPOINT_NAMES, NUM_KEYPOINTS, Person, Pose
from ldm.pose.render import overlay_skeleton, render_pose_map

if TYPE_CHECKING:
    from ldm.pose.estimator import PoseDetector

logger = logging.getLogger(__name__)

EDITOR_SHORT_SIDE = 512
EDITOR_MULTIPLE = 64
MAX_INPUT_SIDE = 8192  # larger uploads are refused (a phone photo is ~4000 px)
MAX_ASPECT_RATIO = 4.0  # longer/shorter side; beyond this the generation canvas gets absurd (512 x 2048+)
DEFAULT_THRESHOLD = 0.05  # keypoint/person score threshold of the original (spec §5.1)
BACKDROP_DIM = 0.45  # photo brightness behind the editable skeleton

# A person standing upright, facing the viewer, in units of the canvas height: (x offset from the person's centre,
# y from the top). Taken from assets/poses/demo_single.json (512 x 512): x = (x - 256) / 512, y = y / 512.
STANDING_TEMPLATE = np.array(
    [
        [0.000, 0.151],  # nose
        [0.015, 0.134],  # left_eye
        [-0.015, 0.134],  # right_eye
        [0.035, 0.147],  # left_ear
        [-0.035, 0.147],  # right_ear
        [0.075, 0.248],  # left_shoulder (image right: the person faces the viewer)
        [-0.075, 0.248],  # right_shoulder
        [0.097, 0.388],  # left_elbow
        [-0.097, 0.388],  # right_elbow
        [0.107, 0.517],  # left_wrist
        [-0.107, 0.517],  # right_wrist
        [0.047, 0.527],  # left_hip
        [-0.047, 0.527],  # right_hip
        [0.054, 0.721],  # left_knee
        [-0.054, 0.721],  # right_knee
        [0.058, 0.903],  # left_ankle
        [-0.058, 0.903],  # right_ankle
    ],
    dtype=np.float32,
)
# Horizontal centres (fractions of the width) tried for a new person, best spread first.
_PLACEMENTS = (0.5, 0.25, 0.75, 0.125, 0.375, 0.625, 0.875)

_MARKER_OTHER = (235, 235, 235)
_MARKER_SELECTED = (255, 255, 255)
_MARKER_JOINT = (255, 214, 10)
_OUTLINE = (20, 20, 20)


@dataclass
class PoseImport:
    """What an upload turned into, for the editor.

    Args:
        pose: the pose in the editor frame, or None to keep the current pose (a skeleton image replaces the
            editable pose only while it is loaded).
        backdrop: (H, W, 3) uint8 image in the editor frame shown behind the pose (the photo), or the skeleton
            image itself when `skeleton` is True; None for a black canvas.
        skeleton: the upload is a rendered skeleton that is used as the pose map as is.
        message: a note for the user (e.g. "No person detected ..."), None when all went as expected.
    """

    pose: Pose | None
    backdrop: np.ndarray | None = None
    skeleton: bool = False
    message: str | None = None


@dataclass(frozen=True)
class Backdrop:
    """What the editor shows behind the pose: a photo (dimmed), or a skeleton image that replaces the pose.

    Args:
        image: (H, W, 3) uint8 image in the editor frame.
        skeleton: the image is a rendered skeleton used as the pose map as is (the pose is not editable then).
    """

    image: np.ndarray
    skeleton: bool = False


# ------------------------------------------------------------------------------------------------- sizes and checks
def check_canvas_size(width: int, height: int, *, what: str = "image") -> None:
    """Refuse sizes the demo cannot sensibly generate for.

    Args:
        width: width in pixels.
        height: height in pixels.
        what: how to name the input in the message ("photo", "pose file", ...).

    Raises:
        ValueError: a side is not positive, larger than `MAX_INPUT_SIDE`, or the aspect ratio exceeds
            `MAX_ASPECT_RATIO`.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"The {what} has an empty size ({width}x{height}).")
    if max(width, height) > MAX_INPUT_SIDE:
        raise ValueError(f"The {what} is {width}x{height}; at most {MAX_INPUT_SIDE} pixels per side are accepted.")
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"The {what} is {width}x{height}, an aspect ratio beyond {MAX_ASPECT_RATIO:g}:1; crop it first."
        )


def editor_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) of the editor frame for an input of this size: short side 512, sides multiples of 64."""
    check_canvas_size(width, height)
    return generation_size(height, width, multiple=EDITOR_MULTIPLE, short_side=EDITOR_SHORT_SIDE)


def fit_to_editor(pose: Pose) -> Pose:
    """Rescale a pose into its editor frame (validates its size first)."""
    check_canvas_size(pose.width, pose.height, what="pose")
    h, w = editor_size(pose.height, pose.width)
    return pose if (pose.width, pose.height) == (w, h) else rescale_pose(pose, w, h)


def empty_pose(width: int = EDITOR_SHORT_SIDE, height: int = EDITOR_SHORT_SIDE) -> Pose:
    """A pose with nobody in it (renders as a black map)."""
    return Pose([], width=width, height=height)


# -------------------------------------------------------------------------------------------------------- editing
def _check_person(pose: Pose, person: int) -> None:
    if not 0 <= person < len(pose.persons):
        raise ValueError(f"There is no person {person + 1}: the pose has {len(pose.persons)} person(s).")


def _check_joint(joint: int) -> None:
    if not 0 <= joint < NUM_KEYPOINTS:
        raise ValueError(f"Joint index must be in [0, {NUM_KEYPOINTS - 1}]; got {joint}.")


def _copy(pose: Pose, persons: list[Person] | None = None) -> Pose:
    persons = pose.persons if persons is None else persons
    copied = [Person(p.keypoints.copy(), score=p.score, bbox=p.bbox) for p in persons]
    return Pose(copied, width=pose.width, height=pose.height)


def _centre_x(person: Person) -> float | None:
    vis = person.keypoints[person.visible]
    return float(vis[:, 0].mean()) if len(vis) else None


def standing_person(width: int, height: int, *, centre_x: float = 0.5) -> Person:
    """The default person: standing, facing the viewer, 75 % of the canvas height.

    Args:
        width: canvas width in pixels.
        height: canvas height in pixels.
        centre_x: horizontal centre as a fraction of the width.

    Returns:
        A `Person` with all 17 joints visible (score 1) and clamped into the canvas.
    """
    kpts = np.ones((NUM_KEYPOINTS, 3), np.float32)
    kpts[:, 0] = np.clip(centre_x * width + STANDING_TEMPLATE[:, 0] * height, 0, width - 1)
    kpts[:, 1] = np.clip(STANDING_TEMPLATE[:, 1] * height, 0, height - 1)
    return Person(kpts, score=1.0)


def add_person(pose: Pose) -> Pose:
    """Add a standing person where it overlaps the existing people least (centre first, then the sides)."""
    centres = [c / pose.width for c in map(_centre_x, pose.persons) if c is not None]

    def spread(x: float) -> float:
        return min((abs(x - c) for c in centres), default=1.0)

    best = max(_PLACEMENTS, key=spread)  # max() keeps the first of equals: the centre for an empty canvas
    new = standing_person(pose.width, pose.height, centre_x=best)
    return _copy(pose, [*pose.persons, new])


def remove_person(pose: Pose, person: int) -> Pose:
    """Remove person `person` (0-based)."""
    _check_person(pose, person)
    return _copy(pose, [p for i, p in enumerate(pose.persons) if i != person])


def move_joint(pose: Pose, person: int, joint: int, x: float, y: float) -> Pose:
    """Move one joint to (x, y) (clamped into the canvas) and make it visible (score 1).

    Args:
        pose: the pose.
        person: 0-based person index.
        joint: COCO-17 joint index (see `COCO_KEYPOINT_NAMES`).
        x: new x in pixels of the pose's canvas.
        y: new y in pixels.

    Returns:
        A new `Pose`; the person's stored box is dropped (it no longer matches).
    """
    _check_person(pose, person)
    _check_joint(joint)
    if not (np.isfinite(x) and np.isfinite(y)):
        raise ValueError(f"Joint position must be finite; got ({x}, {y}).")
    out = _copy(pose)
    target = out.persons[person]
    target.keypoints[joint] = (min(max(float(x), 0.0), pose.width - 1), min(max(float(y), 0.0), pose.height - 1), 1.0)
    target.bbox = None
    return out


def hide_joint(pose: Pose, person: int, joint: int) -> Pose:
    """Mark one joint as missing (score 0): its limbs are no longer drawn."""
    _check_person(pose, person)
    _check_joint(joint)
    out = _copy(pose)
    out.persons[person].keypoints[joint, 2] = 0.0
    out.persons[person].bbox = None
    return out


def need_person(person: int | None) -> int:
    """The selected person index; a ValueError tells the user to add one when nobody is selected."""
    if person is None:
        raise ValueError("There is nobody in the pose: add a person first.")
    return person


EditFn = Callable[[Pose, int | None, int], tuple[Pose, int | None]]
"""(pose, selected person, selected joint) -> (edited pose, person to select next)."""

# The editor's buttons: (what the user is doing, the edit).
BUTTON_EDITS: dict[str, tuple[str, EditFn]] = {
    "add": ("Adding a person", lambda pose, i, j: (add_person(pose), len(pose.persons))),
    "remove": ("Removing the person", lambda pose, i, j: (remove_person(pose, need_person(i)), max(0, (i or 0) - 1))),
    "hide": ("Hiding the joint", lambda pose, i, j: (hide_joint(pose, need_person(i), j), i)),
    "clear": ("Clearing the pose", lambda pose, i, j: (empty_pose(pose.width, pose.height), None)),
}


# ------------------------------------------------------------------------------------------------------ rendering
def editor_line_width(height: int, width: int) -> int:
    """Limb width of the editor view (a little thinner than the model's 10 px at 512, so markers stay visible)."""
    return max(2, round(min(height, width) * 8 / 512))


def _resize(image: np.ndarray, width: int, height: int, *, nearest: bool = False) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return cv2.resize(image, (width, height), interpolation=interpolation)


def render_editor(
    pose: Pose,
    *,
    person: int | None = None,
    joint: int | None = None,
    backdrop: np.ndarray | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> np.ndarray:
    """The editable view: skeleton (as the model will see it) over a dimmed photo, plus joint markers.

    Every visible joint gets a dot; the selected person's joints get rings and its number; the selected joint a
    yellow ring and its name.

    Args:
        pose: the pose (the view has its size).
        person: selected person (0-based) or None.
        joint: selected COCO-17 joint index or None.
        backdrop: optional (h, w, 3) uint8 photo, resized to the pose's size and dimmed.
        threshold: person/joint score threshold used for the skeleton lines (as the pipeline).

    Returns:
        (pose.height, pose.width, 3) uint8 RGB image.
    """
    h, w = pose.height, pose.width
    base = np.zeros((h, w, 3), np.uint8)
    if backdrop is not None:
        base = (_resize(to_rgb_uint8(backdrop), w, h).astype(np.float32) * BACKDROP_DIM).astype(np.uint8)
    lines = render_pose_map(pose, threshold=threshold, line_width=editor_line_width(h, w))
    canvas = overlay_skeleton(base, lines)
    unit = max(1.0, min(h, w) / 512)
    for index, candidate in enumerate(pose.persons):
        selected = index == person
        for x, y, score in candidate.keypoints:
            if score <= 0:
                continue
            centre = (int(round(x)), int(round(y)))
            if selected:
                cv2.circle(canvas, centre, int(7 * unit), _OUTLINE, int(4 * unit), cv2.LINE_AA)
                cv2.circle(canvas, centre, int(7 * unit), _MARKER_SELECTED, int(2 * unit), cv2.LINE_AA)
            else:
                cv2.circle(canvas, centre, int(4 * unit), _OUTLINE, -1, cv2.LINE_AA)
                cv2.circle(canvas, centre, int(3 * unit), _MARKER_OTHER, -1, cv2.LINE_AA)
        _label_person(canvas, candidate, index, selected=selected, unit=unit)
    if person is not None and joint is not None and 0 <= person < len(pose.persons) and 0 <= joint < NUM_KEYPOINTS:
        x, y, score = pose.persons[person].keypoints[joint]
        if score > 0:
            centre = (int(round(x)), int(round(y)))
            cv2.circle(canvas, centre, int(12 * unit), _OUTLINE, int(5 * unit), cv2.LINE_AA)
            cv2.circle(canvas, centre, int(12 * unit), _MARKER_JOINT, int(3 * unit), cv2.LINE_AA)
            _text(canvas, COCO_KEYPOINT_NAMES[joint].replace("_", " "), (centre[0] + int(16 * unit), centre[1]), unit)
    return canvas


def _text(canvas: np.ndarray, text: str, origin: tuple[int, int], unit: float) -> None:
    h, w = canvas.shape[:2]
    scale = 0.5 * unit
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x = min(max(origin[0], 2), w - tw - 2)  # keep the label inside the canvas
    y = min(max(origin[1] + th // 2, th + 2), h - 2)
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, _OUTLINE, int(3 * unit), cv2.LINE_AA)
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, _MARKER_SELECTED, max(1, int(unit)), cv2.LINE_AA)


def _label_person(canvas: np.ndarray, person: Person, index: int, *, selected: bool, unit: float) -> None:
    vis = person.keypoints[person.visible]
    if not len(vis):
        return
    x, y = float(vis[:, 0].mean()), float(vis[:, 1].min())
    text = f"P{index + 1}" + (" (selected)" if selected else "")
    _text(canvas, text, (int(x) - int(12 * unit), int(y) - int(22 * unit)), unit)


def render_view(pose_json: str, person: int | None, joint: int | None, backdrop: Backdrop | None) -> np.ndarray:
    """The editor canvas for a pose given as JSON: the skeleton image itself when one is loaded, else
    `render_editor` over the photo (if any)."""
    if backdrop is not None and backdrop.skeleton:
        return backdrop.image
    photo = backdrop.image if backdrop is not None else None
    return render_editor(pose_from_json(pose_json), person=person, joint=joint, backdrop=photo)


def person_choices(pose: Pose) -> list[tuple[str, int]]:
    """Dropdown choices (label, 0-based index) for the people of a pose."""
    return [(f"Person {i + 1}", i) for i in range(len(pose.persons))]


# ---------------------------------------------------------------------------------------------------- conversions
def pose_to_json(pose: Pose) -> str:
    """Serialise a pose as the plain pose JSON of `ldm.pose.io` (`{"width", "height", "persons"}`)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pose.json"
        save_pose(pose, path)
        return path.read_text()


def pose_from_json(text: str) -> Pose:
    """Parse a pose from JSON text in any format `ldm.pose.io.load_pose` reads (plain, OpenPose, COCO).

    Raises:
        ValueError: empty or malformed JSON, with a one-line reason.
    """
    if not text or not text.strip():
        raise ValueError("The pose JSON is empty.")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pose.json"
        path.write_text(text)
        try:
            pose = load_pose(path)
        except ValueError as err:
            raise ValueError(_first_line(str(err)).replace(str(path), "pose JSON")) from None
    check_canvas_size(pose.width, pose.height, what="pose")
    return pose


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else message


def import_pose_file(path: str | Path) -> PoseImport:
    """Load a pose file (.npz or JSON) into the editor frame.

    Raises:
        ValueError: unreadable, malformed, or absurdly sized pose (the message names the file, not its folder).
    """
    path = Path(path)
    try:
        pose = load_pose(path)
        check_canvas_size(pose.width, pose.height, what=f"pose in {path.name}")
    except (ValueError, OSError) as err:
        raise ValueError(_first_line(str(err)).replace(str(path), path.name)) from None
    return PoseImport(pose=fit_to_editor(pose))


def read_image(image: ImageLike) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image from a path (EXIF orientation applied, as phones store photos), PIL or array.

    Raises:
        ValueError: not a readable image; the message names the file, not its folder.
    """
    if not isinstance(image, (str, Path)):
        return to_rgb_uint8(image)
    path = Path(image)
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb_uint8(ImageOps.exif_transpose(im))
    except (OSError, ValueError, Image.DecompressionBombError) as err:  # UnidentifiedImageError is an OSError
        raise ValueError(f"{path.name} is not a readable image ({type(err).__name__}).") from None


def import_image(image: ImageLike, *, kind: str = "auto", detector: PoseDetector | None = None) -> PoseImport:
    """Turn an uploaded image into an editor pose: a photo is run through the detector, a skeleton kept as is.

    Args:
        image: path, PIL image or array.
        kind: "photo", "skeleton", or "auto" (skeleton when the image is mostly black, `looks_like_skeleton`).
        detector: object with `detect(image) -> list[Person]`; without one a photo gives an empty pose.

    Returns:
        `PoseImport`: for a photo, the detected pose (empty with a message when nobody is found) over the photo;
        for a skeleton, `pose=None` (keep the editable pose) and the skeleton image as backdrop.

    Raises:
        ValueError: unreadable image or absurd size.
    """
    if kind not in ("auto", "photo", "skeleton"):
        raise ValueError(f"Unknown image kind {kind!r}; choose 'auto', 'photo' or 'skeleton'.")
    rgb = read_image(image)
    src_h, src_w = rgb.shape[:2]
    check_canvas_size(src_w, src_h)
    h, w = editor_size(src_h, src_w)
    if kind == "auto":
        kind = "skeleton" if looks_like_skeleton(rgb) else "photo"
    if kind == "skeleton":
        message = "Skeleton image: it is used as the pose map as is (clear it to edit the pose again)."
        return PoseImport(None, _resize(rgb, w, h, nearest=True), skeleton=True, message=message)
    backdrop = _resize(rgb, w, h)
    if detector is None:
        message = "No pose detector is configured (start the demo with --detector): edit the pose by hand."
        return PoseImport(empty_pose(w, h), backdrop, message=message)
    persons = detector.detect(rgb)
    logger.info("Detected %d person(s) in the uploaded photo.", len(persons))
    if not persons:
        message = (
            "No person detected in the photo: add people with 'Add person' and place their joints, or load a pose."
        )
        return PoseImport(empty_pose(w, h), backdrop, message=message)
    return PoseImport(rescale_pose(Pose(list(persons), width=src_w, height=src_h), w, h), backdrop)


def start_pose(preset: Path | None) -> Pose:
    """The editor's first pose: the preset (in the editor frame), or an empty canvas when it is missing or broken."""
    if preset is None:
        return empty_pose()
    try:
        return import_pose_file(preset).pose or empty_pose()
    except ValueError as err:
        logger.warning("Pose preset %s is unusable, starting from an empty pose: %s", preset, err)
        return empty_pose()


class SerialDetector:
    """Run a pose detector's `detect` under a lock: Gradio serves events from worker threads and a MediaPipe
    graph (like most detectors) is not thread-safe.

    Args:
        detector: object with `detect(image) -> list[Person]`.
    """

    def __init__(self, detector: PoseDetector):
        self.detector = detector
        self._lock = threading.Lock()

    def detect(self, image: ImageLike) -> list[Person]:
        """`detector.detect(image)`, one call at a time."""
        with self._lock:
            return self.detector.detect(image)


def list_presets(folder: str | Path) -> dict[str, Path]:
    """Pose presets: {name: path} of the .json/.npz files in `folder` (empty when the folder is missing)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".json", ".npz") and p.is_file())
    return {p.stem.replace("_", " "): p for p in files}
