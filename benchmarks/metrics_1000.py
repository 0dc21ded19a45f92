"""Time the whole evaluation (pose AP/CAP/PCE, FID/KID, CLIPSIM) of 1,000 generated 512x512 images on CPU.

Synthesises a Human-Art-like set (``--n`` entries over 6 scenarios, 1-3 random persons each): reference images and
"generated" images are rendered skeletons (``ldm.pose.render``) on noisy backgrounds, poses are plain JSON, plus a
mapping file. The networks are written to disk first and loaded by the CLI as a user would: the tiny HigherHRNet
(``configs/pose/higherhrnet_tiny.yaml``, random weights: it finds no one, so the timing covers the network passes
and an evaluation without matches), the seeded ``TinyFeatures`` and a tiny random open_clip model. Then
``scripts/pose2img_metrics.py`` runs end to end (reading images, detection, features, CLIP, COCO evaluation
overall and per scenario, tables) and the wall time of that call is reported. Synthesis is not timed.

Example:
    python -m benchmarks metrics_1000 --n 1000 --threads 1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ldm.cli import HelpFormatter
from ldm.pose.io import save_pose
from ldm.pose.keypoints import Person, Pose
from ldm.pose.render import render_pose_map

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("dance", "drama", "cartoon", "oil_painting", "sculpture", "sketch")
POSE_CONFIG = ROOT / "configs/pose/higherhrnet_tiny.yaml"
_FIGURE = np.array(
    [[0, -3], [-0.3, -3.2], [0.3, -3.2], [-0.6, -3], [0.6, -3], [-1, -2], [1, -2], [-1.5, -1], [1.5, -1],
     [-1.8, 0], [1.8, 0], [-0.7, 0.2], [0.7, 0.2], [-0.8, 1.6], [0.8, 1.6], [-0.9, 3], [0.9, 3]]
)  # fmt: skip


def _pose(rng: np.random.Generator, size: int) -> Pose:
    persons = []
    for _ in range(rng.integers(1, 4)):
        scale = rng.uniform(15, 45)
        centre = rng.uniform(4 * scale, size - 4 * scale, 2)
        xy = centre + scale * (_FIGURE + rng.normal(0, 0.15, _FIGURE.shape))
        visible = rng.random(17) > 0.1
        persons.append(Person(np.concatenate([xy, visible[:, None].astype(np.float64)], axis=1)))
    return Pose(persons, width=size, height=size)


def _image(pose_map: np.ndarray, rng: np.random.Generator) -> Image.Image:
    height, width = pose_map.shape[:2]
    noise = rng.integers(0, 90, (height // 8, width // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)  # blocky
    return Image.fromarray(np.maximum(pose_map, noise))


def synthesise(root: Path, n: int, size: int, seed: int) -> tuple[Path, Path]:
    """Write references, poses, the mapping and the generated images; returns (generated folder, mapping)."""
    rng = np.random.default_rng(seed)
    data, gen, mapping = root / "data", root / "gen", {}
    for i in range(n):
        scenario = SCENARIOS[i % len(SCENARIOS)]
        rel = f"images/{scenario}/{i:06d}.png"
        pose = _pose(rng, size)
        pose_map = render_pose_map(pose)
        for path in (data / rel, gen / f"images/{scenario}/{i:06d}_0.png"):
            path.parent.mkdir(parents=True, exist_ok=True)
            _image(pose_map, rng).save(path, compress_level=1)
        save_pose(pose, data / f"poses/{i:06d}.json")
        mapping[f"{i:06d}"] = {"img_path": rel, "pose_path": f"poses/{i:06d}.json", "prompt": f"a {scenario} of people"}
    (data / "mapping.json").write_text(json.dumps(mapping))
    return gen, data / "mapping.json"


def write_networks(root: Path, seed: int) -> dict[str, Path]:
    """Tiny pose net (random), TinyFeatures and a tiny open_clip model, saved as files."""
    import open_clip
    from safetensors.torch import save_file

    from ldm.metrics.features import TinyFeatures
    from ldm.pose.estimator import PoseEstimator

    torch.manual_seed(seed)
    paths = {"pose": root / "pose-tiny-random.safetensors", "features": root / "tiny-features.safetensors"}
    save_file(PoseEstimator.from_config(POSE_CONFIG).net.state_dict(), str(paths["pose"]))
    TinyFeatures(seed=seed).save(paths["features"])
    clip_cfg = {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    paths["clip_config"] = root / "tiny-clip-bench.json"
    paths["clip_config"].write_text(json.dumps(clip_cfg))
    open_clip.add_model_config(paths["clip_config"])
    paths["clip"] = root / "tiny-clip-bench.pt"
    torch.save(open_clip.create_model("tiny-clip-bench", pretrained=None).state_dict(), paths["clip"])
    return paths


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cli():
    spec = importlib.util.spec_from_file_location("pose2img_metrics", ROOT / "scripts" / "pose2img_metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="generated images")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: best on a shared machine)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and networks")
    parser.add_argument("--workdir", type=Path, help="keep the synthetic set here (default: a temporary folder)")
    parser.add_argument("--reuse", action="store_true", help="reuse the set and networks already in --workdir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        start = time.perf_counter()
        if args.reuse:
            if args.workdir is None or not (root / "data/mapping.json").is_file():
                parser.error("--reuse needs a --workdir filled by an earlier run.")
            gen, mapping = root / "gen", root / "data/mapping.json"
            nets = {"pose": root / "pose-tiny-random.safetensors", "features": root / "tiny-features.safetensors"}
            nets |= {"clip_config": root / "tiny-clip-bench.json", "clip": root / "tiny-clip-bench.pt"}
        else:
            gen, mapping = synthesise(root, args.n, args.size, args.seed)
            nets = write_networks(root, args.seed)
            logger.info("Synthesised %d images in %.1f s (not timed below).", args.n, time.perf_counter() - start)
        cli_args = ["--images", str(gen), "--mapping", str(mapping), "--outdir", str(root / "metrics")]
        cli_args += [
            "--detector",
            "higherhrnet",
            "--detector-ckpt",
            str(nets["pose"]),
            "--detector-config",
            str(POSE_CONFIG),
        ]
        cli_args += ["--feature-net", "tiny", "--tiny-features-weights", str(nets["features"])]
        cli_args += ["--clip-model", str(nets["clip_config"]), "--clip-weights", str(nets["clip"])]
        cli = _cli()
        load_before, cpu_before = os.getloadavg()[0], _cpu_seconds()
        start = time.perf_counter()
        code = cli.main(cli_args)
        elapsed = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu_before
        data = json.loads((root / "metrics" / "metrics.json").read_text())
        logger.info(
            "End-to-end evaluation of %d %dx%d images (all metrics, tiny networks from disk, %d torch threads): "
            "%.1f s wall = %.3f s/image, %.1f CPU-s (exit code %d, %d scenarios; 1-min load average %.1f before, "
            "%.1f after, on %d cores: other processes slow the wall time down).",
            data["overall"]["counts"]["images"], args.size, args.size, torch.get_num_threads(), elapsed,
            elapsed / max(args.n, 1), cpu, code, len(data["scenarios"]), load_before, os.getloadavg()[0],
            os.cpu_count() or 0,
        )  # fmt: skip


if __name__ == "__main__":
    main()
