"""The Gradio demo: prompt + editable pose -> images, from HumanSD and any available comparison model.

`build_demo(slots)` only wires the UI: the models live behind `ModelSlot`s (loaded lazily by the slots themselves),
the pose logic in `ldm.demo.pose_editor`, and every callback closes over what it needs (no module-level state).
The generate event is the public API (`api_name="generate"`): the pose travels as JSON text (plain, OpenPose or
COCO keypoint JSON), images travel as files, so `gradio_client` can drive it.

Input rules (never a traceback in the UI): malformed pose JSON/file, unreadable image, absurd size or out-of-range
values raise `gr.Error` with one line. An empty prompt is allowed (HumanSD can draw from the pose alone) but
raises a `gr.Warning`; so do an empty pose and a photo in which nobody is detected (the user continues with an
empty or hand-edited pose).

References:
    HumanSD, https://github.com/IDEA-Research/HumanSD (c5db29d), scripts/gradio/pose2img.py (controls, defaults,
        examples and output galleries; spec §5.2 and §5.4).
    Gradio 6 docs, https://www.gradio.app/docs (Blocks, Image.select + SelectData, Progress, launch(theme, css)).
"""

from __future__ import annotations

import functools
import html
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import numpy as np
from PIL import Image

from ldm.demo import pose_editor as pe
from ldm.demo.slots import (
    MAX_IMAGES,
    MAX_SEED,
    MAX_STEPS,
    ModelSlot,
    build_request,
    describe_run,
    resolve_pose,
    run_slots,
)
from ldm.inference.pipeline import DEFAULT_ADDED_PROMPT, DEFAULT_NEGATIVE_PROMPT, PipelineOutput
from ldm.pose.keypoints import COCO_KEYPOINT_NAMES, Pose
from ldm.pose.render import overlay_skeleton
from ldm.samplers import SamplerName

if TYPE_CHECKING:
    from ldm.pose.estimator import PoseDetector

logger = logging.getLogger(__name__)

PRESETS_DIR = Path(__file__).resolve().parents[2] / "assets" / "poses"
# (preset file stem, prompt): the original's example prompts (spec §5.2) on the shipped pose presets, since the
# original's example photos are not part of this repository.
EXAMPLES: tuple[tuple[str, str], ...] = (
    ("two_people", "sketch of a man and a woman dancing, white clean background"),
    ("demo_single", "watercolor of a girl dancing"),
    ("two_people", "oil painting of girls dancing in a garden in the spring"),
    ("demo_single", "a shadow play of a man dancing with a basketball, clean background"),
    ("two_people", "sketch, small cute girls and the last supper"),
)
FALLBACK_PROMPT = "watercolor of a girl dancing"
IMAGE_KINDS = (
    ("Auto (skeleton if mostly black)", "auto"),
    ("Photo: detect the pose", "photo"),
    ("Skeleton image: use as is", "skeleton"),
)
DEFAULT_SEED = 299033459  # the original demo's
DEFAULT_JOINT = 9  # left wrist: the joint people most often move
JOINT_CHOICES = [(name.replace("_", " "), i) for i, name in enumerate(COCO_KEYPOINT_NAMES)]
CSS = """
.gradio-container {max-width: 1400px !important; margin: auto;}
#banner {border-left: 4px solid #f59e0b; background: #fffbeb; padding: 2px 12px; border-radius: 6px;}
#banner p {color: #92400e !important;}
#pose-canvas img {cursor: crosshair;}
.result-gallery img {image-rendering: pixelated;}
#generate-btn {min-height: 44px;}
"""


def _escape(message: str) -> str:
    """Gradio renders modal messages as HTML: user-provided names must not become markup."""
    return html.escape(message.strip().splitlines()[0] if message.strip() else message, quote=False)


@contextmanager
def user_errors(action: str) -> Iterator[None]:
    """Turn expected failures into one-line `gr.Error`s; log unexpected ones (the UI never shows a traceback)."""
    try:
        yield
    except gr.Error:
        raise
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        raise gr.Error(_escape(str(err)), title=f"{action} failed", print_exception=False) from None
    except Exception as err:  # the UI boundary: anything else is a bug or a resource problem, logged in full
        logger.exception("%s failed", action)
        message = _escape(f"{type(err).__name__}: {err}")
        raise gr.Error(message, title=f"{action} failed", print_exception=False) from None


# ------------------------------------------------------------------------------------------------------ outputs
def gallery_items(output: PipelineOutput | None, *, overlay: bool) -> list[tuple[Image.Image, str]]:
    """Gallery content as the original: the pose map first, then the samples (with the skeleton overlaid on request)."""
    if output is None:
        return []
    items: list[tuple[Image.Image, str]] = []
    pose_map = np.asarray(output.pose_map) if output.pose_map is not None else None
    if output.pose_map is not None:
        items.append((output.pose_map, "pose map"))
    for i, image in enumerate(output.images):
        shown = image
        if overlay and pose_map is not None:
            shown = Image.fromarray(overlay_skeleton(np.asarray(image), pose_map, alpha=0.7))
        items.append((shown, f"sample {i + 1}"))
    return items


# ------------------------------------------------------------------------------------------------- editor helpers
def _person_update(pose: Pose, selected: int | None) -> dict:
    choices = pe.person_choices(pose)
    if not choices:
        return gr.update(choices=[], value=None)
    value = selected if selected is not None and 0 <= selected < len(choices) else 0
    return gr.update(choices=choices, value=value)


def _editor_outputs(pose: Pose, person: int | None, joint: int | None, backdrop: pe.Backdrop | None) -> tuple:
    """(pose JSON, canvas, person dropdown) after an edit."""
    text = pe.pose_to_json(pose)
    person = person if person is not None and 0 <= person < len(pose.persons) else (0 if pose.persons else None)
    return text, pe.render_view(text, person, joint, backdrop), _person_update(pose, person)


def _notice(message: str | None) -> str:
    return f"⚠️ {html.escape(message, quote=False)}" if message else ""


# ------------------------------------------------------------------------------------------------------- layout
@dataclass
class _PosePanel:
    canvas: gr.Image
    notice: gr.Markdown
    person: gr.Dropdown
    joint: gr.Dropdown
    add: gr.Button
    remove: gr.Button
    hide: gr.Button
    clear: gr.Button
    preset: gr.Dropdown
    image: gr.Image
    image_kind: gr.Radio
    pose_file: gr.File
    pose_json: gr.Code
    backdrop: gr.State


@dataclass
class _Settings:
    num_images: gr.Slider
    steps: gr.Slider
    guidance: gr.Slider
    seed: gr.Number
    strength: gr.Slider
    threshold: gr.Slider
    eta: gr.Number
    sampler: gr.Dropdown
    negative: gr.Textbox
    added: gr.Textbox


def _pose_panel(start: Pose, presets: dict[str, Path], start_preset: str | None) -> _PosePanel:
    gr.Markdown("### 1 · Pose")
    canvas = gr.Image(
        pe.render_editor(start, person=0 if start.persons else None, joint=DEFAULT_JOINT),
        label="Pose: choose a person and a joint, then click where the joint goes",
        interactive=False,
        type="numpy",
        format="png",
        height=470,
        buttons=["download"],
        elem_id="pose-canvas",
    )
    notice = gr.Markdown("", elem_id="pose-notice")
    with gr.Row(equal_height=True):
        person = gr.Dropdown(pe.person_choices(start), value=0 if start.persons else None, label="Person", scale=1)
        joint = gr.Dropdown(JOINT_CHOICES, value=DEFAULT_JOINT, label="Joint to move", scale=1)
    with gr.Row():
        add = gr.Button("Add person", size="sm", min_width=90, elem_id="add-person")
        remove = gr.Button("Remove person", size="sm", min_width=90, elem_id="remove-person")
        hide = gr.Button("Hide joint", size="sm", min_width=90)
        clear = gr.Button("Clear pose", size="sm", min_width=90)
    with gr.Tabs():
        with gr.Tab("Preset"):
            preset = gr.Dropdown(list(presets), value=start_preset, label="Pose preset", allow_custom_value=False)
        with gr.Tab("Photo or skeleton image"):
            image = gr.Image(
                label="Photo (pose detected) or rendered skeleton (used as is)",
                type="filepath",
                image_mode=None,
                sources=["upload", "clipboard"],
                height=260,
            )
            image_kind = gr.Radio([c for c in IMAGE_KINDS], value="auto", label="Uploaded image type")
        with gr.Tab("Pose file"):
            pose_file = gr.File(label="Pose file (.npz or .json)", file_types=[".npz", ".json"], type="filepath")
    with gr.Accordion("Pose JSON (edit or paste; used by the API)", open=False):
        pose_json = gr.Code(pe.pose_to_json(start), language="json", label="Pose JSON", lines=8, max_lines=16)
    return _PosePanel(
        canvas,
        notice,
        person,
        joint,
        add,
        remove,
        hide,
        clear,
        preset,
        image,
        image_kind,
        pose_file,
        pose_json,
        gr.State(None),
    )


def _settings_panel(default_steps: int, default_guidance: float, default_eta: float = 0.0) -> _Settings:
    with gr.Accordion("Settings", open=True):
        with gr.Row():
            num_images = gr.Slider(1, MAX_IMAGES, value=1, step=1, label="Images", elem_id="images-slider")
            steps = gr.Slider(1, MAX_STEPS, value=min(default_steps, MAX_STEPS), step=1, label="Steps")
        with gr.Row():
            guidance = gr.Slider(0.1, 30.0, value=default_guidance, step=0.1, label="Guidance scale")
            seed = gr.Number(DEFAULT_SEED, label="Seed (-1: random)", precision=0, minimum=-1, maximum=MAX_SEED)
    with gr.Accordion("Advanced", open=False):
        with gr.Row():
            strength = gr.Slider(0.01, 1.0, value=1.0, step=0.01, label="Strength (< 1 starts from the photo)")
            threshold = gr.Slider(0.0, 1.0, value=pe.DEFAULT_THRESHOLD, step=0.01, label="Detection threshold")
        with gr.Row():
            sampler = gr.Dropdown([s.value for s in SamplerName], value="ddim", label="Sampler")
            eta = gr.Number(default_eta, label="eta (DDIM)", minimum=0.0, maximum=1.0)
        negative = gr.Textbox(DEFAULT_NEGATIVE_PROMPT, label="Negative prompt", lines=2)
        added = gr.Textbox(DEFAULT_ADDED_PROMPT, label="Added prompt (appended as 'prompt, added')")
    return _Settings(num_images, steps, guidance, seed, strength, threshold, eta, sampler, negative, added)


def _upload_path(payload: Any) -> str | None:
    """The server-side path of an image payload received with `preprocess=False` (Gradio has already checked
    that it lies in its upload cache); None when nothing is uploaded.

    The image events skip Gradio's preprocessing so that an unreadable upload reaches `pose_editor.import_image`
    and becomes a one-line `gr.Error` instead of Gradio's generic processing failure.
    """
    if payload is None:
        return None
    path = payload.get("path") if isinstance(payload, dict) else getattr(payload, "path", None)
    return str(path) if path else None


# ---------------------------------------------------------------------------------------------------------- wiring
def editor_handler(action: str, n_outputs: int) -> Callable[[Callable], Callable]:
    """Decorate an editor callback whose last output is the notice Markdown.

    A bad input (ValueError, FileNotFoundError) becomes a `gr.Warning` plus the notice, and the other outputs
    are left untouched: an editor hiccup must not blank the canvas the way a `gr.Error` marks its outputs.
    Anything else is logged and raised as a one-line `gr.Error`.
    """

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)  # keeps the signature, so Gradio still injects gr.SelectData
        def wrapper(*args: Any) -> Any:
            try:
                return fn(*args)
            except (ValueError, FileNotFoundError) as err:
                gr.Warning(_escape(str(err)), title=f"{action}: not done")
                return (*[gr.skip()] * (n_outputs - 1), _notice(str(err).strip().splitlines()[0]))
            except gr.Error:
                raise
            except Exception as err:  # the UI boundary: a bug, logged in full, one line for the user
                logger.exception("%s failed", action)
                message = _escape(f"{type(err).__name__}: {err}")
                raise gr.Error(message, title=f"{action} failed", print_exception=False) from None

        return wrapper

    return decorate


def _wire_editor(p: _PosePanel, presets: dict[str, Path], detector: PoseDetector | None) -> None:
    private: dict[str, Any] = {"api_visibility": "private"}
    reset_outputs = [p.pose_json, p.canvas, p.person, p.image, p.backdrop, p.notice]

    @editor_handler("Loading the preset", 6)
    def load_preset(name: str | None, joint: int | None):
        if not name or name not in presets:
            return (gr.skip(),) * 6
        return *_editor_outputs(pe.import_pose_file(presets[name]).pose, 0, joint, None), None, None, ""

    @editor_handler("Loading the pose file", 6)
    def load_file(path: str | None, joint: int | None):
        if not path:
            return (gr.skip(),) * 6
        return *_editor_outputs(pe.import_pose_file(path).pose, 0, joint, None), None, None, ""

    @editor_handler("Reading the image", 5)
    def load_image(payload: Any, kind: str, pose_json: str, person: int | None, joint: int | None):
        path = _upload_path(payload)
        if not path:
            return (gr.skip(),) * 5
        imported = pe.import_image(path, kind=kind, detector=detector)
        if imported.message and not imported.skeleton:
            gr.Warning(_escape(imported.message))
        backdrop = pe.Backdrop(imported.backdrop, imported.skeleton)
        if imported.pose is None:  # a skeleton: keep the editable pose for later
            return gr.skip(), backdrop.image, gr.skip(), backdrop, _notice(imported.message)
        return *_editor_outputs(imported.pose, 0, joint, backdrop), backdrop, _notice(imported.message)

    @editor_handler("Drawing the pose", 3)
    def clear_image(pose_json: str, person: int | None, joint: int | None):
        return pe.render_view(pose_json, person, joint, None), None, ""

    p.preset.input(load_preset, [p.preset, p.joint], reset_outputs, **private)
    p.pose_file.upload(load_file, [p.pose_file, p.joint], reset_outputs, **private)
    image_outputs = [p.pose_json, p.canvas, p.person, p.backdrop, p.notice]
    image_inputs = [p.image, p.image_kind, p.pose_json, p.person, p.joint]
    image_event: dict[str, Any] = dict(concurrency_limit=1, preprocess=False, **private)  # see _upload_path
    p.image.upload(load_image, image_inputs, image_outputs, **image_event)
    p.image_kind.input(load_image, image_inputs, image_outputs, **image_event)
    p.image.clear(clear_image, [p.pose_json, p.person, p.joint], [p.canvas, p.backdrop, p.notice], **private)
    _wire_edits(p)


def _apply_edit(fn: pe.EditFn, pose_json: str, person: int | None, joint: int | None, backdrop: pe.Backdrop | None):
    """Run one edit on the pose JSON; the outputs are (pose JSON, canvas, person dropdown, notice)."""
    if backdrop is not None and backdrop.skeleton:
        raise ValueError("A skeleton image is loaded and used as is: clear it (×) to edit the pose.")
    pose, person = fn(pe.pose_from_json(pose_json), person, joint if joint is not None else 0)
    return *_editor_outputs(pose, person, joint, backdrop), ""


def _wire_edits(p: _PosePanel) -> None:
    private: dict[str, Any] = {"api_visibility": "private"}
    edit_inputs = [p.pose_json, p.person, p.joint, p.backdrop]
    edit_outputs = [p.pose_json, p.canvas, p.person, p.notice]

    @editor_handler("Moving the joint", 4)
    def click(pose_json: str, person: int | None, joint: int | None, backdrop: pe.Backdrop | None, evt: gr.SelectData):
        if not (isinstance(evt.index, (list, tuple)) and len(evt.index) == 2):
            return gr.skip(), gr.skip(), gr.skip(), ""
        x, y = evt.index  # pixel coordinates in the canvas image = the pose's coordinates

        def move(pose: Pose, i: int | None, j: int) -> tuple[Pose, int | None]:
            return pe.move_joint(pose, pe.need_person(i), j, float(x), float(y)), i

        return _apply_edit(move, pose_json, person, joint, backdrop)

    p.canvas.select(click, edit_inputs, edit_outputs, trigger_mode="always_last", **private)
    for button, (action, fn) in zip((p.add, p.remove, p.hide, p.clear), pe.BUTTON_EDITS.values(), strict=True):
        handler = editor_handler(action, 4)(functools.partial(_apply_edit, fn))
        button.click(handler, edit_inputs, edit_outputs, **private)

    @editor_handler("Reading the pose JSON", 3)
    def redraw(pose_json: str, person: int | None, joint: int | None, backdrop: pe.Backdrop | None):
        pose = pe.pose_from_json(pose_json)
        return pe.render_view(pose_json, person, joint, backdrop), _person_update(pose, person), ""

    for trigger in (p.person.input, p.joint.input, p.pose_json.blur):
        trigger(redraw, edit_inputs, [p.canvas, p.person, p.notice], **private)


def _wire_generate(
    p: _PosePanel,
    s: _Settings,
    prompt: gr.Textbox,
    button: gr.Button,
    outputs: tuple[list[gr.Gallery], gr.Markdown, gr.State, gr.CheckboxGroup, gr.Checkbox],
    slots: tuple[ModelSlot, list[ModelSlot]],
    detector: PoseDetector | None,
) -> None:
    galleries, status, results, compare, overlay = outputs
    main_slot, comparisons = slots
    shown = [main_slot, *comparisons]

    def generate(
        prompt: str,
        pose_json: str,
        image_kind: str,
        num_images: float,
        steps: float,
        pose_threshold: float,
        guidance_scale: float,
        strength: float,
        seed: float,
        eta: float,
        negative_prompt: str,
        added_prompt: str,
        sampler: str,
        comparison_models: list[str] | None,
        show_pose_overlay: bool,
        image: Any = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (gradio's injection idiom)
    ):
        start = time.perf_counter()
        with user_errors("Generation"):
            pose, init_image, notes = resolve_pose(pose_json, _upload_path(image), image_kind, detector)
            request = build_request(
                prompt, pose, init_image, num_images=num_images, steps=steps, pose_threshold=pose_threshold,
                guidance_scale=guidance_scale, strength=strength, seed=seed, eta=eta,
                negative_prompt=negative_prompt, added_prompt=added_prompt, sampler=sampler,
            )  # fmt: skip
            if not (prompt or "").strip():
                notes.append("Empty prompt: generating from the pose (and the added prompt) alone.")
            for note in notes:
                gr.Warning(_escape(note))
            unknown = sorted(set(comparison_models or []) - {c.name for c in comparisons})
            if unknown:
                names = ", ".join(c.name for c in comparisons) or "none"
                raise ValueError(f"Unknown comparison model(s) {unknown}; available: {names}.")
            chosen = [main_slot, *(c for c in comparisons if c.name in (comparison_models or []))]
            progress(0, desc="Loading the model / encoding the prompt")

            def on_progress(name: str, step: int, total: int) -> None:
                progress((step, total), desc=f"{name}: sampling", unit="steps")

            runs = run_slots(request, chosen, on_progress)
        items = [gallery_items(runs.get(slot.name), overlay=bool(show_pose_overlay)) for slot in shown]
        return *items, describe_run(runs, time.perf_counter() - start), runs

    inputs = [
        prompt, p.pose_json, p.image_kind, s.num_images, s.steps, s.threshold, s.guidance, s.strength, s.seed,
        s.eta, s.negative, s.added, s.sampler, compare, overlay, p.image,
    ]  # fmt: skip
    # preprocess=False: raw values, validated by build_request; the image as in `_upload_path`.
    event = dict(
        fn=generate, inputs=inputs, outputs=[*galleries, status, results], concurrency_limit=1, preprocess=False
    )
    button.click(api_name="generate", **event)
    prompt.submit(api_visibility="private", **event)

    def redisplay(runs: dict[str, PipelineOutput] | None, show: bool):
        items = [gallery_items((runs or {}).get(slot.name), overlay=bool(show)) for slot in shown]
        return items[0] if len(items) == 1 else tuple(items)  # one output takes its value unwrapped

    overlay.input(redisplay, [results, overlay], galleries, api_visibility="private")


def _header(banner: str | None) -> None:
    gr.Markdown(
        "# HumanSD: pose-guided text-to-image\n"
        "Draw people in the pose you want: pick a preset, upload a photo (its pose is detected) or a skeleton image, "
        "load a pose file, or edit the pose by clicking on the canvas. "
        "[Paper](https://arxiv.org/abs/2304.04269) · ICCV 2023"
    )
    if banner:
        gr.Markdown(f"⚠️ **Model notice:** {html.escape(banner, quote=False)}", elem_id="banner")


def _output_panel(main_slot: ModelSlot, comparisons: list[ModelSlot], hidden: list[ModelSlot]):
    gr.Markdown("### 2 · Results")
    galleries = []
    for slot in [main_slot, *comparisons]:
        galleries.append(
            gr.Gallery(
                label=slot.name,
                columns=3,
                height="auto",
                object_fit="contain",
                format="png",
                buttons=["download", "fullscreen"],
                elem_classes="result-gallery",
                elem_id=f"gallery-{slot.name.lower()}",
            )
        )
    status = gr.Markdown("", elem_id="run-status")
    with gr.Row():
        compare = gr.CheckboxGroup(
            [c.name for c in comparisons],
            value=[],
            label="Comparison models",
            visible=bool(comparisons),
        )
        overlay = gr.Checkbox(False, label="Show pose overlay on the images")
    if hidden:
        notes = "  \n".join(f"*{html.escape(h.name, quote=False)}: {html.escape(h.note, quote=False)}*" for h in hidden)
        gr.Markdown(f"Comparison models not available:  \n{notes}")
    return galleries, status, gr.State(None), compare, overlay


def _examples(p: _PosePanel, prompt: gr.Textbox, presets: dict[str, Path]) -> None:
    by_stem = {path.stem: name for name, path in presets.items()}
    rows = [[by_stem[stem], text] for stem, text in EXAMPLES if stem in by_stem]
    if not rows:
        return

    @editor_handler("Loading the example", 6)
    def load_example(name: str, text: str):
        return *_editor_outputs(pe.import_pose_file(presets[name]).pose, 0, DEFAULT_JOINT, None), None, None, ""

    gr.Examples(
        rows,
        inputs=[p.preset, prompt],
        outputs=[p.pose_json, p.canvas, p.person, p.image, p.backdrop, p.notice],
        fn=load_example,
        run_on_click=True,
        cache_examples=False,
        api_visibility="private",
        label="Examples (the original demo's prompts on the pose presets)",
    )


def build_demo(
    slots: Sequence[ModelSlot],
    *,
    detector: PoseDetector | None = None,
    banner: str | None = None,
    presets_dir: str | Path = PRESETS_DIR,
) -> gr.Blocks:
    """Wire the demo UI. Loads nothing: the slots load their models on first use.

    Args:
        slots: model slots in display order; the first available one is the main model, the other available
            ones become "Comparison models" checkboxes, unavailable ones are listed with their note.
        detector: pose detector for uploaded photos (`detect(image) -> list[Person]`), or None (photos then give
            an empty pose to edit by hand).
        banner: a notice shown at the top (e.g. `resolve_model`'s "using the embedded tiny model").
        presets_dir: folder of pose presets (.json/.npz).

    Returns:
        The `gr.Blocks` app with its queue configured; launch it with `launch_demo`.

    Raises:
        ValueError: no available slot.
    """
    available = [s for s in slots if s.available]
    if not available:
        raise ValueError(f"No available model among the slots {[s.name for s in slots]}; nothing to run.")
    main_slot, comparisons = available[0], available[1:]
    hidden = [s for s in slots if not s.available]
    presets = pe.list_presets(presets_dir)
    by_stem = {path.stem: name for name, path in presets.items()}
    start_stem, start_prompt = next(((st, t) for st, t in EXAMPLES if st in by_stem), (None, FALLBACK_PROMPT))
    start_preset = by_stem.get(start_stem) if start_stem else None
    start = pe.start_pose(presets.get(start_preset) if start_preset else None)
    detector = pe.SerialDetector(detector) if detector is not None else None  # Gradio calls it from threads
    with gr.Blocks(title="HumanSD demo") as demo:
        _header(banner)
        with gr.Row(equal_height=True):
            prompt = gr.Textbox(start_prompt, label="Prompt", lines=1, scale=5, autofocus=False)
            button = gr.Button("Generate", variant="primary", scale=1, elem_id="generate-btn")
        with gr.Row():
            with gr.Column(scale=1):
                pose_panel = _pose_panel(start, presets, start_preset)
            with gr.Column(scale=1):
                galleries, status, results, compare, overlay = _output_panel(main_slot, comparisons, hidden)
                settings = _settings_panel(main_slot.default_steps, main_slot.default_guidance, main_slot.default_eta)
        _examples(pose_panel, prompt, presets)
        _wire_editor(pose_panel, presets, detector)
        _wire_generate(
            pose_panel, settings, prompt, button, (galleries, status, results, compare, overlay),
            (main_slot, comparisons), detector,
        )  # fmt: skip
    demo.queue(max_size=32, default_concurrency_limit=4)
    return demo


def launch_demo(
    demo: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    share: bool = False,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
) -> str:
    """Launch with the demo's theme and CSS (Gradio 6 takes both in `launch`); returns the local URL.

    Args:
        demo: from `build_demo`.
        host: interface to bind; localhost by default (use 0.0.0.0 deliberately to expose it).
        port: TCP port (None: Gradio picks one).
        share: create a public gradio.live link (off by default).
        prevent_thread_lock: return at once and serve in a background thread (tests); close with `demo.close()`.
        quiet: suppress Gradio's startup messages.
    """
    _, local_url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        show_error=False,
        theme=gr.themes.Soft(primary_hue="indigo", neutral_hue="slate"),  # fonts ship with gradio: no CDN
        css=CSS,
        footer_links=["api"],
    )
    return local_url
