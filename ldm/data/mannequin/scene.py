"""A mannequin scene: its caption, 1-3 posed figures laid out on the image, their body parts and COCO-17 labels.

Labels follow COCO's conventions:

* Joint coordinates are image pixels (x right, y down); the figure's own left joints are COCO's "left_*".
* Score 1 = labelled: the joint is inside the image (`0 <= x, y < size`), including joints **occluded** by
  another figure or by a non-adjacent body part of the same figure (COCO v=1, "labelled but not visible").
  `Figure.occluded` marks them; the validation COCO file writes them with v=1, the HumanSD npz with score 1.
* Score 0 = not labelled: the joint is outside the image (truncated), or it is a face point on the far side of
  the head (an ear in profile, eyes and nose from behind), which annotators cannot place.

Every figure keeps at least 3 labelled, unoccluded joints; layouts that break this are redrawn.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ldm.data.mannequin.captions import CaptionSpec, build_caption, sample_caption_spec
from ldm.data.mannequin.draw import MIN_RADIUS, Part, PartKind, rasterize_ids
from ldm.data.mannequin.kinematics import (
    FACE_JOINTS,
    BodyShape,
    Point,
    Skeleton3D,
    View,
    pose_skeleton,
    project,
    sample_angles,
    sample_body_shape,
    sample_view,
)
from ldm.pose.keypoints import NUM_KEYPOINTS, Person, Pose

logger = logging.getLogger(__name__)

MIN_SIZE, MAX_SIZE = 32, 1024
MIN_LABELLED_JOINTS = 3
_LAYOUT_TRIES = 12
# Figure height as a fraction of the image side, by number of figures.
_HEIGHT_FRACTION = {1: (0.5, 0.9), 2: (0.4, 0.7), 3: (0.35, 0.6)}


@dataclass(frozen=True)
class Figure:
    """One figure in image pixels.

    Args:
        keypoints: (17, 3) float32 COCO-17 (x, y, score), score 1 labelled / 0 not labelled.
        occluded: (17,) bool, labelled joints hidden behind another part (COCO v=1).
        parts: body parts in draw order (back to front).
        height: standing height in pixels (the figure's scale).
        view: yaw and roll it is seen with.
    """

    keypoints: np.ndarray
    occluded: np.ndarray
    parts: tuple[Part, ...]
    height: float
    view: View


@dataclass(frozen=True)
class Scene:
    """Everything needed to render and label one image.

    Args:
        spec: what the caption says.
        size: image side in pixels.
        figures: the figures in draw order (back to front).
        texture_seed: seed of the style's textures (paper grain, brush strokes, bleeding edges).
    """

    spec: CaptionSpec
    size: int
    figures: tuple[Figure, ...]
    texture_seed: int

    @property
    def caption(self) -> str:
        """The prompt of the image."""
        return build_caption(self.spec)

    @property
    def parts(self) -> tuple[Part, ...]:
        """All body parts in draw order."""
        return tuple(part for figure in self.figures for part in figure.parts)

    @property
    def pose(self) -> Pose:
        """The COCO-17 labels as a `Pose` (person score 1.0)."""
        return Pose([Person(f.keypoints.copy(), score=1.0) for f in self.figures], width=self.size, height=self.size)


def check_size(size: int) -> int:
    """Validate an image side: an integer in [32, 1024] and a multiple of 8 (the VAE downsamples by 8)."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        raise ValueError(f"size must be an integer number of pixels; got {size!r}.")
    if not MIN_SIZE <= size <= MAX_SIZE or size % 8:
        raise ValueError(f"size must be a multiple of 8 between {MIN_SIZE} and {MAX_SIZE}; got {size}.")
    return int(size)


_FACE = frozenset(FACE_JOINTS)


@dataclass(frozen=True)
class _PartMaker:
    """Makes the parts of one figure from its projected points (pixels) and depths (units of height)."""

    xy: np.ndarray
    z: np.ndarray
    figure: int
    torso_z: float

    def point(self, index: int) -> tuple[float, float]:
        return float(self.xy[index, 0]), float(self.xy[index, 1])

    def part(self, name: str, kind: PartKind, p0: tuple[float, float], depth: float, **fields: object) -> Part:
        tint = min(1.06, max(0.8, 1.0 + 1.5 * (depth - self.torso_z)))  # parts behind the torso are darker
        return Part(name, kind, p0, depth=depth, figure=self.figure, tint=tint, **fields)

    def capsule(
        self, name: str, a: int, b: int, radius: float, joints: frozenset[int], lift: float = 0.0, marked: bool = False
    ) -> Part:
        depth = float(self.z[a] + self.z[b]) / 2 + lift
        p1, radius = self.point(b), max(radius, MIN_RADIUS)
        fields = {"p1": p1, "radius": radius, "joints": joints, "marked": marked}
        return self.part(name, PartKind.CAPSULE, self.point(a), depth, **fields)

    def disc(self, name: str, point: int, radius: float, *, lift: float = 0.0, detail: bool = False) -> Part:
        depth = float(self.z[point]) + lift
        return self.part(name, PartKind.DISC, self.point(point), depth, radius=radius, joints=_FACE, detail=detail)


def _torso(xy: np.ndarray, z: np.ndarray, shape: BodyShape, scale: float, figure: int) -> Part:
    """The torso ellipse spanning shoulders to hips, wide enough for the chest seen in profile."""
    shoulders, hips = (xy[5] + xy[6]) / 2, (xy[11] + xy[12]) / 2
    axis = shoulders - hips
    half_length = float(np.hypot(*axis)) / 2 + 0.03 * scale
    widths = (np.hypot(*(xy[5] - xy[6])) / 2, np.hypot(*(xy[11] - xy[12])) / 2, shape.torso_depth * scale)
    return Part(
        name="torso",
        kind=PartKind.ELLIPSE,
        p0=(float(shoulders[0] + hips[0]) / 2, float(shoulders[1] + hips[1]) / 2),
        axes=(max(half_length, MIN_RADIUS), max(float(max(widths)) * 1.05, MIN_RADIUS)),
        angle=float(np.degrees(np.arctan2(axis[1], axis[0]))),
        depth=float(z[[5, 6, 11, 12]].mean()) - 0.03,  # slightly back, so arms at the sides overlap it
        figure=figure,
        joints=frozenset({5, 6, 11, 12}),
    )


def _body_parts(
    xy: np.ndarray, z: np.ndarray, face: np.ndarray, shape: BodyShape, scale: float, figure: int, mark_left: bool
) -> list[Part]:
    """Parts of one figure from its projected points (pixels), sorted back to front; `mark_left` marks the left
    arm, hand, leg and foot."""
    s = scale
    torso = _torso(xy, z, shape, s, figure)
    make = _PartMaker(xy, z, figure, torso.depth)
    parts = [
        torso,
        make.capsule("shoulders", 5, 6, shape.arm_radius * s * 1.1, frozenset({5, 6})),
        make.capsule("hips", 11, 12, shape.thigh_radius * s, frozenset({11, 12})),
        make.capsule("neck", Point.NECK, Point.HEAD, shape.neck_radius * s, _FACE, lift=-0.05),
        make.disc("hair", Point.HAIR, max(shape.head_radius * s * 0.92, MIN_RADIUS)),
        make.disc("head", Point.HEAD, max(shape.head_radius * s, MIN_RADIUS)),
    ]
    for side, (sh, el, wr, hand, hip, kn, an, toe) in (
        ("left", (5, 7, 9, Point.LEFT_HAND, 11, 13, 15, Point.LEFT_TOE)),
        ("right", (6, 8, 10, Point.RIGHT_HAND, 12, 14, 16, Point.RIGHT_TOE)),
    ):
        m = mark_left and side == "left"
        parts += [
            make.capsule(f"{side}_upper_arm", sh, el, shape.arm_radius * s, frozenset({sh, el}), marked=m),
            make.capsule(f"{side}_forearm", el, wr, shape.forearm_radius * s, frozenset({el, wr}), marked=m),
            make.capsule(f"{side}_hand", wr, hand, shape.forearm_radius * s * 1.1, frozenset({wr}), marked=m),
            make.capsule(f"{side}_thigh", hip, kn, shape.thigh_radius * s, frozenset({hip, kn}), marked=m),
            make.capsule(f"{side}_shank", kn, an, shape.shank_radius * s, frozenset({kn, an}), marked=m),
            make.capsule(f"{side}_foot", an, toe, shape.shank_radius * s * 0.8, frozenset({an}), marked=m),
        ]
    head_z = float(z[Point.HEAD])
    for joint in (1, 2):  # eyes on top of the head, when they face the camera
        if face[joint]:
            lift = head_z + 1.0 - float(z[joint])
            parts.append(make.disc("eye", joint, max(0.011 * s, 0.5), lift=lift, detail=True))
    return sorted(parts, key=lambda p: p.depth)  # stable: hair before head on ties


@dataclass(frozen=True)
class _Posed:
    """A figure before placement: projected at height 1 around the origin."""

    skeleton: Skeleton3D
    view: View
    xy: np.ndarray  # (NUM_POINTS, 2)
    z: np.ndarray  # (NUM_POINTS,)
    face: np.ndarray  # (5,) face-point visibility
    lo: np.ndarray  # (2,) bounding box corner, including head and toes
    hi: np.ndarray


def _posed(rng: np.random.Generator, spec: CaptionSpec) -> _Posed:
    skeleton = pose_skeleton(sample_body_shape(rng), sample_angles(rng, spec.action))
    view = sample_view(rng, spec.action)
    xy, z, face = project(skeleton, view)
    r = skeleton.shape.head_radius
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    lo = np.minimum(lo, xy[Point.HEAD] - r)
    hi = np.maximum(hi, xy[Point.HEAD] + r)
    return _Posed(skeleton, view, xy, z, face, lo, hi)


def _labels(xy: np.ndarray, face: np.ndarray, size: int) -> np.ndarray:
    """(17, 3) keypoints with score 1 for joints inside the image whose face point (if any) faces the camera."""
    kpts = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)
    kpts[:, :2] = xy[:NUM_KEYPOINTS]
    inside = (kpts[:, 0] >= 0) & (kpts[:, 0] < size) & (kpts[:, 1] >= 0) & (kpts[:, 1] < size)
    inside[list(FACE_JOINTS)] &= face
    kpts[:, 2] = inside
    return kpts


def _occlusion(parts: list[Part], keypoints: list[np.ndarray], size: int) -> list[np.ndarray]:
    """Per figure, which labelled joints lie under a part of another figure or a non-adjacent own part."""
    ids = rasterize_ids(parts, size)
    result = []
    for figure, kpts in enumerate(keypoints):
        occluded = np.zeros(NUM_KEYPOINTS, dtype=bool)
        for joint in np.flatnonzero(kpts[:, 2] > 0):
            owner = int(ids[int(kpts[joint, 1]), int(kpts[joint, 0])])
            if owner:
                part = parts[owner - 1]
                occluded[joint] = part.figure != figure or joint not in part.joints
        result.append(occluded)
    return result


def _layout(rng: np.random.Generator, posed: list[_Posed], size: int, safe: bool) -> list[tuple[float, np.ndarray]]:
    """(height in pixels, offset) per figure: figures side by side, jittered, sometimes pushed past an edge."""
    count = len(posed)
    lo_frac, hi_frac = _HEIGHT_FRACTION[count]
    placements = []
    for i, p in enumerate(posed):
        extent = p.hi - p.lo
        if safe:  # fits its slot entirely, so nothing is truncated or hidden by a neighbour
            scale = 0.9 * min(size / count / extent[0], size / extent[1], hi_frac * size)
            target = np.array([(i + 0.5) * size / count, size / 2])
        else:
            scale = rng.uniform(lo_frac, hi_frac) * size
            slot = size / count
            target = np.array([(i + 0.5 + rng.uniform(-0.2, 0.2)) * slot, size * (0.5 + rng.uniform(-0.15, 0.15))])
            if rng.random() < 0.15:  # truncated by an image edge
                axis = int(rng.integers(2))
                target[axis] += rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.45) * extent[axis] * scale
        offset = target - (p.lo + p.hi) / 2 * scale
        placements.append((float(scale), offset))
    return placements


def _place(
    posed: list[_Posed],
    placements: list[tuple[float, np.ndarray]],
    size: int,
    *,
    mark_left: bool,
    check: bool = True,
) -> list[Figure] | None:
    """Figures in draw order with labels and parts; None (when `check`) if one keeps < 3 visible joints."""
    bottoms = [(p.hi[1] * s + off[1]) for p, (s, off) in zip(posed, placements)]
    order = np.argsort(bottoms, kind="stable")  # lower in the image = nearer = drawn later
    parts, keypoints, items = [], [], []
    for figure, index in enumerate(order):
        p, (scale, offset) = posed[index], placements[index]
        xy = p.xy * scale + offset
        kpts = _labels(xy, p.face, size)
        if check and kpts[:, 2].sum() < MIN_LABELLED_JOINTS:
            return None
        body = _body_parts(xy, p.z, p.face, p.skeleton.shape, scale, figure, mark_left)
        parts += body
        keypoints.append(kpts)
        items.append((body, scale, p.view))
    figures = []
    for kpts, occluded, (body, scale, view) in zip(keypoints, _occlusion(parts, keypoints, size), items):
        if check and (kpts[:, 2].astype(bool) & ~occluded).sum() < MIN_LABELLED_JOINTS:
            return None
        figures.append(Figure(kpts, occluded, tuple(body), scale, view))
    return figures


def sample_scene(rng: np.random.Generator, *, size: int = 128, mark_left: bool = True) -> Scene:
    """Draw a random scene: caption, poses, layout and labels.

    Args:
        rng: the random generator (all randomness of the scene comes from it).
        size: image side in pixels (multiple of 8 in [32, 1024]).
        mark_left: draw each figure's left arm and leg in the marking tone (`draw.marking_tone`), as the shipped
            world does; False gives the unmarked figures of earlier worlds. It draws no random number, so the same
            `rng` gives the same caption, poses and labels either way.

    Returns:
        The scene.
    """
    size = check_size(size)
    spec = sample_caption_spec(rng)
    posed = [_posed(rng, spec) for _ in range(spec.count)]
    figures = None
    for attempt in range(_LAYOUT_TRIES + 1):
        figures = _place(posed, _layout(rng, posed, size, safe=attempt == _LAYOUT_TRIES), size, mark_left=mark_left)
        if figures is not None:
            break
    if figures is None:  # pathological self-occlusion even in the safe layout: keep it, but say so
        logger.warning("sample_scene: no layout keeps %d visible joints per figure.", MIN_LABELLED_JOINTS)
        figures = _place(posed, _layout(rng, posed, size, safe=True), size, mark_left=mark_left, check=False)
    return Scene(spec=spec, size=size, figures=tuple(figures), texture_seed=int(rng.integers(2**31)))
