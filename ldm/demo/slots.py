"""Model slots of the demo: one per model the UI can run (HumanSD, and the comparisons of the original demo).

A `ModelSlot` is a name, a `generate(request, on_step) -> PipelineOutput` callable, whether it is available and a
note for the user. The UI only knows this interface, so adding a model (ControlNet, T2I-Adapter) means adding a
factory to `SLOT_FACTORIES`, not touching the UI. Pipelines load lazily, on the first generation, so the demo
starts at once and downloads/reads nothing at import.

References:
    HumanSD, https://github.com/IDEA-Research/HumanSD (c5db29d), scripts/gradio/pose2img.py (HumanSD plus the
        ControlNet / T2I-Adapter comparison galleries; prompt + ", " + added prompt; spec §5.2-5.5).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ldm.demo import pose_editor as pe
from ldm.inference.defaults import FULL_SIZE_STEPS, GUIDANCE_SCALE, sampling_defaults
from ldm.inference.pipeline import DEFAULT_ADDED_PROMPT, DEFAULT_NEGATIVE_PROMPT, PipelineOutput
from ldm.inference.pose_input import generation_size
from ldm.pose.keypoints import Pose
from ldm.samplers import SamplerName

if TYPE_CHECKING:
    from ldm.inference.pipeline import PoseToImagePipeline
    from ldm.pose.estimator import PoseDetector

logger = logging.getLogger(__name__)

StepCallback = Callable[[int, int], None]
"""Called after each sampler step with (steps done, total steps)."""

# Ranges of the original demo's controls (spec §5.2), enforced for UI and API requests alike.
MAX_IMAGES = 4
MAX_STEPS = 50
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class GenerationRequest:
    """Everything a slot needs to generate, identical for every model.

    Args:
        prompt: the user's prompt.
        pose: a `Pose` (any canvas size; each slot rescales it to its generation size), a rendered skeleton image
            (H, W, 3) uint8 used as the pose map as is, or None for an empty pose.
        added_prompt: appended as `prompt + ", " + added_prompt` (the original's "Added Prompt"); may be empty.
        negative_prompt: the unconditional text of classifier-free guidance.
        num_images: images to generate, >= 1.
        steps: sampler steps.
        guidance_scale: classifier-free guidance scale.
        strength: 1 starts from noise; < 1 starts from the noised `init_image` (SDEdit).
        seed: random seed, or None for a random one (reported in the output's parameters).
        eta: DDIM eta.
        sampler: sampler name ("ddim", "plms", "dpmpp_2m").
        pose_threshold: keypoint/person score threshold for drawing the pose.
        init_image: (H, W, 3) uint8 image used when strength < 1 (the uploaded photo), or None (black).
    """

    prompt: str
    pose: Pose | np.ndarray | None = None
    added_prompt: str = DEFAULT_ADDED_PROMPT
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    num_images: int = 1
    steps: int = FULL_SIZE_STEPS
    guidance_scale: float = GUIDANCE_SCALE
    strength: float = 1.0
    seed: int | None = 1234
    eta: float = 0.0
    sampler: str = "ddim"
    pose_threshold: float = 0.05
    init_image: np.ndarray | None = field(default=None, repr=False)

    @property
    def full_prompt(self) -> str:
        """`prompt, added_prompt` as the original composed it (either part may be empty)."""
        return ", ".join(part for part in (self.prompt.strip(), self.added_prompt.strip()) if part)

    @property
    def pose_size(self) -> tuple[int, int] | None:
        """(height, width) of the pose canvas, or None without a pose."""
        if isinstance(self.pose, Pose):
            return self.pose.height, self.pose.width
        if isinstance(self.pose, np.ndarray):
            return int(self.pose.shape[0]), int(self.pose.shape[1])
        return None


@dataclass
class ModelSlot:
    """One model the demo can run.

    Args:
        name: shown as the gallery label and comparison checkbox ("HumanSD", "ControlNet", ...).
        generate: `generate(request, on_step) -> PipelineOutput`; `on_step` may be None. Raises ValueError for bad
            requests.
        available: False for models that are not installed; the UI shows `note` instead of a gallery.
        note: one line for the user (what the model is, or why it is unavailable).
        default_steps: the Steps slider's default for this model.
        default_guidance: the Guidance scale slider's default for this model.
        default_eta: the DDIM eta field's default for this model.
    """

    name: str
    generate: Callable[[GenerationRequest, StepCallback | None], PipelineOutput]
    available: bool = True
    note: str = ""
    default_steps: int = FULL_SIZE_STEPS
    default_guidance: float = GUIDANCE_SCALE
    default_eta: float = 0.0


class LazyPipeline:
    """Build a pipeline on first use (thread-safe), then reuse it.

    Args:
        load: called once, on the first `get()`.
    """

    def __init__(self, load: Callable[[], PoseToImagePipeline]):
        self._load = load
        self._pipeline: PoseToImagePipeline | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the pipeline has been built."""
        return self._pipeline is not None

    def get(self) -> PoseToImagePipeline:
        """The pipeline, loading it if needed."""
        with self._lock:
            if self._pipeline is None:
                logger.info("Loading the model (first generation)...")
                self._pipeline = self._load()
            return self._pipeline


def _pipeline_generate(get: Callable[[], PoseToImagePipeline]) -> Callable[..., PipelineOutput]:
    """A slot `generate` for a `PoseToImagePipeline`: sizes the canvas for the model and adapts the callback."""

    def generate(request: GenerationRequest, on_step: StepCallback | None = None) -> PipelineOutput:
        pipe = get()
        size = request.pose_size or (pipe.default_size[0], pipe.default_size[1])
        # The original's rule at the model's own scale: short side = native size, sides multiples of the model's.
        height, width = generation_size(*size, multiple=pipe.model.image_multiple, short_side=min(pipe.default_size))
        callback = None
        if on_step is not None:

            def callback(info: dict) -> None:
                on_step(int(info["i"]) + 1, int(info["total"]))

        return pipe(
            request.full_prompt,
            request.pose,
            negative_prompt=request.negative_prompt,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance_scale,
            eta=request.eta,
            sampler=request.sampler,
            seed=request.seed,
            height=height,
            width=width,
            num_images=request.num_images,
            strength=request.strength,
            init_image=request.init_image,
            pose_threshold=request.pose_threshold,
            callback=callback,
        )

    return generate


def pipeline_slot(
    pipeline: PoseToImagePipeline | Callable[[], PoseToImagePipeline],
    *,
    name: str = "HumanSD",
    note: str = "",
    default_steps: int | None = None,
    default_guidance: float | None = None,
    default_eta: float | None = None,
) -> ModelSlot:
    """A slot running a `PoseToImagePipeline`, given as an instance or as a loader (called on first use).

    Args:
        pipeline: a pipeline, or a zero-argument callable returning one (lazy).
        name: slot name.
        note: one line shown under the gallery.
        default_steps: Steps default; None: an already built pipeline's own default (`pipeline.sampling`), else
            50.
        default_guidance: Guidance scale default; None: an already built pipeline's own default, else 10.
        default_eta: DDIM eta default; None: an already built pipeline's own default, else 0.
    """
    from ldm.inference.pipeline import PoseToImagePipeline

    if isinstance(pipeline, PoseToImagePipeline):
        ready = pipeline
        get: Callable[[], PoseToImagePipeline] = lambda: ready  # noqa: E731
        default_steps = ready.sampling.steps if default_steps is None else default_steps
        default_guidance = ready.sampling.guidance_scale if default_guidance is None else default_guidance
        default_eta = ready.sampling.eta if default_eta is None else default_eta
    else:
        get = LazyPipeline(pipeline).get
    return ModelSlot(
        name,
        _pipeline_generate(get),
        note=note,
        default_steps=FULL_SIZE_STEPS if default_steps is None else default_steps,
        default_guidance=GUIDANCE_SCALE if default_guidance is None else default_guidance,
        default_eta=0.0 if default_eta is None else default_eta,
    )


def unavailable_slot(name: str, note: str) -> ModelSlot:
    """A placeholder for a model that is not installed: listed in the UI with `note`, never run."""

    def generate(request: GenerationRequest, on_step: StepCallback | None = None) -> PipelineOutput:
        raise ValueError(f"{name} is not available: {note}")

    return ModelSlot(name, generate, available=False, note=note)


# ------------------------------------------------------------------------------------------------ requests and runs
def resolve_pose(
    pose_json: str | None, image: str | None, image_kind: str, detector: PoseDetector | None = None
) -> tuple[Pose | np.ndarray | None, np.ndarray | None, list[str]]:
    """Decide what the models are conditioned on, from the generate event's inputs.

    A skeleton image (kind "skeleton", or "auto" and mostly black) is the pose map as is. Otherwise the pose JSON
    is used; when it is empty and a photo is given, the photo's pose is detected (the UI always sends the JSON,
    detected at upload time). A photo is also the init image (used when strength < 1).

    Args:
        pose_json: pose as JSON text (plain, OpenPose or COCO), or empty.
        image: path of an uploaded photo or skeleton image, or None.
        image_kind: "auto", "photo" or "skeleton".
        detector: pose detector for photos.

    Returns:
        (pose for `GenerationRequest.pose`, init image or None, notes to show the user as warnings).

    Raises:
        ValueError: malformed pose JSON, unreadable image, absurd size.
    """
    has_json = bool((pose_json or "").strip())
    init_image = None
    if image:
        imported = pe.import_image(image, kind=image_kind, detector=None if has_json else detector)
        if imported.skeleton:
            return imported.backdrop, None, []
        init_image = imported.backdrop
        if not has_json:
            return imported.pose, init_image, [imported.message] if imported.message else []
    if not has_json:
        return None, init_image, ["No pose given: generating without a skeleton."]
    pose = pe.pose_from_json(pose_json)
    notes = [] if pose.persons else ["The pose has no person: the model gets an empty pose map."]
    return pose, init_image, notes


def _int_in(name: str, value: float | None, low: int, high: int) -> int:
    if value is None or not float(value).is_integer() or not low <= int(value) <= high:
        raise ValueError(f"{name} must be a whole number in [{low}, {high}]; got {value}.")
    return int(value)


def build_request(
    prompt: str,
    pose: Pose | np.ndarray | None,
    init_image: np.ndarray | None,
    *,
    num_images: float,
    steps: float,
    pose_threshold: float,
    guidance_scale: float,
    strength: float,
    seed: float | None,
    eta: float,
    negative_prompt: str,
    added_prompt: str,
    sampler: str,
) -> GenerationRequest:
    """Validate the UI/API values (ranges of the original's controls) into a `GenerationRequest`.

    Raises:
        ValueError: a value outside its control's range, with the value and the range.
    """
    if not 0.0 <= float(pose_threshold) <= 1.0:
        raise ValueError(f"Detection threshold must be in [0, 1]; got {pose_threshold}.")
    if not 0.1 <= float(guidance_scale) <= 30.0:
        raise ValueError(f"Guidance scale must be in [0.1, 30]; got {guidance_scale}.")
    if not 0.0 < float(strength) <= 1.0:
        raise ValueError(f"Strength must be in (0, 1]; got {strength}.")
    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must be in [0, 1]; got {eta}.")
    if sampler not in {s.value for s in SamplerName}:
        raise ValueError(f"Unknown sampler {sampler!r}; choose one of {[s.value for s in SamplerName]}.")
    seed_value = None if seed is None or int(seed) < 0 else _int_in("Seed", seed, 0, MAX_SEED)
    return GenerationRequest(
        prompt=str(prompt or ""),
        pose=pose,
        added_prompt=str(added_prompt or ""),
        negative_prompt=str(negative_prompt or ""),
        num_images=_int_in("Images", num_images, 1, MAX_IMAGES),
        steps=_int_in("Steps", steps, 1, MAX_STEPS),
        guidance_scale=float(guidance_scale),
        strength=float(strength),
        seed=seed_value,
        eta=float(eta),
        sampler=sampler,
        pose_threshold=float(pose_threshold),
        init_image=init_image,
    )


def run_slots(
    request: GenerationRequest, slots: Sequence[ModelSlot], on_progress: Callable[[str, int, int], None] | None = None
) -> dict[str, PipelineOutput]:
    """Run the request on each slot in turn; `on_progress(slot name, step, total)` after every sampler step."""
    outputs = {}
    for slot in slots:
        step: Callable[[int, int], None] | None = None
        if on_progress is not None:
            step = lambda i, total, name=slot.name: on_progress(name, i, total)  # noqa: E731
        outputs[slot.name] = slot.generate(request, step)
    return outputs


def describe_run(outputs: dict[str, PipelineOutput], seconds: float) -> str:
    """One status line per model: images, size, seed, steps and the wall time of the whole run."""
    lines = []
    for name, out in outputs.items():
        p = out.parameters
        lines.append(
            f"**{name}**: {len(out.images)} image(s) at {p.get('width')}×{p.get('height')}, seed {p.get('seed')}, "
            f"{p.get('num_inference_steps')} {str(p.get('sampler', '')).upper()} steps, "
            f"guidance {p.get('guidance_scale')}"
        )
    return "  \n".join(lines) + f"  \nDone in {seconds:.1f} s."


# ------------------------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class SlotOptions:
    """How to build the slots from the command line.

    Args:
        config: HumanSD model config.
        checkpoint: HumanSD weights (a file, or a list of files holding one model, as the embedded tiny model's),
            or None for random weights (the embedded tiny model's last resort).
        device: torch device.
        precision: "fp32", "bf16" or "fp16".
    """

    config: Path
    checkpoint: Path | list[Path] | None
    device: str = "cpu"
    precision: str = "fp32"


def humansd_slot(options: SlotOptions) -> ModelSlot:
    """The HumanSD slot; its pipeline loads on the first generation."""
    from ldm.inference.pipeline import PoseToImagePipeline

    def load() -> PoseToImagePipeline:
        return PoseToImagePipeline.from_config(
            options.config,
            options.checkpoint,
            device=options.device,
            precision=options.precision,
            allow_random=options.checkpoint is None,
        )

    files = options.checkpoint if isinstance(options.checkpoint, list) else [options.checkpoint]
    note = " + ".join([Path(options.config).name, *(Path(f).name for f in files if f is not None)])
    sampling = sampling_defaults(options.config)
    return pipeline_slot(
        load,
        name="HumanSD",
        note=note,
        default_steps=sampling.steps,
        default_guidance=sampling.guidance_scale,
        default_eta=sampling.eta,
    )


def _comparison_factory(name: str) -> Callable[[SlotOptions], ModelSlot]:
    """A slot factory for a comparison model; unavailable (with the missing file and its source) without weights."""

    def factory(options: SlotOptions) -> ModelSlot:
        from comparison_models.pipelines import comparison_slot  # comparison_models depends on ldm, not the reverse

        return comparison_slot(name, options)

    return factory


# Slot factories in display order. The first available slot is the main model; the others become the
# "Comparison models" checkboxes. A comparison model registers by replacing its placeholder here.
SLOT_FACTORIES: dict[str, Callable[[SlotOptions], ModelSlot]] = {
    "HumanSD": humansd_slot,
    "ControlNet": _comparison_factory("ControlNet"),
    "T2I-Adapter": _comparison_factory("T2I-Adapter"),
}


def build_slots(options: SlotOptions) -> list[ModelSlot]:
    """Every registered slot, in `SLOT_FACTORIES` order (nothing is loaded yet)."""
    return [factory(options) for factory in SLOT_FACTORIES.values()]
