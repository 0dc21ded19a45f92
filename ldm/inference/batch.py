"""Batch generation over a Human-Art / LAION-Human mapping file: resumable, shardable, indexed for the metrics.

Outputs mirror the dataset tree: `<outdir>/images/<img_path without suffix>_<k>.png` and
`<outdir>/poses/<img_path without suffix>.png`, so per-scenario folders come for free. Each entry's seed is
derived from the run seed and the entry key, so results do not depend on sharding or on resuming. Files are written
atomically; a rerun skips entries whose images all exist. Each shard writes `index.shard-<i>-of-<n>.json`, with the
generation settings; a rerun into a folder whose index records other settings (steps, guidance, seed, weights, ...)
is refused rather than mixing images made two ways.
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from ldm.data.humansd import MappingRecord, read_mappings
from ldm.inference.outputs import atomic_save_image, atomic_write_text
from ldm.inference.pipeline import PoseToImagePipeline
from ldm.pose.convert import rescale_pose, resize_for_generation
from ldm.pose.io import load_pose

logger = logging.getLogger(__name__)


@dataclass
class BatchReport:
    """What a batch run did."""

    generated: int = 0
    skipped_existing: int = 0
    missing_inputs: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.generated} generated, {self.skipped_existing} already done, "
            f"{len(self.missing_inputs)} skipped for missing/unreadable inputs"
        )


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4); got {text!r}.") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard i/n needs 0 <= i < n; got {text!r}.")
    return i, n


def entry_seed(seed: int, key: str) -> int:
    """A per-entry seed independent of order, sharding and resumption."""
    return (seed * 1_000_003 + zlib.crc32(key.encode())) % (2**31 - 1)


def output_paths(outdir: Path, record: MappingRecord, n: int) -> list[Path]:
    stem = Path(record.rel_image_path).with_suffix("")
    return [outdir / "images" / f"{stem}_{k}.png" for k in range(n)]


def _load_entry_pose(record: MappingRecord, short_side: int, multiple: int):
    with Image.open(record.image_path) as im:  # reads the header only: the pose's coordinate frame
        width, height = im.size
    pose = load_pose(record.pose_path, width=width, height=height)
    h, w = resize_for_generation(height, width, short_side, multiple)
    return rescale_pose(pose, w, h), (h, w)


def run_batch(
    pipe: PoseToImagePipeline,
    records: list[MappingRecord],
    outdir: Path,
    *,
    n: int = 1,
    seed: int = 42,
    added_prompt: str = "",
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
    extra: dict[str, Any] | None = None,
    **gen_kwargs: Any,
) -> BatchReport:
    """Generate `n` images per mapping record (this shard's share), skipping finished ones.

    Args:
        pipe: the pipeline.
        records: all mapping records (the shard's subset is taken here: index % shard_n == shard_i).
        outdir: output root.
        n: images per record.
        seed: run seed (combined with each record key).
        added_prompt: appended as "prompt, added_prompt" (the original's default quality suffix).
        shard: (i, n) shard of the records to process.
        progress: tqdm bar with ETA.
        extra: additional fields for the index (config, checkpoint fingerprint, ...).
        gen_kwargs: forwarded to the pipeline call (steps, guidance_scale, sampler, ...).

    Returns:
        A `BatchReport`; the index file lists every finished entry of the shard.
    """
    i, num = shard
    # Record what the pipeline will use when a setting is left to the model's defaults.
    gen_kwargs = {
        **gen_kwargs,
        "num_inference_steps": (
            pipe.sampling.steps if gen_kwargs.get("num_inference_steps") is None else gen_kwargs["num_inference_steps"]
        ),
        "guidance_scale": (
            pipe.sampling.guidance_scale if gen_kwargs.get("guidance_scale") is None else gen_kwargs["guidance_scale"]
        ),
    }
    if "eta" in gen_kwargs:
        gen_kwargs["eta"] = pipe.resolve_eta(gen_kwargs["eta"], gen_kwargs.get("sampler", "ddim"))
    meta = {"shard": f"{i}/{num}", "n": n, "seed": seed, "added_prompt": added_prompt, **gen_kwargs, **(extra or {})}
    index_path = Path(outdir) / f"index.shard-{i}-of-{num}.json"
    _check_same_settings(index_path, meta)
    mine = [r for idx, r in enumerate(records) if idx % num == i]
    report, index = BatchReport(), []
    short_side, multiple = min(pipe.default_size), pipe.model.image_multiple
    for record in tqdm(mine, desc=f"pose2img shard {i}/{num}", unit="entry", disable=not progress):
        paths = output_paths(outdir, record, n)
        if all(p.is_file() for p in paths):
            report.skipped_existing += 1
        else:
            try:
                pose, (h, w) = _load_entry_pose(record, short_side, multiple)
            except (OSError, ValueError) as err:
                report.missing_inputs.append(record.key)
                logger.warning("Skipping %s: %s", record.key, err)
                continue
            prompt = f"{record.prompt}, {added_prompt}" if added_prompt else record.prompt
            out = pipe(prompt, pose, seed=entry_seed(seed, record.key), num_images=n, height=h, width=w, **gen_kwargs)
            atomic_save_image(out.pose_map, outdir / "poses" / f"{Path(record.rel_image_path).with_suffix('')}.png")
            for path, image in zip(paths, out.images, strict=True):
                atomic_save_image(image, path)
            report.generated += 1
        index.append(
            {
                "key": record.key,
                "prompt": record.prompt,
                "scenario": Path(record.rel_image_path).parent.name,
                "reference_image": str(record.image_path),
                "pose_path": str(record.pose_path),
                "generated": [str(p.relative_to(outdir)) for p in paths],
            }
        )
    payload = {"meta": meta, "report": asdict(report), "entries": index}
    atomic_write_text(json.dumps(payload, indent=1, default=str), index_path)
    logger.info("Batch shard %d/%d: %s.", i, num, report.summary())
    return report


def _check_same_settings(index_path: Path, meta: dict[str, Any]) -> None:
    """Refuse to add images to a folder whose existing index records other generation settings."""
    if not index_path.is_file():
        return
    try:
        old = json.loads(index_path.read_text())["meta"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{index_path} is not a readable batch index ({err}); move it away to start over.") from None
    new = json.loads(json.dumps(meta, default=str))
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        diff = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ValueError(
            f"{index_path.parent} holds images generated with other settings ({diff}); "
            "use another output folder, or delete that one to start over."
        )


def run_batch_from_args(args: Any, pipe: PoseToImagePipeline, extra: dict[str, Any]) -> BatchReport:
    """The `scripts/pose2img.py --from-mapping` path (kept here so the script stays thin)."""
    records = read_mappings(args.from_mapping, args.base_path)
    if args.limit is not None:
        records = records[: args.limit]
    return run_batch(
        pipe,
        records,
        args.outdir,
        n=args.n,
        seed=args.seed,
        added_prompt=args.added_prompt,
        shard=parse_shard(args.shard),
        extra=extra,
        negative_prompt=args.negative_prompt,
        num_inference_steps=args.steps,
        guidance_scale=args.scale,
        eta=args.eta,
        sampler=args.sampler,
        timestep_spacing=args.spacing,
        pose_threshold=args.threshold,
    )
