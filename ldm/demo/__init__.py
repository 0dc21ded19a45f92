"""The Gradio demo (issue #6): prompt + editable pose -> images from HumanSD and optional comparison models.

Modules:
    `ldm.demo.app`: `build_demo(slots, *, detector, banner) -> gr.Blocks` (UI wiring only) and `launch_demo`.
    `ldm.demo.slots`: `ModelSlot`, `GenerationRequest`, lazily loaded pipeline slots and the slot registry.
    `ldm.demo.pose_editor`: pure functions for the editable pose (add/remove people, move joints, render, import).

`build_demo` and `launch_demo` are imported lazily so that the pose editor and slots work without importing gradio.
"""

from __future__ import annotations

from typing import Any

from ldm.demo.slots import GenerationRequest, ModelSlot, SlotOptions, build_slots, pipeline_slot, unavailable_slot

__all__ = [
    "GenerationRequest",
    "ModelSlot",
    "SlotOptions",
    "build_demo",
    "build_slots",
    "launch_demo",
    "pipeline_slot",
    "unavailable_slot",
]


def __getattr__(name: str) -> Any:
    if name in ("build_demo", "launch_demo"):
        from ldm.demo import app

        return getattr(app, name)
    raise AttributeError(f"module 'ldm.demo' has no attribute {name!r}")
