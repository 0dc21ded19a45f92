"""A small kinematic human model: body proportions, joint angles with anatomical limits and forward kinematics.

The body lives in its own 3D frame, in units of standing height: x points to the figure's **left**, y up,
z forward (the way the figure faces), pelvis at the origin. A camera looking at a figure with yaw 0 sees its
face, so the figure's left side (COCO "left_*" joints) appears on the image's right, as in COCO annotations.

Angles are in degrees:

* torso: pitch (lean forward > 0), roll (bend to the figure's left > 0), twist (shoulders turn left > 0);
* neck: yaw (look left > 0), pitch (look down > 0);
* shoulder: abduction (arm raised sideways, 0 = hanging, 180 = overhead) and flexion (raised forwards,
  negative = swung back); elbow flexion (0 = straight) bending in a plane between forward (twist 0) and up
  (twist 90);
* hip: flexion (thigh forwards) and abduction (sideways); knee flexion bends the shank backwards.

Each `Action` has its own prior over these angles; every sample is clipped to `ANGLE_LIMITS`.

References:
    Proportions after the "8 heads" canon (head ~ 1/8 of height, shoulders ~ 2 heads wide); joint ranges after
        the AAOS normal range-of-motion tables (shoulder flexion 180, elbow 150, hip flexion 120, knee 135-150).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import IntEnum

import numpy as np

from ldm.data.mannequin.captions import Action


class Point(IntEnum):
    """Extra points of `Skeleton3D.points` after the 17 COCO joints."""

    HEAD = 17
    NECK = 18
    LEFT_HAND = 19
    RIGHT_HAND = 20
    LEFT_TOE = 21
    RIGHT_TOE = 22
    PELVIS = 23
    HAIR = 24


NUM_POINTS = 25
FACE_JOINTS = (0, 1, 2, 3, 4)

ANGLE_LIMITS: dict[str, tuple[float, float]] = {
    "torso_pitch": (-20.0, 45.0),
    "torso_roll": (-25.0, 25.0),
    "torso_twist": (-40.0, 40.0),
    "neck_yaw": (-70.0, 70.0),
    "neck_pitch": (-35.0, 40.0),
    "shoulder_abduction": (-15.0, 180.0),
    "shoulder_flexion": (-60.0, 180.0),
    "elbow_flexion": (0.0, 150.0),
    "elbow_twist": (0.0, 90.0),
    "hip_flexion": (-30.0, 125.0),
    "hip_abduction": (-15.0, 50.0),
    "knee_flexion": (0.0, 150.0),
}
_PAIRED = ("shoulder_abduction", "shoulder_flexion", "elbow_flexion", "elbow_twist")
_PAIRED += ("hip_flexion", "hip_abduction", "knee_flexion")


@dataclass(frozen=True)
class BodyShape:
    """Segment lengths and half-thicknesses, in units of standing height.

    Args:
        torso: pelvis to neck base.
        neck: neck base to the bottom of the head.
        head_radius: radius of the (spherical) head.
        shoulder_half: half the shoulder width.
        hip_half: half the hip width.
        upper_arm, forearm, hand: arm segment lengths (hand: wrist to finger tips).
        thigh, shank, foot: leg segment lengths (foot: ankle to toes).
        arm_radius, forearm_radius, thigh_radius, shank_radius, neck_radius: capsule half-thicknesses.
        torso_depth: half the chest depth (the torso's half-width seen in profile).
    """

    torso: float = 0.30
    neck: float = 0.05
    head_radius: float = 0.07
    shoulder_half: float = 0.115
    hip_half: float = 0.085
    upper_arm: float = 0.17
    forearm: float = 0.15
    hand: float = 0.05
    thigh: float = 0.245
    shank: float = 0.245
    foot: float = 0.075
    arm_radius: float = 0.032
    forearm_radius: float = 0.026
    thigh_radius: float = 0.048
    shank_radius: float = 0.035
    neck_radius: float = 0.03
    torso_depth: float = 0.085


def sample_body_shape(rng: np.random.Generator) -> BodyShape:
    """Jitter the default proportions: lengths +-7 %, head size -10..+12 %, build (thickness) x0.85..1.2.

    Args:
        rng: the random generator.

    Returns:
        The shape.
    """
    base = BodyShape()
    limbs, torso, head = rng.uniform(0.93, 1.07), rng.uniform(0.93, 1.07), rng.uniform(0.9, 1.12)
    build = rng.uniform(0.85, 1.2)
    scale = {"torso": torso, "neck": torso, "head_radius": head, "shoulder_half": build**0.5, "hip_half": build**0.5}
    for name in ("upper_arm", "forearm", "hand", "thigh", "shank", "foot"):
        scale[name] = limbs
    for f in fields(base):
        if (f.name.endswith("radius") and f.name != "head_radius") or f.name == "torso_depth":
            scale[f.name] = build
    return replace(base, **{name: getattr(base, name) * factor for name, factor in scale.items()})


@dataclass(frozen=True)
class JointAngles:
    """Joint angles in degrees (see the module docstring); paired joints are (left, right)."""

    torso_pitch: float = 0.0
    torso_roll: float = 0.0
    torso_twist: float = 0.0
    neck_yaw: float = 0.0
    neck_pitch: float = 0.0
    shoulder_abduction: tuple[float, float] = (10.0, 10.0)
    shoulder_flexion: tuple[float, float] = (0.0, 0.0)
    elbow_flexion: tuple[float, float] = (10.0, 10.0)
    elbow_twist: tuple[float, float] = (0.0, 0.0)
    hip_flexion: tuple[float, float] = (0.0, 0.0)
    hip_abduction: tuple[float, float] = (5.0, 5.0)
    knee_flexion: tuple[float, float] = (0.0, 0.0)

    def clipped(self) -> JointAngles:
        """The same angles clipped to `ANGLE_LIMITS`."""
        values = {}
        for f in fields(self):
            lo, hi = ANGLE_LIMITS[f.name]
            value = getattr(self, f.name)
            if f.name in _PAIRED:
                values[f.name] = tuple(float(np.clip(v, lo, hi)) for v in value)
            else:
                values[f.name] = float(np.clip(value, lo, hi))
        return JointAngles(**values)

    def within_limits(self) -> bool:
        """Whether every angle lies inside `ANGLE_LIMITS`."""
        return self == self.clipped()


def _pair(rng: np.random.Generator, lo: float, hi: float) -> tuple[float, float]:
    return float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))


def _angles_standing(rng: np.random.Generator) -> dict:
    return {
        "torso_pitch": rng.uniform(-4, 8),
        "shoulder_abduction": _pair(rng, 4, 25),
        "shoulder_flexion": _pair(rng, -15, 25),
        "elbow_flexion": _pair(rng, 0, 35),
        "hip_flexion": _pair(rng, -5, 10),
        "hip_abduction": _pair(rng, 0, 12),
        "knee_flexion": _pair(rng, 0, 12),
    }


def _angles_walking(rng: np.random.Generator) -> dict:
    swing = rng.uniform(18, 38)
    legs = np.array([swing, -swing * rng.uniform(0.5, 0.9)])
    knees = np.array([rng.uniform(0, 15), rng.uniform(15, 50)])
    if rng.random() < 0.5:
        legs, knees = legs[::-1], knees[::-1]
    arms = -legs * rng.uniform(0.6, 1.0)
    return {
        "torso_pitch": rng.uniform(0, 8),
        "shoulder_abduction": _pair(rng, 3, 12),
        "shoulder_flexion": tuple(arms),
        "elbow_flexion": _pair(rng, 10, 45),
        "hip_flexion": tuple(legs),
        "hip_abduction": _pair(rng, 0, 6),
        "knee_flexion": tuple(knees),
    }


def _angles_dancing(rng: np.random.Generator) -> dict:
    lifted = [rng.uniform(10, 90), rng.uniform(0, 45), rng.uniform(20, 120)]
    planted = [rng.uniform(-15, 10), rng.uniform(0, 25), rng.uniform(0, 20)]
    left, right = (lifted, planted) if rng.random() < 0.5 else (planted, lifted)
    return {
        "torso_pitch": rng.uniform(-10, 15),
        "torso_roll": rng.uniform(-18, 18),
        "torso_twist": rng.uniform(-30, 30),
        "shoulder_abduction": _pair(rng, 20, 170),
        "shoulder_flexion": _pair(rng, -30, 140),
        "elbow_flexion": _pair(rng, 0, 120),
        "elbow_twist": _pair(rng, 0, 90),
        "hip_flexion": (left[0], right[0]),
        "hip_abduction": (left[1], right[1]),
        "knee_flexion": (left[2], right[2]),
    }


def _angles_jumping(rng: np.random.Generator) -> dict:
    if rng.random() < 0.5:  # star jump: limbs spread
        return {
            "shoulder_abduction": _pair(rng, 120, 170),
            "shoulder_flexion": _pair(rng, -10, 20),
            "elbow_flexion": _pair(rng, 0, 25),
            "hip_flexion": _pair(rng, -5, 15),
            "hip_abduction": _pair(rng, 25, 45),
            "knee_flexion": _pair(rng, 0, 15),
        }
    return {  # tuck jump: arms up, knees pulled up
        "torso_pitch": rng.uniform(0, 15),
        "shoulder_abduction": _pair(rng, 10, 40),
        "shoulder_flexion": _pair(rng, 120, 175),
        "elbow_flexion": _pair(rng, 0, 40),
        "hip_flexion": _pair(rng, 35, 80),
        "hip_abduction": _pair(rng, 5, 20),
        "knee_flexion": _pair(rng, 50, 110),
    }


def _angles_sitting(rng: np.random.Generator) -> dict:
    return {
        "torso_pitch": rng.uniform(-12, 12),
        "shoulder_abduction": _pair(rng, 5, 25),
        "shoulder_flexion": _pair(rng, 10, 60),
        "elbow_flexion": _pair(rng, 20, 90),
        "elbow_twist": _pair(rng, 0, 30),
        "hip_flexion": _pair(rng, 75, 100),
        "hip_abduction": _pair(rng, 3, 20),
        "knee_flexion": _pair(rng, 70, 105),
    }


_ACTION_PRIORS = {
    Action.STANDING: _angles_standing,
    Action.WALKING: _angles_walking,
    Action.DANCING: _angles_dancing,
    Action.JUMPING: _angles_jumping,
    Action.SITTING: _angles_sitting,
}


def sample_angles(rng: np.random.Generator, action: Action | str) -> JointAngles:
    """Draw joint angles for an action, clipped to `ANGLE_LIMITS`.

    Args:
        rng: the random generator.
        action: what the figure does.

    Returns:
        The angles.
    """
    values = {
        "torso_roll": rng.uniform(-5, 5),
        "torso_twist": rng.uniform(-10, 10),
        "neck_yaw": rng.uniform(-35, 35),
        "neck_pitch": rng.uniform(-10, 15),
        "elbow_twist": _pair(rng, 0, 60),
    }
    values.update(_ACTION_PRIORS[Action(action)](rng))
    values = {k: tuple(float(x) for x in v) if isinstance(v, tuple) else float(v) for k, v in values.items()}
    return JointAngles(**values).clipped()


def _rot_x(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(deg: float) -> np.ndarray:
    """Rotation about the vertical axis; yaw 90 turns a figure facing the viewer towards the image's right."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _orthogonal(v: np.ndarray, axis: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Unit component of `v` orthogonal to the unit `axis` (`fallback`'s when `v` is nearly parallel)."""
    for candidate in (v, fallback):
        ortho = candidate - float(candidate @ axis) * axis
        if np.linalg.norm(ortho) > 1e-3:
            return _unit(ortho)
    return _unit(np.cross(axis, [1.0, 0.0, 0.0]))


def _limb_direction(side: float, abduction: float, flexion: float) -> np.ndarray:
    """Unit direction of an upper limb hanging down, raised sideways by `abduction` and forwards by `flexion`."""
    a, f = np.radians(abduction), np.radians(flexion)
    return np.array([side * np.sin(a), -np.cos(a) * np.cos(f), np.cos(a) * np.sin(f)])


_UP, _FORWARD = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])


def _arm(points: np.ndarray, shape: BodyShape, angles: JointAngles, torso: np.ndarray, side: int) -> None:
    sign = 1.0 if side == 0 else -1.0
    shoulder, elbow, wrist, hand = (5, 7, 9, Point.LEFT_HAND) if side == 0 else (6, 8, 10, Point.RIGHT_HAND)
    upper = _limb_direction(sign, angles.shoulder_abduction[side], angles.shoulder_flexion[side])
    twist = np.radians(angles.elbow_twist[side])
    bend = _orthogonal(np.cos(twist) * _FORWARD + np.sin(twist) * _UP, upper, _UP)
    flexion = np.radians(angles.elbow_flexion[side])
    lower = np.cos(flexion) * upper + np.sin(flexion) * bend
    points[elbow] = points[shoulder] + torso @ upper * shape.upper_arm
    points[wrist] = points[elbow] + torso @ lower * shape.forearm
    points[hand] = points[wrist] + torso @ lower * shape.hand


def _leg(points: np.ndarray, shape: BodyShape, angles: JointAngles, side: int) -> None:
    sign = 1.0 if side == 0 else -1.0
    hip, knee, ankle, toe = (11, 13, 15, Point.LEFT_TOE) if side == 0 else (12, 14, 16, Point.RIGHT_TOE)
    thigh = _limb_direction(sign, angles.hip_abduction[side], angles.hip_flexion[side])
    backward = _orthogonal(np.array([0.0, -thigh[2], thigh[1]]), thigh, -_FORWARD)
    flexion = np.radians(angles.knee_flexion[side])
    shank = np.cos(flexion) * thigh + np.sin(flexion) * backward
    foot = _orthogonal(_FORWARD - 0.25 * _UP, shank, _UP)
    points[hip] = np.array([sign * shape.hip_half, 0.0, 0.0])
    points[knee] = points[hip] + thigh * shape.thigh
    points[ankle] = points[knee] + shank * shape.shank
    points[toe] = points[ankle] + foot * shape.foot


# Face points relative to the head centre, in the head frame, for the default head radius 0.07.
_FACE_OFFSETS = np.array(
    [
        [0.0, -0.012, 0.058],  # nose
        [0.027, 0.010, 0.050],  # left eye
        [-0.027, 0.010, 0.050],  # right eye
        [0.060, 0.000, -0.008],  # left ear
        [-0.060, 0.000, -0.008],  # right ear
    ]
)
# Outward surface normals of the face points in the head frame (used for the visibility test).
_FACE_NORMALS = np.array(
    [[0.0, 0.0, 1.0], [0.45, 0.1, 0.89], [-0.45, 0.1, 0.89], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]],
)
_HAIR_OFFSET = np.array([0.0, 0.018, -0.022])


@dataclass(frozen=True)
class Skeleton3D:
    """A posed body in its own frame (x = figure's left, y up, z forward; units of height).

    Args:
        points: (NUM_POINTS, 3) the 17 COCO joints then the `Point` extras.
        face_normals: (5, 3) unit outward normals of nose, eyes and ears.
        shape: the proportions used.
    """

    points: np.ndarray
    face_normals: np.ndarray
    shape: BodyShape


def pose_skeleton(shape: BodyShape, angles: JointAngles) -> Skeleton3D:
    """Forward kinematics: place every joint from the proportions and angles.

    Args:
        shape: segment lengths.
        angles: joint angles (not clipped here; use `JointAngles.clipped`).

    Returns:
        The posed skeleton.
    """
    points = np.zeros((NUM_POINTS, 3))
    torso = rot_y(angles.torso_twist) @ _rot_z(-angles.torso_roll) @ _rot_x(angles.torso_pitch)
    neck = torso @ np.array([0.0, shape.torso, 0.0])
    points[Point.NECK] = neck
    points[5] = neck + torso @ np.array([shape.shoulder_half, -0.025, 0.0])
    points[6] = neck + torso @ np.array([-shape.shoulder_half, -0.025, 0.0])
    for side in (0, 1):
        _arm(points, shape, angles, torso, side)
        _leg(points, shape, angles, side)
    head = torso @ rot_y(angles.neck_yaw) @ _rot_x(angles.neck_pitch)
    center = neck + torso @ np.array([0.0, shape.neck + 0.85 * shape.head_radius, 0.0])
    points[Point.HEAD] = center
    points[list(FACE_JOINTS)] = center + (_FACE_OFFSETS * (shape.head_radius / 0.07)) @ head.T
    points[Point.HAIR] = center + head @ (_HAIR_OFFSET * (shape.head_radius / 0.07))
    return Skeleton3D(points=points, face_normals=_FACE_NORMALS @ head.T, shape=shape)


def face_visibility(face_normals: np.ndarray) -> np.ndarray:
    """Which face points a camera on the +z axis sees (COCO annotators leave hidden face points unlabelled).

    Args:
        face_normals: (5, 3) outward normals in camera orientation (z towards the camera).

    Returns:
        (5,) bool: the nose unless the head is turned away, an eye when it faces the camera, an ear unless it is
        on the far side of the head.
    """
    thresholds = np.array([-0.1, 0.0, 0.0, -0.25, -0.25])
    return face_normals[:, 2] > thresholds


@dataclass(frozen=True)
class View:
    """How a figure is seen: `yaw` about its vertical axis (0 = facing the camera, 90 = facing image right) and
    in-plane `roll` of the image (0 = upright, 180 = upside down), both in degrees."""

    yaw: float
    roll: float


def sample_view(rng: np.random.Generator, action: Action | str) -> View:
    """Mostly frontal and upright figures, some profiles, back views, tilts and rare upside-down ones.

    Walking and sitting favour profile views, where those actions read best.

    Args:
        rng: the random generator.
        action: the figure's action.

    Returns:
        The view.
    """
    p_front, p_back = (0.12, 0.08) if Action(action) in (Action.WALKING, Action.SITTING) else (0.55, 0.15)
    u = rng.random()
    if u < p_front:
        yaw = rng.uniform(-50, 50)
    elif u < 1.0 - p_back:
        yaw = rng.choice([-1.0, 1.0]) * rng.uniform(50, 130)
    else:
        yaw = rng.uniform(130, 230)
    u = rng.random()
    if u < 0.82:
        roll = float(np.clip(rng.normal(0.0, 4.0), -10, 10))
    elif u < 0.97:
        roll = rng.choice([-1.0, 1.0]) * rng.uniform(15, 45)
    else:
        roll = 180.0 + rng.uniform(-20, 20)
    return View(yaw=float(yaw), roll=float(roll))


def project(skeleton: Skeleton3D, view: View) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthographic projection of a skeleton of height 1, centred on the origin of the image plane.

    Args:
        skeleton: the posed body.
        view: yaw and roll.

    Returns:
        (NUM_POINTS, 2) image-plane points (x right, y down), (NUM_POINTS,) depths (larger = nearer the camera)
        and (5,) face visibility.
    """
    rotated = skeleton.points @ rot_y(view.yaw).T
    c, s = np.cos(np.radians(view.roll)), np.sin(np.radians(view.roll))
    flat = np.stack([rotated[:, 0], -rotated[:, 1]], axis=1)  # y down
    xy = flat @ np.array([[c, s], [-s, c]])
    visible = face_visibility(skeleton.face_normals @ rot_y(view.yaw).T)
    return xy, rotated[:, 2], visible
