"""Closed caption vocabulary of the mannequin world, the caption builder and its exact inverse parser.

A caption names five things the renderer honours and the colour-adherence metric checks on pixels::

    a watercolor of two red figures dancing on a blue striped background
    ^ style         ^count ^figure colour ^action ^background colour ^pattern

Styles echo Human-Art scenarios (spec 3.9): "photo" is a `real_human` scenario, the others are
`2D_virtual_human` ones; the scenario folder is the style name with underscores (`shadow_play`).
In a shadow play the figures are always "black" silhouettes and the colour names the glowing screen.

References:
    Human-Art, Ju et al., CVPR 2023, https://github.com/IDEA-Research/HumanArt (scenario names).
    HumanSD, Ju et al., ICCV 2023, https://github.com/IDEA-Research/HumanSD (c5db29d) (mapping-file prompts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class Style(StrEnum):
    """Drawing style; the value is the caption phrase."""

    PHOTO = "photo"
    SKETCH = "sketch"
    WATERCOLOR = "watercolor"
    SHADOW_PLAY = "shadow play"
    OIL_PAINTING = "oil painting"

    @property
    def scenario(self) -> str:
        """Human-Art scenario folder name, e.g. `shadow_play`."""
        return self.value.replace(" ", "_")

    @property
    def category(self) -> str:
        """Human-Art top-level folder: `real_human` for photos, `2D_virtual_human` for the artworks."""
        return "real_human" if self is Style.PHOTO else "2D_virtual_human"


class ColorName(StrEnum):
    """Named colours of captions; `COLOR_RGB` holds their pixel anchors."""

    RED = "red"
    ORANGE = "orange"
    YELLOW = "yellow"
    GREEN = "green"
    BLUE = "blue"
    PURPLE = "purple"
    PINK = "pink"
    WHITE = "white"
    BLACK = "black"
    GRAY = "gray"


# sRGB anchors, chosen so that every pair is >= 40 apart in CIELAB (checked in the tests).
COLOR_RGB: dict[ColorName, tuple[int, int, int]] = {
    ColorName.RED: (215, 35, 35),
    ColorName.ORANGE: (245, 135, 25),
    ColorName.YELLOW: (240, 215, 35),
    ColorName.GREEN: (35, 155, 65),
    ColorName.BLUE: (20, 120, 220),
    ColorName.PURPLE: (145, 45, 170),
    ColorName.PINK: (245, 135, 195),
    ColorName.WHITE: (245, 245, 240),
    ColorName.BLACK: (25, 25, 25),
    ColorName.GRAY: (130, 130, 130),
}


class Action(StrEnum):
    """What the figures do; each has its own joint-angle prior in `kinematics`."""

    STANDING = "standing"
    WALKING = "walking"
    DANCING = "dancing"
    JUMPING = "jumping"
    SITTING = "sitting"


class Pattern(StrEnum):
    """Background pattern; the value is the caption adjective ("" for a plain background)."""

    PLAIN = ""
    GRADIENT = "gradient"
    STRIPED = "striped"
    CHECKERED = "checkered"
    SPECKLED = "speckled"
    GLOWING = "glowing"


COUNT_WORDS: dict[int, str] = {2: "two", 3: "three"}
MAX_FIGURES = 3

# Which colours a style may use, so that every caption is drawable and readable on pixels.
SHADOW_PLAY_LIGHTS: tuple[ColorName, ...] = (
    ColorName.RED,
    ColorName.ORANGE,
    ColorName.YELLOW,
    ColorName.PINK,
    ColorName.WHITE,
)
_NOT_FOR_FIGURES: dict[Style, frozenset[ColorName]] = {Style.SKETCH: frozenset({ColorName.WHITE})}
_NOT_FOR_BACKGROUNDS: dict[Style, frozenset[ColorName]] = {Style.SKETCH: frozenset({ColorName.BLACK})}
_PLAIN_PATTERNS: tuple[Pattern, ...] = (
    Pattern.PLAIN,
    Pattern.GRADIENT,
    Pattern.STRIPED,
    Pattern.CHECKERED,
    Pattern.SPECKLED,
)


@dataclass(frozen=True)
class CaptionSpec:
    """Everything a mannequin caption says.

    Args:
        style: drawing style.
        figure_color: colour of the figures (always `ColorName.BLACK` for a shadow play).
        background_color: colour of the background (the light of a shadow play).
        count: number of figures, 1 to `MAX_FIGURES`.
        action: what the figures do.
        pattern: background pattern.
    """

    style: Style
    figure_color: ColorName
    background_color: ColorName
    count: int
    action: Action = Action.STANDING
    pattern: Pattern = Pattern.PLAIN

    def __post_init__(self) -> None:
        for name, enum in (
            ("style", Style),
            ("figure_color", ColorName),
            ("background_color", ColorName),
            ("action", Action),
            ("pattern", Pattern),
        ):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, enum(value))
            except ValueError:
                choices = [m.value for m in enum]
                raise ValueError(f"CaptionSpec: {name}={value!r} is not one of {choices}.") from None
        if isinstance(self.count, bool) or not isinstance(self.count, int | np.integer):
            raise ValueError(f"CaptionSpec: count must be an integer; got {self.count!r}.")
        if not 1 <= self.count <= MAX_FIGURES:
            raise ValueError(f"CaptionSpec: count must be between 1 and {MAX_FIGURES}; got {self.count}.")
        object.__setattr__(self, "count", int(self.count))
        if self.figure_color == self.background_color:
            raise ValueError(f"CaptionSpec: figure and background are both {self.figure_color}; pick two colours.")
        if self.style is Style.SHADOW_PLAY and self.figure_color is not ColorName.BLACK:
            raise ValueError(f"CaptionSpec: shadow-play figures are black silhouettes; got {self.figure_color}.")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def build_caption(spec: CaptionSpec) -> str:
    """The caption of a spec, e.g. "an oil painting of a green figure sitting on a gray checkered background".

    Args:
        spec: what the image shows.

    Returns:
        Lower-case caption without a final period; `parse_caption` inverts it exactly.
    """
    figure = f"{spec.figure_color} figure"
    figures = f"{_article(figure)} {figure}" if spec.count == 1 else f"{COUNT_WORDS[spec.count]} {figure}s"
    background = " ".join(w for w in (str(spec.background_color), spec.pattern.value, "background") if w)
    return f"{_article(spec.style)} {spec.style} of {figures} {spec.action} on {_article(background)} {background}"


def _alternatives(enum: type[StrEnum]) -> str:
    # Longest first so that "shadow play" is tried before any prefix of it.
    words = sorted((re.escape(m.value) for m in enum if m.value), key=len, reverse=True)
    return "|".join(words)


_CAPTION_RE = re.compile(
    rf"(?P<style_article>an?) (?P<style>{_alternatives(Style)}) of "
    rf"(?P<count>an?|{'|'.join(COUNT_WORDS.values())}) (?P<figure_color>{_alternatives(ColorName)}) "
    rf"(?P<noun>figures?) (?P<action>{_alternatives(Action)}) on "
    rf"(?P<bg_article>an?) (?P<background_color>{_alternatives(ColorName)}) "
    rf"(?:(?P<pattern>{_alternatives(Pattern)}) )?background"
)


def parse_caption(text: str) -> CaptionSpec:
    """Parse a mannequin caption back into its `CaptionSpec` (the exact inverse of `build_caption`).

    Case, surrounding white space, repeated spaces and one final period are tolerated.

    Args:
        text: a caption in the mannequin grammar.

    Returns:
        The spec.

    Raises:
        ValueError: the text is not in the grammar (the message shows the expected form).
    """
    normalized = " ".join(str(text).lower().split()).removesuffix(".")
    match = _CAPTION_RE.fullmatch(normalized)
    expected = 'expected e.g. "a watercolor of two red figures dancing on a blue striped background"'
    if match is None:
        raise ValueError(f"parse_caption: {text!r} is not a mannequin caption; {expected}.")
    count_word = match["count"]
    count = 1 if count_word in ("a", "an") else {w: n for n, w in COUNT_WORDS.items()}[count_word]
    if (count == 1) != (match["noun"] == "figure"):
        raise ValueError(f"parse_caption: {text!r} mixes up singular and plural ({count_word!r} {match['noun']!r}).")
    spec = CaptionSpec(
        style=Style(match["style"]),
        figure_color=ColorName(match["figure_color"]),
        background_color=ColorName(match["background_color"]),
        count=count,
        action=Action(match["action"]),
        pattern=Pattern(match["pattern"] or ""),
    )
    if build_caption(spec) != normalized:
        raise ValueError(f"parse_caption: {text!r} has wrong articles; the canonical form is {build_caption(spec)!r}.")
    return spec


def _choice(rng: np.random.Generator, options: tuple | list) -> object:
    return options[int(rng.integers(len(options)))]


def sample_caption_spec(rng: np.random.Generator) -> CaptionSpec:
    """Draw a random drawable caption spec.

    Styles and actions are uniform; 1, 2 or 3 figures with probabilities 0.5, 0.3, 0.2; colours uniform among the
    pairs the style allows (a shadow play always has black figures on a warm light and a glowing pattern).

    Args:
        rng: the random generator (its state advances).

    Returns:
        The spec.
    """
    style = Style(_choice(rng, list(Style)))
    count = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    action = Action(_choice(rng, list(Action)))
    if style is Style.SHADOW_PLAY:
        figure, background, pattern = ColorName.BLACK, _choice(rng, SHADOW_PLAY_LIGHTS), Pattern.GLOWING
    else:
        figures = [c for c in ColorName if c not in _NOT_FOR_FIGURES.get(style, ())]
        figure = _choice(rng, figures)
        backgrounds = [c for c in ColorName if c != figure and c not in _NOT_FOR_BACKGROUNDS.get(style, ())]
        background = _choice(rng, backgrounds)
        pattern = _choice(rng, _PLAIN_PATTERNS)
    return CaptionSpec(style, ColorName(figure), ColorName(background), count, action, Pattern(pattern))
