"""Which model to run when the user names none: the real HumanSD if its weights are present, else the embedded
tiny model (shipped weights, or random weights as a last resort), always with a notice saying which."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ldm.checkpoint import missing_file_message

HUMANSD_CONFIG = Path("configs/humansd/humansd-inference.yaml")
HUMANSD_CKPT = Path("humansd_data/checkpoints/humansd-v1.ckpt")
TINY_CONFIG = Path("configs/tiny/mannequin-humansd.yaml")  # the trained embedded model (mannequin world)
TINY_CKPT = [
    Path("humansd_data/checkpoints/tiny/base-tiny.safetensors"),  # tiny VAE + frozen tiny text tower
    Path("humansd_data/checkpoints/tiny/humansd-tiny-paper.safetensors"),  # UNet, heatmap-guided loss (paper mode)
]
RANDOM_CONFIG = Path("configs/tiny/humansd-tiny.yaml")  # last resort: the tiny architecture, random weights

FULL_SIZE_STEPS = 50  # the original scripts' and demo's default (spec §5.2)
SMALL_MODEL_STEPS = 20  # models whose native size is below 512 (the embedded tiny model) unless their config says
GUIDANCE_SCALE = 10.0  # the original scripts' and demo's classifier-free guidance scale


@dataclass(frozen=True)
class SamplingDefaults:
    """The sampler settings a model config recommends: used wherever the user gives none (CLI, demo, pipeline).

    Args:
        steps: sampler steps.
        guidance_scale: classifier-free guidance scale (1: no unconditional branch).
        eta: DDIM noise (0: deterministic DDIM, HumanSD's; 1: as much noise as DDPM's ancestral steps).
    """

    steps: int
    guidance_scale: float
    eta: float = 0.0


def sampling_defaults(config: str | Path | Mapping, *, fallback_guidance: float = GUIDANCE_SCALE) -> SamplingDefaults:
    """A model config's `defaults:` section as sampler settings.

    `defaults.steps` if set, else 50 at native size (`defaults.size`, 512 if absent) >= 512 and 20 below;
    `defaults.guidance_scale` if set, else `fallback_guidance` (10, HumanSD's); `defaults.eta` if set, else 0.
    """
    if not isinstance(config, Mapping):
        from omegaconf import OmegaConf

        config = OmegaConf.load(config)
    defaults = config.get("defaults") or {}
    steps = defaults.get("steps")
    if steps is None:
        steps = FULL_SIZE_STEPS if int(defaults.get("size", 512)) >= 512 else SMALL_MODEL_STEPS
    scale = defaults.get("guidance_scale")
    scale = fallback_guidance if scale is None else float(scale)
    eta = float(defaults.get("eta") or 0.0)
    if int(steps) < 1 or not scale >= 0 or not 0 <= eta <= 1:
        raise ValueError(
            f"Config defaults need steps >= 1, guidance_scale >= 0 and 0 <= eta <= 1; got {steps}, {scale}, {eta}."
        )
    return SamplingDefaults(int(steps), scale, eta)


def resolve_model(
    config: Path | None, ckpt: Path | list[Path] | None
) -> tuple[Path, Path | list[Path] | None, str | None]:
    """(config, checkpoint(s) or None for random weights, notice or None).

    `ckpt` is one file or several that together hold the model (e.g. a base file + a UNet file; `--ckpt` given
    repeatedly); a one-element list counts as one file. An explicitly named checkpoint must exist
    (FileNotFoundError otherwise); only the implicit default falls back.
    """
    if isinstance(ckpt, (list, tuple)):
        ckpt = [Path(c) for c in ckpt] if len(ckpt) > 1 else (Path(ckpt[0]) if ckpt else None)
    named = ckpt if isinstance(ckpt, list) else [] if ckpt is None else [ckpt]
    for path in named:
        if not Path(path).is_file():
            raise FileNotFoundError(missing_file_message(Path(path)))
    if config is not None:
        return Path(config), ckpt, None
    if ckpt is not None:
        return HUMANSD_CONFIG, ckpt, None
    if HUMANSD_CKPT.is_file():
        return HUMANSD_CONFIG, HUMANSD_CKPT, None
    config, ckpt, notice = embedded_model()
    return config, ckpt, f"{HUMANSD_CKPT} not found: {notice}"


def embedded_model() -> tuple[Path, list[Path] | None, str]:
    """The embedded tiny model: trained weights if shipped, else the tiny architecture with random weights."""
    if all(p.is_file() for p in TINY_CKPT):
        return (
            TINY_CONFIG,
            list(TINY_CKPT),
            f"using the embedded tiny model trained on the mannequin world ({TINY_CKPT[1].name}); "
            "it draws 128x128 mannequins, not photographs.",
        )
    return (
        RANDOM_CONFIG,
        None,
        f"no tiny weights at {TINY_CKPT[1]}: using the tiny model with random, UNTRAINED weights "
        "(the output will be noise).",
    )
