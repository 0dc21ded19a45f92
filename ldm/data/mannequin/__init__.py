"""The mannequin world: a procedurally generated, captioned, pose-labelled dataset for training tiny HumanSD models.

1-3 articulated mannequins per image (COCO-17 labels from a kinematic model), drawn in five Human-Art-like
styles with named figure and background colours that the caption states, written in the Human-Art layout with
HumanSD mapping files. See `world.write_mannequin_world` and `scripts/make_mannequin_world.py`.
"""

from __future__ import annotations

from ldm.data.mannequin.captions import (
    COLOR_RGB,
    Action,
    CaptionSpec,
    ColorName,
    Pattern,
    Style,
    build_caption,
    parse_caption,
    sample_caption_spec,
)
from ldm.data.mannequin.scene import Figure, Scene, sample_scene
from ldm.data.mannequin.styles import render_scene
from ldm.data.mannequin.world import WorldSummary, make_scene, write_mannequin_world

__all__ = [
    "COLOR_RGB",
    "Action",
    "CaptionSpec",
    "ColorName",
    "Figure",
    "Pattern",
    "Scene",
    "Style",
    "WorldSummary",
    "build_caption",
    "make_scene",
    "parse_caption",
    "render_scene",
    "sample_caption_spec",
    "sample_scene",
    "write_mannequin_world",
]
