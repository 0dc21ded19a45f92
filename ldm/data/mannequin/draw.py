"""Drawing primitives of the mannequin world: body parts, their id raster, background patterns and noise.

Body parts are capsules (limbs, shoulder and hip girdles, neck, hands, feet), discs (head, hair, eyes) and an
ellipse (torso), drawn with OpenCV's anti-aliased primitives at 1/16-pixel precision. Backgrounds are a named
colour modulated by a pattern field in [-1, 1]. Everything random takes an explicit `numpy.random.Generator`.

References:
    OpenCV drawing functions (`line`, `circle`, `ellipse` with `shift`), https://docs.opencv.org/4.x/d6/d6e/group__imgproc__draw.html.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import cv2
import numpy as np

from ldm.data.mannequin.captions import Pattern

SHIFT = 4  # fractional bits of OpenCV drawing coordinates
_ONE = 1 << SHIFT
MIN_RADIUS = 1.0  # pixels; thinner parts would vanish at 128 x 128
# (relative size, brightness) of the nested shapes that shade a part like a lit tube; light from the upper left.
TUBE_LEVELS: tuple[tuple[float, float], ...] = ((1.0, 0.70), (0.78, 0.88), (0.5, 1.02), (0.22, 1.14))
_LIGHT = (-0.6, -0.8)
# Marking tone of marked parts (`marking_tone`): darker by this factor, or lighter for near-black bodies.
MARK_DARKEN, MARK_LIGHTEN, MARK_MIN_LUMA, MARK_MIN_CONTRAST = 0.6, 0.35, 60.0, 45.0
_LUMA = np.array([0.299, 0.587, 0.114])


class PartKind(StrEnum):
    """Shape of a body part."""

    CAPSULE = "capsule"
    DISC = "disc"
    ELLIPSE = "ellipse"


@dataclass(frozen=True, slots=True)
class Part:
    """One body part in image pixels.

    Args:
        name: e.g. "left_forearm" (for debugging and tests).
        kind: capsule (segment `p0`-`p1` of half-thickness `radius`), disc (centre `p0`, `radius`) or ellipse
            (centre `p0`, semi-axes `axes`, rotation `angle` in degrees).
        p0: (x, y) first end or centre.
        p1: (x, y) second end (capsules only).
        radius: half-thickness or disc radius, >= `MIN_RADIUS`.
        axes: ellipse semi-axes (ellipses only).
        angle: ellipse rotation in degrees.
        depth: larger is nearer the camera; parts are drawn in increasing depth.
        figure: index of the figure in draw order.
        joints: COCO joints this part is attached to (a joint covered by another part counts as occluded).
        tint: brightness factor (parts on the far side are darker).
        detail: small decorations (eyes) that take the outline colour instead of the body colour.
        marked: drawn in the figure's marking tone (`marking_tone`): the figure's left limbs in a world that
            marks sides, so that left and right stay readable at a scale a VAE keeps.
    """

    name: str
    kind: PartKind
    p0: tuple[float, float]
    p1: tuple[float, float] = (0.0, 0.0)
    radius: float = MIN_RADIUS
    axes: tuple[float, float] = (0.0, 0.0)
    angle: float = 0.0
    depth: float = 0.0
    figure: int = 0
    joints: frozenset[int] = frozenset()
    tint: float = 1.0
    detail: bool = False
    marked: bool = False


def _fixed(point: tuple[float, float] | np.ndarray) -> tuple[int, int]:
    return int(round(float(point[0]) * _ONE)), int(round(float(point[1]) * _ONE))


def draw_part(
    canvas: np.ndarray,
    part: Part,
    color: tuple[float, ...] | float,
    *,
    grow: float = 0.0,
    scale: float = 1.0,
    offset: tuple[float, float] = (0.0, 0.0),
    antialias: bool = True,
) -> None:
    """Draw a part filled with one colour, in place.

    Args:
        canvas: (H, W, C) or (H, W) uint8 image.
        part: the part.
        color: fill colour (C values or one value).
        grow: pixels added to the radius / semi-axes (outlines are a grown part drawn first).
        scale: factor on the radius / semi-axes (for the nested shading shapes).
        offset: (dx, dy) pixels the shape is moved by.
        antialias: LINE_AA when True, LINE_8 (exact coverage for id rasters) otherwise.
    """
    line = cv2.LINE_AA if antialias else cv2.LINE_8
    dx, dy = offset
    p0 = _fixed((part.p0[0] + dx, part.p0[1] + dy))
    if part.kind is PartKind.CAPSULE:
        p1 = _fixed((part.p1[0] + dx, part.p1[1] + dy))
        thickness = max(1, int(round(2.0 * (part.radius * scale + grow))))
        cv2.line(canvas, p0, p1, color, thickness, line, SHIFT)
    elif part.kind is PartKind.DISC:
        radius = max(1, int(round((part.radius * scale + grow) * _ONE)))
        cv2.circle(canvas, p0, radius, color, -1, line, SHIFT)
    else:
        axes = (
            max(1, int(round((part.axes[0] * scale + grow) * _ONE))),
            max(1, int(round((part.axes[1] * scale + grow) * _ONE))),
        )
        cv2.ellipse(canvas, p0, axes, part.angle, 0.0, 360.0, color, -1, line, SHIFT)


def draw_tube(canvas: np.ndarray, part: Part, color: np.ndarray, levels: tuple[tuple[float, float], ...]) -> None:
    """Draw a part shaded like a lit tube: nested shapes, brighter and shifted towards the light, in place.

    Args:
        canvas: (H, W, 3) uint8 RGB image.
        part: the part.
        color: (3,) float RGB in [0, 255] before shading.
        levels: (relative size, brightness) pairs from the outside in.
    """
    size = part.radius if part.kind is not PartKind.ELLIPSE else min(part.axes)
    for scale, brightness in levels:
        if scale < 1.0 and size * scale < 0.6:
            break
        shift = (1.0 - scale) * size * 0.45
        rgb = shade(color, brightness * part.tint, max(brightness - 0.9, 0.0) * 40.0)
        draw_part(canvas, part, rgb, scale=scale, offset=(shift * _LIGHT[0], shift * _LIGHT[1]))


def marking_tone(
    color: np.ndarray | tuple[float, ...], background: np.ndarray | tuple[float, ...] | None = None
) -> np.ndarray:
    """The tone of marked parts: the body colour darkened to 60% (same hue), or, for colours too dark to darken
    visibly (luma < 60, e.g. black), mixed 35% towards white. If that tone lies within 45 (max over channels) of the
    `background` colour, the stronger variant (darkened to 35%, or mixed 70% towards white) or the other direction
    is taken instead, whichever is first far enough from it (else the farthest): white figures on gray, say.

    Args:
        color: (3,) RGB in [0, 255].
        background: (3,) RGB in [0, 255] of the plain background, or None.

    Returns:
        (3,) float RGB in [0, 255].
    """
    rgb = np.asarray(color, dtype=np.float64)
    darker = [rgb * MARK_DARKEN, rgb * MARK_DARKEN**2]
    lighter = [rgb + MARK_LIGHTEN * (255.0 - rgb), rgb + 2 * MARK_LIGHTEN * (255.0 - rgb)]
    first, second = (lighter, darker) if float(rgb @ _LUMA) < MARK_MIN_LUMA else (darker, lighter)
    candidates = [first[0], first[1], second[0], second[1]]
    if background is None:
        return candidates[0]
    distances = [float(np.abs(c - np.asarray(background, dtype=np.float64)).max()) for c in candidates]
    far = [c for c, d in zip(candidates, distances, strict=True) if d >= MARK_MIN_CONTRAST]
    return far[0] if far else candidates[int(np.argmax(distances))]


def shade(color: np.ndarray | tuple[float, ...], factor: float, add: float = 0.0) -> tuple[float, ...]:
    """`color * factor + add` clipped to [0, 255], as a tuple for OpenCV (plain floats: this runs per part)."""
    return tuple(min(255.0, max(0.0, float(c) * factor + add)) for c in color)


def rasterize_ids(parts: list[Part] | tuple[Part, ...], size: int) -> np.ndarray:
    """Label raster: pixel = 1 + index of the last part drawn over it (0 = background).

    Args:
        parts: parts in draw order (at most 255).
        size: image side in pixels.

    Returns:
        (size, size) uint8 raster.
    """
    if len(parts) > 255:
        raise ValueError(f"rasterize_ids: at most 255 parts fit a uint8 raster; got {len(parts)}.")
    ids = np.zeros((size, size), dtype=np.uint8)
    for index, part in enumerate(parts):
        draw_part(ids, part, index + 1, antialias=False)
    return ids


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y), each (size, size) float32; cached and read-only."""
    coords = np.arange(size, dtype=np.float32) + 0.5
    x, y = np.meshgrid(coords, coords)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def smooth_noise(rng: np.random.Generator, size: int, cell: float) -> np.ndarray:
    """Low-frequency noise: a Gaussian grid of spacing `cell` pixels, bicubically upsampled, unit std.

    Args:
        rng: the random generator.
        size: output side in pixels.
        cell: grid spacing in pixels (larger = smoother).

    Returns:
        (size, size) float32, roughly zero mean and unit standard deviation.
    """
    n = max(2, int(np.ceil(size / max(cell, 1.0))) + 1)
    coarse = rng.standard_normal((n, n), dtype=np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return field / max(float(field.std()), 1e-6)


def stroke_noise(rng: np.random.Generator, size: int, *, angle: float, length: float) -> np.ndarray:
    """Brush-stroke texture: white noise smeared along `angle` by a line kernel of `length` pixels.

    Args:
        rng: the random generator.
        size: output side in pixels.
        angle: stroke direction in degrees.
        length: stroke length in pixels.

    Returns:
        (size, size) float32 with unit standard deviation.
    """
    k = max(3, int(round(length)) | 1)
    kernel = np.zeros((k, k), dtype=np.float32)
    c = k // 2
    dx, dy = np.cos(np.radians(angle)) * c, np.sin(np.radians(angle)) * c
    cv2.line(kernel, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0, 1)
    kernel /= kernel.sum()
    half = max(2, size // 2)
    noise = cv2.resize(rng.standard_normal((half, half), dtype=np.float32), (size, size))
    field = cv2.filter2D(noise, -1, kernel, borderType=cv2.BORDER_REFLECT)
    return field / max(float(field.std()), 1e-6)


def _soft_square(t: np.ndarray) -> np.ndarray:
    """Square wave of period 1 with anti-aliased edges, values in [-1, 1]."""
    return np.clip(2.5 * np.sin(2.0 * np.pi * t), -1.0, 1.0)


def pattern_field(pattern: Pattern | str, size: int, rng: np.random.Generator) -> np.ndarray:
    """The pattern of a background as a field in [-1, 1] (0 = the plain colour).

    Args:
        pattern: which pattern.
        size: side in pixels.
        rng: the random generator (angle, period, centre and noise are drawn from it).

    Returns:
        (size, size) float32 field.
    """
    pattern = Pattern(pattern)
    x, y = _grid(size)
    angle = np.radians(rng.uniform(0.0, 180.0))
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    if pattern is Pattern.PLAIN:
        return np.zeros((size, size), dtype=np.float32)
    if pattern is Pattern.GRADIENT:
        t = (x - size / 2) * c + (y - size / 2) * s
        return np.clip(t / (size / 2), -1.0, 1.0)
    if pattern is Pattern.STRIPED:
        period = rng.uniform(0.1, 0.22) * size
        return _soft_square((x * c + y * s) / period + rng.random())
    if pattern is Pattern.CHECKERED:
        period = rng.uniform(0.12, 0.25) * size
        tilt = np.radians(rng.uniform(-30.0, 30.0))
        ct, st = np.float32(np.cos(tilt)), np.float32(np.sin(tilt))
        return _soft_square((x * ct + y * st) / period) * _soft_square((y * ct - x * st) / period)
    if pattern is Pattern.SPECKLED:
        return np.clip(0.6 * smooth_noise(rng, size, size / 10), -1.0, 1.0)
    cx, cy = rng.uniform(0.3, 0.7) * size, rng.uniform(0.25, 0.55) * size
    radius = np.hypot(x - cx, y - cy) / (rng.uniform(0.6, 0.85) * size)
    return 1.0 - 2.0 * np.clip(radius, 0.0, 1.0) ** 1.5


# (multiplicative, additive) strength of each pattern on the background colour.
PATTERN_AMPLITUDE: dict[Pattern, tuple[float, float]] = {
    Pattern.PLAIN: (0.0, 0.0),
    Pattern.GRADIENT: (0.15, 0.05),
    Pattern.STRIPED: (0.13, 0.05),
    Pattern.CHECKERED: (0.13, 0.05),
    Pattern.SPECKLED: (0.12, 0.04),
    Pattern.GLOWING: (0.22, 0.06),
}


def paint_background(color: np.ndarray, field: np.ndarray, amplitude: tuple[float, float]) -> np.ndarray:
    """Colour modulated by a pattern field: c (1 + a f) + b f, clipped to [0, 1].

    The additive term keeps patterns visible on black, the multiplicative one on saturated colours.

    Args:
        color: (3,) float RGB in [0, 1].
        field: (H, W) pattern field in [-1, 1].
        amplitude: (a, b).

    Returns:
        (H, W, 3) float32 RGB in [0, 1].
    """
    a, b = amplitude
    color = np.asarray(color, dtype=np.float32)
    image = field[..., None] * (color * np.float32(a) + np.float32(b))  # = c (1 + a f) + b f - c
    image += color
    return np.clip(image, 0.0, 1.0, out=image)


def hatch_pattern(size: int, *, spacing: float, angle: float = 45.0) -> np.ndarray:
    """Parallel anti-aliased pencil lines, 1 on a line and 0 between lines.

    Args:
        size: side in pixels.
        spacing: distance between lines in pixels.
        angle: line direction in degrees.

    Returns:
        (size, size) float32 in [0, 1].
    """
    x, y = _grid(size)
    a = np.radians(angle)
    t = (x * np.float32(-np.sin(a)) + y * np.float32(np.cos(a))) / np.float32(spacing)
    distance = np.abs(t - np.round(t)) * spacing  # pixels to the nearest line
    return np.clip(1.0 - distance / 0.8, 0.0, 1.0)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 [0, 255] with rounding."""
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def shifted(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """`mask` moved by (dx, dy) >= 0 pixels, zero filled."""
    out = np.zeros_like(mask)
    h, w = mask.shape[:2]
    out[dy:, dx:] = mask[: h - dy, : w - dx]
    return out
