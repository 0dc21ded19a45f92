"""Evaluate pose-conditioned generation: pose AP/AR, CAP, PCE (pose), FID/KID (quality), CLIPSIM (text).

Inputs (one of):
  --index DIR                 a scripts/pose2img.py --from-mapping run (reads every DIR/index.shard-*.json)
  --images DIR --mapping M    any generated folder: the entry with img_path <p>/<name>.<ext> uses
                              DIR/<p>/<name>_<k>.png (k = 0, 1, ...; also .jpg/.jpeg/.webp), else DIR/<img_path>
  --from-mapping M            generate first with a model (--config/--ckpt; default as scripts/pose2img.py), into
                              --outdir, then evaluate that run
  --compare NAME=PATH ...     no evaluation: side-by-side paper table + per-scenario chart of earlier runs

Writes metrics.json, metrics.md, metrics.csv (overall and per scenario, with the image counts behind each figure)
and detections.json to --outdir. A metric group whose network or weights are missing is skipped with a message;
the exit code is non-zero only when nothing could be computed (or the input is unusable).

Examples:
    python scripts/pose2img_metrics.py --index outputs/eval/humansd --outdir outputs/eval/humansd \\
        --inception-weights humansd_data/checkpoints/pt_inception-2015-12-05-6726825d.pth \\
        --clip-model ViT-B-16-quickgelu --clip-weights humansd_data/checkpoints/open_clip_vit_b16_openai.bin
    python scripts/pose2img_metrics.py --images outputs/controlnet --mapping \\
        humansd_data/datasets/HumanArt/mapping_file_validation.json --metrics pose --detector mediapipe
    python scripts/pose2img_metrics.py --compare HumanSD=outputs/eval/humansd ControlNet=outputs/eval/controlnet \\
        --outdir outputs/eval/compare --with-paper
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ldm.cli import HelpFormatter
from ldm.metrics.clip_score import DEFAULT_CLIP_MODEL, ClipScorer
from ldm.metrics.evaluate import METRIC_GROUPS, EvalOptions, evaluate, read_detections, write_outputs
from ldm.metrics.features import FEATURE_NETS, INCEPTION_DIMS, load_feature_extractor
from ldm.metrics.inputs import EvalSet, load_folder, load_index
from ldm.metrics.report import write_comparison

logger = logging.getLogger("pose2img_metrics")

TINY_POSE_CKPT = Path("humansd_data/checkpoints/tiny/pose-tiny.safetensors")
TINY_POSE_CONFIG = Path("configs/pose/higherhrnet_tiny_mannequin.yaml")
_RESOURCE_ERRORS = (FileNotFoundError, ValueError, ImportError, RuntimeError, OSError)
METRICS_GUIDANCE_SCALE = 9.0  # the original metrics generated with guidance 9 (spec)


def parse_metrics(text: str) -> tuple[str, ...]:
    """'pose,quality' -> ('pose', 'quality'); 'all' -> every group."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return METRIC_GROUPS
    unknown = [n for n in names if n not in METRIC_GROUPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"--metrics takes a comma-separated subset of {','.join(METRIC_GROUPS)} (or 'all'); got {text!r}."
        )
    return tuple(dict.fromkeys(names))


def _named_path(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--compare entries look like NAME=path/to/metrics.json; got {text!r}.")
    return name, Path(path)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    src = p.add_argument_group("inputs (choose one)")
    src.add_argument("--index", type=Path, help="batch-generation run folder holding index.shard-*.json")
    src.add_argument("--images", type=Path, help="folder of generated images (with --mapping)")
    src.add_argument("--mapping", type=Path, help="mapping JSON linking --images to prompts, poses, references")
    src.add_argument("--from-mapping", type=Path, help="generate from this mapping with --config/--ckpt, then evaluate")
    src.add_argument("--base-path", type=Path, help="root of the mapping's relative paths (default: its folder)")
    src.add_argument("--compare", nargs="+", type=_named_path, metavar="NAME=PATH", help="compare earlier runs only")
    src.add_argument("--with-paper", action="store_true", help="--compare: add the paper's published rows")
    p.add_argument(
        "--outdir",
        type=Path,
        help="where metrics files go (default: the --index folder; outputs/eval for --images, --from-mapping, "
        "--compare)",
    )
    p.add_argument("--metrics", type=parse_metrics, default=",".join(METRIC_GROUPS), help="comma-separated groups")
    pose = p.add_argument_group("pose metrics")
    pose.add_argument("--detector", choices=["higherhrnet", "mediapipe"], default="higherhrnet", help="pose detector")
    pose.add_argument("--detector-ckpt", type=Path, help="HigherHRNet weights (default: W48, else the tiny world's)")
    pose.add_argument("--detector-config", type=Path, help="HigherHRNet config YAML (default: w48 preset)")
    pose.add_argument("--detections", type=Path, help="reuse a detections.json of an earlier run instead")
    pose.add_argument(
        "--pose-errors",
        action="store_true",
        help="add a keypoint error diagnosis: shares of joints good / jitter / inversion / swap / miss, AP per fix",
    )
    pose.add_argument("--cap-original-bug", action="store_true", help="reproduce the original CAP y-coordinate bug")
    pose.add_argument(
        "--pce-min-score",
        type=float,
        nargs="+",
        default=[],
        metavar="S",
        help="also report PCE@S: PCE counting only detections with person score >= S (the original PCE stays)",
    )
    quality = p.add_argument_group("quality metrics")
    quality.add_argument("--feature-net", choices=FEATURE_NETS, default="inception", help="'tiny' = tiny world only")
    quality.add_argument("--inception-weights", type=Path, help="pt_inception-2015-12-05-6726825d.pth (local)")
    quality.add_argument("--fid-features", type=int, choices=INCEPTION_DIMS, default=2048, help="Inception dims")
    quality.add_argument("--tiny-features-weights", type=Path, help="saved TinyFeatures (default: seeded)")
    quality.add_argument("--kid-subset-size", type=int, default=1000, help="KID subset size (clamped to the set)")
    quality.add_argument("--kid-subsets", type=int, default=100, help="KID subsets")
    text = p.add_argument_group("text metric")
    text.add_argument("--clip-model", default=DEFAULT_CLIP_MODEL, help="open_clip arch name or model-config .json")
    text.add_argument("--clip-weights", type=Path, help="open_clip weights file for --clip-model")
    gen = p.add_argument_group("generation (--from-mapping)")
    gen.add_argument("--config", type=Path, help="model config")
    gen.add_argument("--ckpt", type=Path, action="append", help="model weights; repeat for a base + UNet pair")
    gen.add_argument("--steps", type=int, help="sampler steps (default: the model config's; 50 for HumanSD)")
    gen.add_argument(
        "--scale",
        type=float,
        help=f"guidance scale (default: the model config's `defaults.guidance_scale` if it sets one, as the tiny "
        f"model does, else {METRICS_GUIDANCE_SCALE:g}, the original metrics')",
    )
    gen.add_argument("--sampler", default="ddim", help="sampler name")
    gen.add_argument("--seed", type=int, default=42, help="run seed")
    gen.add_argument("--n", type=int, default=1, help="images per entry")
    gen.add_argument("--limit", type=int, help="at most this many mapping entries")
    p.add_argument("--device", default="cpu", help="torch device for generation and the metric networks")
    p.add_argument("--batch-size", type=int, default=16, help="images per feature/CLIP forward pass")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 is best on a busy machine)")
    return p


def _check_source(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    chosen = [n for n in ("index", "images", "from_mapping", "compare") if getattr(args, n) is not None]
    if len(chosen) != 1:
        parser.error("give exactly one of --index, --images (with --mapping), --from-mapping or --compare.")
    if args.images is not None and args.mapping is None:
        parser.error("--images needs --mapping (the mapping JSON that links images to prompts and poses).")
    if args.mapping is not None and args.images is None:
        parser.error("--mapping goes with --images.")


def _detector(args: argparse.Namespace) -> Any:
    from ldm.pose.estimator import DEFAULT_CHECKPOINT, build_detector

    if args.detector == "mediapipe":
        return build_detector("mediapipe")
    ckpt, config = args.detector_ckpt, args.detector_config
    if ckpt is None:
        if DEFAULT_CHECKPOINT.is_file():
            ckpt = DEFAULT_CHECKPOINT
        elif TINY_POSE_CKPT.is_file() and TINY_POSE_CONFIG.is_file():
            logger.warning("%s not found: using the tiny world's pose net %s.", DEFAULT_CHECKPOINT, TINY_POSE_CKPT)
            ckpt, config = TINY_POSE_CKPT, config or TINY_POSE_CONFIG
        else:
            raise FileNotFoundError(
                f"No pose-detector weights: neither {DEFAULT_CHECKPOINT} nor the tiny world's {TINY_POSE_CKPT} "
                "exists. Pass --detector-ckpt (and --detector-config), use --detector mediapipe, or --detections."
            )
    return build_detector("higherhrnet", checkpoint=ckpt, config=config or "w48")


def _resources(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """Load each requested group's network; a failure skips that group with its message."""
    loaders = {
        "pose": lambda: (
            {"detections": read_detections(args.detections)} if args.detections else {"detector": _detector(args)}
        ),
        "quality": lambda: {
            "features": load_feature_extractor(
                args.feature_net,
                inception_weights=args.inception_weights,
                dims=args.fid_features,
                tiny_weights=args.tiny_features_weights,
            )
        },
        "text": lambda: {"clip": _clip(args)},
    }
    resources, skipped = {}, {}
    for group in args.metrics:
        try:
            loaded = loaders[group]()
            for value in loaded.values():
                if hasattr(value, "to") and not isinstance(value, dict):
                    value.to(args.device)
            resources.update(loaded)
        except _RESOURCE_ERRORS as err:
            skipped[group] = str(err)
            logger.error("Skipping %s metrics: %s", group, err)
    return resources, skipped


def _clip(args: argparse.Namespace) -> ClipScorer:
    from ldm.metrics.clip_score import CLIP_WEIGHTS_HELP

    if args.clip_weights is None:
        raise FileNotFoundError(f"--clip-weights is not given. {CLIP_WEIGHTS_HELP}")
    return ClipScorer.from_weights(args.clip_model, args.clip_weights)


def _generate(args: argparse.Namespace) -> None:
    from ldm.data.humansd import read_mappings
    from ldm.inference.batch import run_batch
    from ldm.inference.defaults import resolve_model, sampling_defaults
    from ldm.inference.outputs import weights_fingerprint
    from ldm.inference.pipeline import DEFAULT_NEGATIVE_PROMPT, PoseToImagePipeline

    config, ckpt, notice = resolve_model(args.config, args.ckpt)
    if notice:
        logger.warning(notice)
    pipe = PoseToImagePipeline.from_config(config, ckpt, device=args.device, allow_random=ckpt is None)
    records = read_mappings(args.from_mapping, args.base_path)[: args.limit]
    scale = args.scale
    if scale is None:  # the config's own default if it names one, else the original metrics' 9
        scale = sampling_defaults(config, fallback_guidance=METRICS_GUIDANCE_SCALE).guidance_scale
    extra = {"config": str(config), "checkpoint": str(ckpt), "checkpoint_fingerprint": weights_fingerprint(ckpt)}
    report = run_batch(
        pipe, records, args.outdir, n=args.n, seed=args.seed, extra=extra, negative_prompt=DEFAULT_NEGATIVE_PROMPT,
        num_inference_steps=args.steps, guidance_scale=scale, sampler=args.sampler,
    )  # fmt: skip
    logger.info("Generation: %s.", report.summary())


def _eval_set(args: argparse.Namespace) -> EvalSet:
    if args.images is not None:
        return load_folder(args.images, args.mapping, args.base_path)
    return load_index(args.index if args.index is not None else args.outdir)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_source(parser, args)
    if args.outdir is None:
        args.outdir = args.index if args.index is not None else Path("outputs/eval")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        if args.compare is not None:
            write_comparison(dict(args.compare), args.outdir, with_paper=args.with_paper)
            return 0
        eval_set = _eval_set(args) if args.from_mapping is None else None  # validate inputs before loading networks
        resources, skipped = _resources(args)
        groups = [g for g in args.metrics if g not in skipped]
        if not groups:
            logger.error("Nothing can be computed: every requested metric group was skipped (see above).")
            return 1
        if args.from_mapping is not None:
            _generate(args)
            eval_set = _eval_set(args)
        options = EvalOptions(
            metrics=groups,
            cap_original_bug=args.cap_original_bug,
            pose_errors=args.pose_errors,
            kid_subset_size=args.kid_subset_size,
            kid_subsets=args.kid_subsets,
            batch_size=args.batch_size,
            progress=True,
            pce_min_scores=args.pce_min_score,
        )
        result = evaluate(eval_set, options=options, **resources)
    except (FileNotFoundError, ValueError) as err:
        logger.error("%s", err)
        return 1
    result.meta["skipped"] = skipped
    write_outputs(result, args.outdir, title=f"Evaluation of {eval_set.source}")
    if eval_set.missing:
        logger.warning("%d listed image(s) were missing and skipped; see metrics.json meta.", len(eval_set.missing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
