r"""Evaluate the tiny HumanSD models on the mannequin world's validation split (the ablation of issue #5).

For each loss mode (plain / paper / reference) it generates one image per validation entry with the shipped (or
given) UNet, then measures with the project's metric code: pose AP of the tiny pose net's detections against the
conditioning poses (pycocotools), PCE, and caption colour adherence on pixels. The real validation renders are
evaluated the same way as the reference row (the pose net's own AP on real images), and so are their round trips
through the shipped VAE (encode, decode): the ceiling for generated images, which can be no sharper than what the
decoder draws.

Generated images already in the output folder are reused (not generated again), so a run with another
`--pose-checkpoint` re-scores earlier samples in seconds.

Several seeds per mode give a mean ± std row per mode. Runs split over processes (one mode each, say) are
combined with `--merge`. `--compare` re-scores the generated images of earlier runs in paired folds: every loss
samples each validation entry with the same pose, prompt and noise, so the difference to the baseline loss of the
same training seed, fold by fold, tells how far apart two losses are beyond the sampling noise.

Example:
    python scripts/evaluate_mannequin.py --limit 150 --steps 25 --outdir outputs/mannequin_eval
    python scripts/evaluate_mannequin.py --modes paper --seeds 23 24 25 --device cuda --outdir outputs/eval_paper
    python scripts/evaluate_mannequin.py --merge outputs/eval_plain outputs/eval_paper --outdir outputs/eval_all
    python scripts/evaluate_mannequin.py --compare outputs/eval_plain outputs/eval_paper --folds 10 \
        --outdir outputs/eval_all
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ldm.checkpoint import load_prefixed
from ldm.config import load_config
from ldm.data.humansd import read_mappings
from ldm.data.vae_roundtrip import roundtrip_images
from ldm.inference.batch import run_batch
from ldm.inference.defaults import TINY_CONFIG
from ldm.inference.loading import build_model
from ldm.inference.pipeline import PoseToImagePipeline
from ldm.metrics.color_adherence import mean_adherence
from ldm.metrics.evaluate import EvalOptions, evaluate, pce_name
from ldm.metrics.inputs import EvalItem, EvalSet, load_index
from ldm.metrics.marking import marking_metrics
from ldm.metrics.pose_errors import ERROR_METRIC_NAMES
from ldm.pose.convert import rescale_pose
from ldm.pose.estimator import PoseEstimator
from ldm.pose.io import load_pose
from ldm.training.pose_module import read_exported_pose_config

logger = logging.getLogger("evaluate_mannequin")

WORLD = Path("humansd_data/datasets/Mannequin")
TINY = Path("humansd_data/checkpoints/tiny")
POSE_CONFIG = Path("configs/pose/higherhrnet_tiny_mannequin.yaml")
ROUNDTRIP = "VAE round trip of the real renders"


def _load(eval_set: EvalSet) -> tuple[list[np.ndarray], list[np.ndarray], list]:
    """Images, their real renders (resized to the image) and poses (in the image's pixel frame)."""
    images, references, poses = [], [], []
    for item in eval_set.items:
        images.append(np.asarray(Image.open(item.image_path).convert("RGB")))
        h, w = images[-1].shape[:2]
        with Image.open(item.reference_image) as ref:
            pose = load_pose(item.pose_path, width=ref.width, height=ref.height)
            references.append(np.asarray(ref.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)))
        poses.append(rescale_pose(pose, w, h))
    return images, references, poses


def _pixel_scores(eval_set: EvalSet, marking: bool) -> dict[str, float | None]:
    """Caption adherence, and with `marking` the left-limb marking figures (ldm.metrics.marking)."""
    images, references, poses = _load(eval_set)
    scores = {"adherence": mean_adherence(images, [item.prompt for item in eval_set.items], poses)["score"]}
    if marking:
        scores |= marking_metrics(images, references, poses)
    return scores


def _score(eval_set: EvalSet, detector: PoseEstimator, errors: bool = False) -> dict[str, float]:
    options = EvalOptions(metrics=("pose",), pce_min_scores=(PCE_MIN_SCORE,), pose_errors=errors)
    result = evaluate(eval_set, detector=detector, options=options)
    m = result.overall.metrics
    row = {"images": result.overall.counts.get("images", len(eval_set.items))}
    row.update({key: m.get(key) for key in METRICS if key != "adherence"})
    if errors:
        row.update({key: m.get(key) for key in ERROR_METRIC_NAMES})
    row.update(_pixel_scores(eval_set, marking=errors))
    return row


def _detector(checkpoint: Path) -> PoseEstimator:
    """The pose net scoring every row, with the estimator config stored in its file (else the tiny preset YAML)."""
    try:
        config = read_exported_pose_config(checkpoint)
    except ValueError:
        config = POSE_CONFIG
    return PoseEstimator.from_checkpoint(checkpoint, config)


def _shipped_vae(path: Path = TINY / "base-tiny.safetensors"):
    """The VAE of the shipped base file (the one every tiny UNet decodes with), or of another file."""
    vae = build_model(load_config(TINY_CONFIG)).vae
    load_prefixed(vae, path, "first_stage_model.")
    return vae.eval()


def _roundtrip_set(records, vae, out: Path, device: str) -> EvalSet:
    """The real renders encoded and decoded by `vae` (posterior mode), written to `out` as PNG."""
    out.mkdir(parents=True, exist_ok=True)
    vae = vae.to(device)
    items = []
    for r in records:
        image = np.array(Image.open(r.image_path).convert("RGB"))
        path = out / f"{r.key.replace('/', '_')}.png"
        Image.fromarray(roundtrip_images(vae, image[None])[0]).save(path)
        items.append(EvalItem(r.key, path, r.prompt, Path(r.image).parent.name, r.pose_path, r.image_path))
    return EvalSet(items, source="VAE round trips of the real validation renders")


def _real_set(records) -> EvalSet:
    items = [
        EvalItem(r.key, r.image_path, r.prompt, Path(r.image).parent.name, r.pose_path, r.image_path) for r in records
    ]
    return EvalSet(items, source="real validation renders")


def _entry_range(text: str) -> tuple[int, int]:
    """`START:STOP` (validation entry numbers, STOP excluded) for --exclude."""
    try:
        start, stop = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP, e.g. 500:700; got {text!r}") from None
    if not 0 <= start < stop:
        raise argparse.ArgumentTypeError(f"need 0 <= START < STOP; got {text!r}")
    return start, stop


def _generate(pipe: PoseToImagePipeline, records: list, out: Path, args: argparse.Namespace) -> None:
    """One sample per entry (entry-keyed seeds: every UNet gets the same pose, prompt and noise)."""
    run_batch(
        pipe,
        records,
        out,
        n=1,
        seed=1,
        progress=False,
        negative_prompt="",
        num_inference_steps=args.steps,
        guidance_scale=args.scale,
        sampler=args.sampler,
        eta=args.eta,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", nargs="+", default=["plain", "paper", "reference"], help="UNets to evaluate")
    p.add_argument("--seeds", nargs="+", type=int, default=[23], help="training seeds (files *-s<seed> if != 23)")
    p.add_argument("--limit", type=int, default=150, help="validation entries")
    p.add_argument(
        "--offset",
        type=int,
        default=0,
        help="first validation entry (e.g. tune sampler settings on entries the reported table does not use)",
    )
    p.add_argument("--steps", type=int, help="DDIM steps (default: the tiny config's `defaults.steps`)")
    p.add_argument(
        "--exclude",
        type=_entry_range,
        metavar="START:STOP",
        help="leave validation entries START..STOP-1 out (e.g. the ones sampler settings were tuned on)",
    )
    p.add_argument(
        "--scale", type=float, help="guidance scale (default: the tiny config's `defaults.guidance_scale`, 1)"
    )
    p.add_argument("--sampler", default="ddim", choices=["ddim", "plms", "dpmpp_2m"], help="sampler")
    p.add_argument("--eta", type=float, help="DDIM noise (default: the tiny config's `defaults.eta`)")
    p.add_argument("--outdir", type=Path, default=Path("outputs/mannequin_eval"), help="output folder")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--device", default="cpu", help="torch device for generation and pose detection")
    p.add_argument("--unet-dir", type=Path, default=TINY, help="folder of the humansd-tiny-<mode>[-s<seed>] files")
    p.add_argument(
        "--pose-checkpoint",
        type=Path,
        default=TINY / "pose-tiny.safetensors",
        help="pose net that scores every row (its config is read from the file's metadata)",
    )
    p.add_argument("--no-roundtrip", action="store_true", help="skip the VAE round-trip (ceiling) row")
    p.add_argument(
        "--base",
        type=Path,
        default=TINY / "base-tiny.safetensors",
        help="VAE + text tower file the UNets are loaded with (e.g. a base file with a fine-tuned decoder)",
    )
    p.add_argument(
        "--vae",
        type=Path,
        help="VAE of the round-trip row: any file with first_stage_model.* keys (e.g. a retrained vae-tiny; "
        "default: --base's)",
    )
    p.add_argument(
        "--errors",
        action="store_true",
        help="add the keypoint error diagnosis per row (share of joints inverted left/right, missed, ...; AP with "
        "each error type corrected) and the left-limb marking of single-figure entries (share on the right side, "
        "median strength against the real render) to ablation.json and a second table",
    )
    p.add_argument("--merge", nargs="+", type=Path, metavar="DIR", help="only combine earlier runs' tables")
    p.add_argument(
        "--compare",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="only compare the generated images of earlier runs with --baseline's, seed by seed, in paired folds "
        "(writes paired.json and paired.md to --outdir)",
    )
    p.add_argument("--baseline", default="plain", help="`--compare`: the loss the others are compared with")
    p.add_argument("--folds", type=int, default=10, help="`--compare`: folds of consecutive validation entries")
    args = p.parse_args(argv)
    if args.offset < 0 or args.limit < 1:
        p.error(f"--offset must be >= 0 and --limit >= 1 (got {args.offset}, {args.limit})")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.merge and args.compare:
        p.error("--merge and --compare are separate jobs; run them one after the other")
    if args.merge:
        return merge(args.merge, args.outdir)
    torch.set_num_threads(args.threads)
    if args.compare:
        if args.folds < 2:
            p.error(f"--folds must be >= 2 (got {args.folds})")
        return compare(args.compare, args.baseline, args.folds, _detector(args.pose_checkpoint), args.outdir)
    if not (WORLD / "mapping_file_validation.json").is_file():
        print(
            f"evaluate_mannequin: error: no mannequin world at {WORLD}; generate it with "
            f"python scripts/make_mannequin_world.py --out {WORLD} --n 10000 --size 128 --seed 0",
            file=sys.stderr,
        )
        return 2
    records = read_mappings(WORLD / "mapping_file_validation.json")[args.offset : args.offset + args.limit]
    if args.exclude is not None:
        start, stop = args.exclude
        records = [r for i, r in enumerate(records, args.offset) if not start <= i < stop]
    if not records:
        p.error(f"no validation entries left (--offset {args.offset}, --limit {args.limit}, --exclude)")
    detector = _detector(args.pose_checkpoint).to(args.device)
    rows = {"real renders": _score(_real_set(records), detector, args.errors)}
    if not args.no_roundtrip:
        vae = _shipped_vae(args.base if args.vae is None else args.vae).to(args.device)
        rows[ROUNDTRIP] = _score(
            _roundtrip_set(records, vae, args.outdir / "vae-roundtrip", args.device), detector, args.errors
        )
        logger.info("%s: %s", ROUNDTRIP, rows[ROUNDTRIP])
    for mode in args.modes:
        for seed in args.seeds:
            name = f"humansd-tiny-{mode}" + ("" if seed == 23 else f"-s{seed}")
            unet = args.unet_dir / f"{name}.safetensors"
            if not unet.is_file():
                logger.warning("Skipping %s: %s not found", name, unet)
                continue
            start = time.perf_counter()
            pipe = PoseToImagePipeline.from_config(TINY_CONFIG, [args.base, unet], device=args.device)
            out = args.outdir / name
            try:
                _generate(pipe, records, out, args)
            except ValueError as err:  # e.g. the folder holds images made with other settings
                print(f"evaluate_mannequin: error: {err}", file=sys.stderr)
                return 2
            rows[f"{mode} (seed {seed})"] = _score(load_index(out), detector, args.errors)
            logger.info("%s: %s in %.0f s", name, rows[f"{mode} (seed {seed})"], time.perf_counter() - start)
    _write_tables(rows, args.outdir)
    return 0


# Person score the second PCE column counts from: the tiny pose net's fragments score below ~0.15, persons on real
# renders above ~0.47 (ldm/metrics/pce.py). The original PCE (every detection) stays the first PCE column.
PCE_MIN_SCORE = 0.2
METRICS = ("AP", "AP50", "PCE", pce_name(PCE_MIN_SCORE), "adherence")
HEADER = f"pose AP | AP50 | PCE | PCE (score >= {PCE_MIN_SCORE:g}) | caption adherence |"
RULE = "|---|---|---|---|---|---|---|"
# Columns of the error-diagnosis table (--errors): shares of labelled joints, AP with errors corrected.
ERROR_TABLE = ("joints good", "joints jitter", "joints inversion", "joints miss", "AP fixed inversion", "AP fixed all")
# ... and the left-limb marking of the single-figure entries (ldm/metrics/marking.py): share drawn on the right side,
# median strength relative to the real render.
MARKING_TABLE = ("marking agreement", "marking contrast")


def summarize(rows: dict[str, dict]) -> dict[str, dict]:
    """Mean ± sample standard deviation over the seeds of each mode (rows named "<mode> (seed N)")."""
    by_mode: dict[str, list[dict]] = {}
    for name, row in rows.items():
        if " (seed " in name:
            by_mode.setdefault(name.split(" (seed ")[0], []).append(row)
    summary = {}
    for mode, runs in by_mode.items():
        entry = {"seeds": len(runs), "images": sum(int(r["images"]) for r in runs)}
        for key in METRICS:
            values = [r[key] for r in runs if r.get(key) is not None]
            entry[key] = statistics.fmean(values) if values else None
            entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        summary[mode] = entry
    return summary


def _write_tables(rows: dict[str, dict], outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows)
    (outdir / "ablation.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"

    lines = [f"| model | images | {HEADER}", RULE]
    for name, r in rows.items():
        cells = " | ".join(fmt(r.get(k)) for k in METRICS)
        lines.append(f"| {name} | {r['images']} | {cells} |")
    if summary:
        lines += ["", f"| mode | seeds | {HEADER}", RULE]
        for mode, e in summary.items():
            cells = " | ".join(
                fmt(e[k]) + ("" if e[f"{k}_std"] is None else f" ± {e[f'{k}_std']:.3f}") for k in METRICS
            )
            lines.append(f"| {mode} | {e['seeds']} | {cells} |")
    diagnosed = {name: r for name, r in rows.items() if r.get(ERROR_TABLE[0]) is not None}
    if diagnosed:
        columns = ERROR_TABLE + MARKING_TABLE
        lines += ["", "| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        lines += [f"| {name} | " + " | ".join(fmt(r.get(k)) for k in columns) + " |" for name, r in diagnosed.items()]
    (outdir / "ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def merge(dirs: list[Path], outdir: Path) -> int:
    """Combine the per-run `ablation.json` files of several evaluation folders into one table."""
    rows: dict[str, dict] = {}
    for d in dirs:
        path = d / "ablation.json"
        if not path.is_file():
            print(f"evaluate_mannequin: error: no {path} (run the evaluation into {d} first)", file=sys.stderr)
            return 2
        data = json.loads(path.read_text())
        for name, row in data.get("rows", data).items():
            if name in rows and name not in ("real renders", ROUNDTRIP) and rows[name] != row:
                print(f"evaluate_mannequin: error: {name!r} is in two runs with different results", file=sys.stderr)
                return 2
            rows.setdefault(name, row)  # the real-render rows are the same in every run
    _write_tables(rows, outdir)
    return 0


RUN_FOLDER = re.compile(r"humansd-tiny-(?P<mode>[a-z]+)(?:-s(?P<seed>\d+))?")
# What the paired comparison reports per fold (the AP-like figures: higher is better, PCE: lower).
PAIRED_METRICS = ("AP", "AP50", pce_name(PCE_MIN_SCORE))


def find_runs(dirs: list[Path]) -> dict[tuple[str, int], EvalSet]:
    """The generated-image folders (``humansd-tiny-<mode>[-s<seed>]``) of evaluation runs, by (mode, seed)."""
    runs: dict[tuple[str, int], EvalSet] = {}
    for d in dirs:
        for folder in sorted(d.iterdir()) if d.is_dir() else []:
            match = RUN_FOLDER.fullmatch(folder.name)
            if match is None or not any(folder.glob("index.shard-*.json")):
                continue
            key = (match["mode"], int(match["seed"] or 23))
            if key in runs:
                raise ValueError(f"{folder.name} is in two of the folders given; pass each run once")
            runs[key] = load_index(folder)
    return runs


def fold_scores(eval_set: EvalSet, detector, folds: int) -> list[dict[str, float]]:
    """PAIRED_METRICS of each fold of consecutive entries (ordered by image id), detecting every image once."""
    items = sorted(eval_set.items, key=lambda item: item.image_id)
    options = EvalOptions(metrics=("pose",), pce_min_scores=(PCE_MIN_SCORE,))
    found = evaluate(EvalSet(items, source=eval_set.source), detector=detector, options=options).detections
    scores = []
    for part in np.array_split(np.arange(len(items)), folds):
        subset = EvalSet([items[i] for i in part], source=eval_set.source)
        m = evaluate(subset, detections=found, options=options).overall.metrics
        scores.append({key: m.get(key) for key in PAIRED_METRICS})
    return scores


def paired_differences(
    scores: dict[tuple[str, int], list[dict[str, float]]], baseline: str
) -> dict[str, dict[str, dict[str, float]]]:
    """Each loss minus `baseline`, fold by fold within a training seed, pooled over the seeds both have.

    Returns, per loss and metric: ``mean`` and ``se`` (standard error) of the fold differences, ``higher`` (folds
    where the loss scores higher) out of ``folds``, the per-seed mean differences (``seeds``) and, with two seeds or
    more, their sample standard deviation (``seed_std``: how much the training seed moves the difference).
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for mode in sorted({m for m, _ in scores} - {baseline}):
        seeds = sorted(s for m, s in scores if m == mode and (baseline, s) in scores)
        if not seeds:
            continue
        out[mode] = {}
        for key in PAIRED_METRICS:
            diffs, per_seed = [], {}
            for seed in seeds:
                pairs = zip(scores[(mode, seed)], scores[(baseline, seed)], strict=True)
                d = [a[key] - b[key] for a, b in pairs if a.get(key) is not None and b.get(key) is not None]
                diffs += d
                per_seed[seed] = statistics.fmean(d) if d else None
            if len(diffs) < 2:
                continue
            seed_means = [v for v in per_seed.values() if v is not None]
            out[mode][key] = {
                "mean": statistics.fmean(diffs),
                "se": statistics.stdev(diffs) / math.sqrt(len(diffs)),
                "higher": sum(d > 0 for d in diffs),
                "folds": len(diffs),
                "seeds": per_seed,
                "seed_std": statistics.stdev(seed_means) if len(seed_means) > 1 else None,
            }
    return out


def compare(dirs: list[Path], baseline: str, folds: int, detector, outdir: Path) -> int:
    """Score the runs found in `dirs` fold by fold and write each loss's paired difference to `baseline`."""
    try:
        runs = find_runs(dirs)
    except ValueError as err:
        print(f"evaluate_mannequin: error: {err}", file=sys.stderr)
        return 2
    if not any(mode == baseline for mode, _ in runs):
        print(
            f"evaluate_mannequin: error: no {baseline!r} run (humansd-tiny-{baseline}[-s<seed>] with index files) "
            f"in {', '.join(map(str, dirs))}",
            file=sys.stderr,
        )
        return 2
    for (mode, seed), run in runs.items():
        base = runs.get((baseline, seed))
        if base is None:
            logger.warning(
                "%s (seed %d) has no %s run of the same seed to pair with; it is left out", mode, seed, baseline
            )
            continue
        if {i.image_id for i in run.items} != {i.image_id for i in base.items}:
            print(
                f"evaluate_mannequin: error: {mode} (seed {seed}) and {baseline} (seed {seed}) have different "
                "images; compare runs of the same validation entries",
                file=sys.stderr,
            )
            return 2
    runs = {key: run for key, run in runs.items() if (baseline, key[1]) in runs}
    fewest = min(len(run.items) for run in runs.values())
    if fewest < folds:
        print(
            f"evaluate_mannequin: error: {folds} folds need >= {folds} images per run (a run has {fewest})",
            file=sys.stderr,
        )
        return 2
    scores = {}
    for key, run in sorted(runs.items()):
        start = time.perf_counter()
        scores[key] = fold_scores(run, detector, folds)
        logger.info("%s (seed %d): %d folds scored in %.0f s", *key, folds, time.perf_counter() - start)
    diffs = paired_differences(scores, baseline)
    outdir.mkdir(parents=True, exist_ok=True)
    dump = {"baseline": baseline, "folds": folds, "scores": {f"{m} (seed {s})": v for (m, s), v in scores.items()}}
    (outdir / "paired.json").write_text(json.dumps({**dump, "differences": diffs}, indent=1))
    lines = [
        f"Paired differences to {baseline} ({folds} folds per seed; mean ± standard error over the folds of all "
        "seeds; folds where the loss scores higher; per-seed means)",
        "",
        "| loss | metric | difference | folds higher | per seed | std over seeds |",
        "|---|---|---|---|---|---|",
    ]
    for mode, by_key in diffs.items():
        for key, d in by_key.items():
            seeds = ", ".join("n/a" if v is None else f"{s}: {v:+.4f}" for s, v in d["seeds"].items())
            spread = "n/a" if d["seed_std"] is None else f"{d['seed_std']:.4f}"
            lines.append(
                f"| {mode} | {key} | {d['mean']:+.4f} ± {d['se']:.4f} | {d['higher']} of {d['folds']} | {seeds} | "
                f"{spread} |"
            )
    (outdir / "paired.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
