"""Which model to run when the user names none: the real HumanSD if its weights are present, else the embedded
tiny model (shipped weights, or random weights as a last resort), always with a notice saying which."""

from __future__ import annotations

from pathlib import Path

from ldm.checkpoint import missing_file_message

HUMANSD_CONFIG = Path("configs/humansd/humansd-inference.yaml")
HUMANSD_CKPT = Path("humansd_data/checkpoints/humansd-v1.ckpt")
TINY_CONFIG = Path("configs/tiny/humansd-tiny.yaml")
TINY_CKPT = Path("humansd_data/checkpoints/tiny/humansd-tiny-paper.safetensors")


def resolve_model(config: Path | None, ckpt: Path | None) -> tuple[Path, Path | None, str | None]:
    """(config, checkpoint or None for random weights, notice or None).

    An explicitly named checkpoint must exist (FileNotFoundError otherwise); only the implicit default falls back.
    """
    if ckpt is not None and not Path(ckpt).is_file():
        raise FileNotFoundError(missing_file_message(Path(ckpt)))
    if config is not None:
        return Path(config), ckpt, None
    if ckpt is not None:
        return HUMANSD_CONFIG, ckpt, None
    if HUMANSD_CKPT.is_file():
        return HUMANSD_CONFIG, HUMANSD_CKPT, None
    if TINY_CKPT.is_file():
        return TINY_CONFIG, TINY_CKPT, f"{HUMANSD_CKPT} not found: using the embedded tiny model ({TINY_CKPT})."
    return (
        TINY_CONFIG,
        None,
        f"{HUMANSD_CKPT} not found and no tiny weights at {TINY_CKPT}: using the tiny model with random, UNTRAINED "
        "weights (the output will be noise).",
    )
