"""Rendering a mannequin `Scene` in one of five styles echoing Human-Art scenarios.

* photo: tube-shaded body parts lit from the upper left, a soft drop shadow, a slightly soft lens.
* sketch: paper tinted with the background colour, pencil grain, dark outlines tinted by the figure colour,
  a coloured-pencil fill and diagonal hatching over the figures.
* watercolor: a blotchy wash, figures with blurred, noise-eaten bleeding edges and pigment pooling at the rim,
  paper texture over everything.
* shadow play: near-black silhouettes with tiny rivets at elbows and knees on a glowing screen lit in the
  caption's colour; the screen diffuses the edges.
* oil painting: shaded, outlined parts and the background smeared by brush-stroke texture with colour jitter.

In a world that marks sides (`sample_scene(..., mark_left=True)`), every style draws the figures' left arms and
legs in the marking tone of the body colour (`draw.marking_tone`; shadow play: a lighter, translucent-leather
silhouette), so that a figure's left and right stay readable after an f=8 VAE has erased its 1-2 px face cues.

The background is drawn from its own random stream, so `render_scene(scene, with_figures=False)` gives exactly
the background of the full image. Same scene, same pixels: there is no global randomness.

References:
    Human-Art, Ju et al., CVPR 2023 (scenarios photo/real_human, sketch, watercolor, shadow_play, oil_painting).
"""

from __future__ import annotations

import cv2
import numpy as np

from ldm.data.mannequin.captions import COLOR_RGB, Style
from ldm.data.mannequin.draw import (
    PATTERN_AMPLITUDE,
    TUBE_LEVELS,
    Part,
    draw_part,
    draw_tube,
    hatch_pattern,
    marking_tone,
    paint_background,
    pattern_field,
    shade,
    shifted,
    smooth_noise,
    stroke_noise,
    to_uint8,
)
from ldm.data.mannequin.scene import Scene

PAPER = np.array([0.97, 0.95, 0.90], dtype=np.float32)
SILHOUETTE = (18.0, 14.0, 10.0)
MARKED_SILHOUETTE = (70.0, 56.0, 42.0)  # marked parts of shadow puppets: thinner, more translucent leather
RIVET = (75.0, 50.0, 30.0)
_RIVET_JOINTS = (7, 8, 13, 14)
_OIL_LEVELS = ((1.0, 0.78), (0.7, 0.95), (0.35, 1.1))


def _rgb(name: str) -> np.ndarray:
    return np.array(COLOR_RGB[name], dtype=np.float32) / 255.0


def _background(scene: Scene, rng: np.random.Generator, color: np.ndarray, strength: float = 1.0) -> np.ndarray:
    a, b = PATTERN_AMPLITUDE[scene.spec.pattern]
    field = pattern_field(scene.spec.pattern, scene.size, rng)
    return paint_background(color, field, (a * strength, b * strength))


def _mask(scene: Scene) -> np.ndarray:
    """(H, W) float32 anti-aliased silhouette of all figures, 1 inside."""
    mask = np.zeros((scene.size, scene.size), dtype=np.uint8)
    for part in scene.parts:
        draw_part(mask, part, 255)
    return mask.astype(np.float32) / 255.0


def _outline_color(figure: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in figure * 255.0 * 0.35)


def _segment_distance(point: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Max-channel distance from `point` to the colours between `a` and `b` (what blending them can give)."""
    t = np.linspace(0.0, 1.0, 11)[:, None]
    return float(np.abs(a + t * (b - a) - point).max(axis=1).min())


def _eye_color(scene: Scene) -> tuple[float, ...]:
    """A figure tone (or black / white) that shows on the head and, even blended with it, never looks like the
    background (keeps the labelled eye pixels distinct from the background)."""
    figure, background = _rgb(scene.spec.figure_color) * 255.0, _rgb(scene.spec.background_color) * 255.0
    candidates = [figure * 0.35, figure * 0.6, figure * 0.8, np.full(3, 20.0), np.full(3, 235.0)]
    # Capped so that the first (darkest figure tone) candidate that is good enough wins over black or white.
    scores = [
        min(_segment_distance(background, c, figure), 1.5 * float(np.abs(c - figure).max()), 20.0) for c in candidates
    ]
    return tuple(float(v) for v in candidates[int(np.argmax(scores))])


def _body(color: np.ndarray, part: Part, scene: Scene) -> np.ndarray:
    """The body colour of `part`: `color`, or its marking tone (kept apart from the background) for marked parts."""
    return marking_tone(color, _rgb(scene.spec.background_color) * 255.0) if part.marked else color


def _draw_details(canvas: np.ndarray, parts: list[Part] | tuple[Part, ...], color: tuple[float, ...]) -> None:
    for part in parts:
        if part.detail:
            draw_part(canvas, part, color)


def _sigma(size: int, fraction: float) -> float:
    return max(0.3, fraction * size)


def _render_photo(scene: Scene, bg_rng: np.random.Generator, fig_rng: np.random.Generator, figures: bool):
    size = scene.size
    image = _background(scene, bg_rng, _rgb(scene.spec.background_color))
    if figures:
        dx, dy = max(1, round(0.03 * size)), max(1, round(0.02 * size))
        shadow = cv2.GaussianBlur(shifted(_mask(scene), dx, dy), (0, 0), _sigma(size, 0.025))
        image *= 1.0 - 0.35 * shadow[..., None]
    canvas = to_uint8(image)
    if figures:
        color = _rgb(scene.spec.figure_color) * 255.0
        for part in scene.parts:
            if not part.detail:
                draw_tube(canvas, part, _body(color, part, scene), TUBE_LEVELS)
        _draw_details(canvas, scene.parts, _eye_color(scene))
    return cv2.GaussianBlur(canvas, (0, 0), _sigma(size, 0.004))


def _render_sketch(scene: Scene, bg_rng: np.random.Generator, fig_rng: np.random.Generator, figures: bool):
    size = scene.size
    paper = 0.8 * _rgb(scene.spec.background_color) + 0.2 * PAPER
    image = _background(scene, bg_rng, paper, strength=0.6)
    image *= 1.0 + 0.03 * bg_rng.standard_normal((size, size, 1), dtype=np.float32)
    canvas = to_uint8(image)
    if not figures:
        return canvas
    figure = _rgb(scene.spec.figure_color)
    outline = _outline_color(figure)
    fill = (0.85 * figure + 0.15 * PAPER) * 255.0
    width = max(0.5, size / 160)
    for part in scene.parts:
        if not part.detail:
            draw_part(canvas, part, outline, grow=width)
            draw_part(canvas, part, shade(_body(fill, part, scene), part.tint))
    _draw_details(canvas, scene.parts, outline)
    spacing, angle = max(3.0, size / 40), float(fig_rng.uniform(30, 60))
    mask = _mask(scene)
    dx, dy = max(1, round(0.025 * size)), max(1, round(0.02 * size))
    cast = np.clip(shifted(mask, dx, dy) - mask, 0.0, 1.0)  # a hatched cast shadow beside each figure
    strokes = 0.35 * hatch_pattern(size, spacing=spacing, angle=angle) * mask
    strokes += 0.3 * hatch_pattern(size, spacing=spacing * 0.8, angle=angle + 90.0) * cast
    return to_uint8(canvas.astype(np.float32) / 255.0 * (1.0 - strokes[..., None]))


def _render_watercolor(scene: Scene, bg_rng: np.random.Generator, fig_rng: np.random.Generator, figures: bool):
    size = scene.size
    wash = 0.88 * _rgb(scene.spec.background_color) + 0.12
    image = _background(scene, bg_rng, wash)
    image *= 1.0 + 0.07 * smooth_noise(bg_rng, size, size / 6)[..., None]
    paper = 1.0 + 0.035 * bg_rng.standard_normal((size, size, 1), dtype=np.float32)
    if figures:
        figure = _rgb(scene.spec.figure_color) * 255.0
        layer = np.empty((size, size, 3), dtype=np.uint8)
        layer[:] = to_uint8(figure / 255.0)
        for part in scene.parts:
            if not part.detail:
                body = _body(figure, part, scene)
                draw_part(layer, part, shade(body, 0.72 * part.tint), grow=0.7)
                draw_part(layer, part, shade(body, part.tint))
        _draw_details(layer, scene.parts, _eye_color(scene))
        mask = _mask(scene)
        coverage = cv2.GaussianBlur(mask, (0, 0), _sigma(size, 0.01))
        edge = 4.0 * coverage * (1.0 - coverage)  # 1 on the outline, 0 inside and outside
        ragged = 1.2 * coverage + 0.5 * edge * smooth_noise(fig_rng, size, size / 20)
        solid = 0.9 * np.minimum(2.0 * mask, 1.0)  # pigment bleeds outwards only: the body itself stays opaque
        alpha = np.clip(np.maximum(ragged, solid), 0.0, 1.0)[..., None]
        pigment = cv2.GaussianBlur(layer, (0, 0), _sigma(size, 0.005)).astype(np.float32) / 255.0
        pigment *= 1.0 - 0.8 * alpha * (1.0 - alpha)  # pooling at the rim
        image = image * (1.0 - alpha) + pigment * alpha
    return to_uint8(image * paper)


def _render_shadow_play(scene: Scene, bg_rng: np.random.Generator, fig_rng: np.random.Generator, figures: bool):
    size = scene.size
    image = _background(scene, bg_rng, _rgb(scene.spec.background_color))
    image *= 1.0 + 0.03 * smooth_noise(bg_rng, size, 2.0)[..., None]
    canvas = to_uint8(image)
    if figures:
        for part in scene.parts:
            if not part.detail:
                draw_part(canvas, part, MARKED_SILHOUETTE if part.marked else SILHOUETTE)
        for figure in scene.figures:
            radius = max(0.6, 0.012 * figure.height)
            for joint in _RIVET_JOINTS:
                x, y, score = figure.keypoints[joint]
                if score > 0 and not figure.occluded[joint]:
                    cv2.circle(canvas, (int(x * 16), int(y * 16)), int(radius * 16), RIVET, -1, cv2.LINE_AA, 4)
    return cv2.GaussianBlur(canvas, (0, 0), _sigma(size, 0.005))


def _render_oil_painting(scene: Scene, bg_rng: np.random.Generator, fig_rng: np.random.Generator, figures: bool):
    size = scene.size
    image = _background(scene, bg_rng, _rgb(scene.spec.background_color))
    strokes = stroke_noise(bg_rng, size, angle=float(bg_rng.uniform(0, 180)), length=max(5.0, size / 14))
    jitter = smooth_noise(bg_rng, size, size / 12)
    canvas = to_uint8(image)
    if figures:
        color = _rgb(scene.spec.figure_color) * 255.0
        outline = tuple(float(v) for v in color * 0.55)
        for part in scene.parts:
            if not part.detail:
                draw_part(canvas, part, outline, grow=max(0.5, size / 200))
                draw_tube(canvas, part, _body(color, part, scene), _OIL_LEVELS)
        _draw_details(canvas, scene.parts, _eye_color(scene))
    texture = 1.0 + 0.09 * strokes[..., None] + 0.03 * jitter[..., None] * np.array([1.0, -0.5, -0.5], np.float32)
    painted = canvas.astype(np.float32) / 255.0 * texture
    return cv2.GaussianBlur(to_uint8(painted), (0, 0), _sigma(size, 0.004))


_RENDERERS = {
    Style.PHOTO: _render_photo,
    Style.SKETCH: _render_sketch,
    Style.WATERCOLOR: _render_watercolor,
    Style.SHADOW_PLAY: _render_shadow_play,
    Style.OIL_PAINTING: _render_oil_painting,
}


def render_scene(scene: Scene, *, with_figures: bool = True) -> np.ndarray:
    """Render a scene in its caption's style.

    Args:
        scene: the scene.
        with_figures: False renders the background alone, pixel-identical to the full image's background
            (used to check that every labelled joint lands on a figure).

    Returns:
        (size, size, 3) uint8 RGB image.
    """
    bg_rng = np.random.default_rng([scene.texture_seed, 0])
    fig_rng = np.random.default_rng([scene.texture_seed, 1])
    return _RENDERERS[scene.spec.style](scene, bg_rng, fig_rng, with_figures)
