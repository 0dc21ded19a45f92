"""HumanSD Gradio demo: generate people in a pose you pick, upload or edit by clicking.

Runs the real HumanSD when its weights are present (humansd_data/checkpoints/humansd-v1.ckpt), otherwise the
embedded tiny model, and says so in a banner. Serves on 127.0.0.1 without a public link unless asked.

Examples:
    python scripts/gradio/pose2img.py
    python scripts/gradio/pose2img.py --ckpt humansd_data/checkpoints/humansd-v1.ckpt --device cuda --precision fp16
    python scripts/gradio/pose2img.py --detector higherhrnet --detector-ckpt humansd_data/checkpoints/higherhrnet.pth
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ldm.cli import HelpFormatter

logger = logging.getLogger("pose2img-demo")

DETECTORS = ("mediapipe", "higherhrnet", "none")
DEFAULT_DETECTOR = "mediapipe"


def build_parser() -> argparse.ArgumentParser:
    """The demo's command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--config", type=Path, help="model config (default: HumanSD if its weights exist, else tiny)")
    p.add_argument("--ckpt", type=Path, action="append", help="weights (.ckpt/.safetensors); repeat for base + UNet")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast precision")
    p.add_argument("--host", default="127.0.0.1", help="interface to serve on (0.0.0.0 exposes it on the network)")
    p.add_argument("--port", type=int, default=7860, help="TCP port")
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link")
    p.add_argument(
        "--detector",
        choices=DETECTORS,
        help=f"pose detector for uploaded photos (default: {DEFAULT_DETECTOR}, or none when it is not installed)",
    )
    p.add_argument("--detector-ckpt", type=Path, help="HigherHRNet weights (for --detector higherhrnet)")
    return p


def load_detector(kind: str | None, checkpoint: Path | None):
    """The photo pose detector; None for "none".

    The default (kind None: MediaPipe, an optional dependency) falls back to no detector with a logged warning;
    an explicitly chosen detector that cannot be set up raises.

    Raises:
        ImportError, FileNotFoundError, ValueError: an explicitly chosen detector is not installed or has no weights.
    """
    if kind == "none":
        return None
    from ldm.pose.estimator import build_detector

    kwargs = {"checkpoint": checkpoint} if kind == "higherhrnet" and checkpoint is not None else {}
    try:
        return build_detector(kind or DEFAULT_DETECTOR, **kwargs)
    except (ImportError, FileNotFoundError, ValueError) as err:
        if kind is not None:
            raise
        logger.warning("No pose detector: uploaded photos get an empty pose to edit by hand (%s).", err)
        return None


def main(argv: list[str] | None = None) -> int:
    """Build the slots (nothing loads until the first generation), the UI, and serve it."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Gradio-internal request otherwise
    from ldm.demo.app import build_demo, launch_demo
    from ldm.demo.slots import SlotOptions, build_slots
    from ldm.inference.defaults import resolve_model

    try:
        config, ckpt, notice = resolve_model(args.config, args.ckpt)
        detector = load_detector(args.detector, args.detector_ckpt)
    except (ImportError, FileNotFoundError, ValueError) as err:
        logger.error("%s", str(err).strip().splitlines()[0] if str(err).strip() else err)
        return 2
    if notice:
        logger.warning("%s", notice)
    slots = build_slots(SlotOptions(config, ckpt, device=args.device, precision=args.precision))
    demo = build_demo(slots, detector=detector, banner=notice)
    launch_demo(demo, host=args.host, port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
