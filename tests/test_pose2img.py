"""scripts/pose2img.py: single mode outputs, batch mode resume/sharding, and one-line errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldm.data.humansd import read_mappings
from ldm.data.synthetic import write_tiny_dataset
from ldm.inference.batch import output_paths, parse_shard, run_batch
from ldm.inference.pipeline import PoseToImagePipeline

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("pose2img", ROOT / "scripts" / "pose2img.py")
pose2img = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pose2img)

FAST = ["--steps", "2", "--config", "configs/tiny/humansd-tiny.yaml"]


@pytest.fixture(scope="module")
def pipe():
    return PoseToImagePipeline.from_config("configs/tiny/humansd-tiny.yaml", allow_random=True)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    write_tiny_dataset(root, n=26, size=64, seed=0)  # 20 training entries
    return root / "mapping_file_training.json"


def test_single_mode_writes_images_pose_overlay_grid_and_sidecar(tmp_path):
    rc = pose2img.main(
        ["--prompt", "a dancer", "--pose", "assets/poses/two_people.json", "--n", "2", "--outdir", str(tmp_path), *FAST]
    )
    assert rc == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "seed1234.json",
        "seed1234_0.png",
        "seed1234_1.png",
        "seed1234_grid.png",
        "seed1234_overlay.png",
        "seed1234_pose.png",
    ]
    sidecar = json.loads((tmp_path / "seed1234.json").read_text())
    assert sidecar["prompt"].startswith("a dancer, detailed background")
    assert sidecar["num_inference_steps"] == 2 and sidecar["seed"] == 1234 and "checkpoint_fingerprint" in sidecar


def test_single_mode_accepts_a_skeleton_image(tmp_path):
    pose_png = tmp_path / "pose.png"
    pose2img.main(["--prompt", "x", "--pose", "assets/poses/demo_single.json", "--outdir", str(tmp_path), *FAST])
    Image.open(tmp_path / "seed1234_pose.png").save(pose_png)
    out = tmp_path / "from_png"
    assert pose2img.main(["--prompt", "x", "--pose", str(pose_png), "--outdir", str(out), *FAST]) == 0
    assert np.array_equal(np.asarray(Image.open(out / "seed1234_pose.png")), np.asarray(Image.open(pose_png)))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", "x", "--pose", "nope.npz"], "Pose file not found: nope.npz"),
        (["--prompt", "x", "--height", "100", "--width", "64"], "multiples of 16"),
        (["--pose", "assets/poses/demo_single.json"], "--prompt is required"),
        (["--prompt", "x", "--ckpt", "missing.ckpt"], "Checkpoint not found: missing.ckpt"),
        (["--from-mapping", "m.json", "--shard", "3/2"], "--shard i/n needs 0 <= i < n"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    assert pose2img.main([*args, "--outdir", str(tmp_path), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pose2img: error:") and message in err[0]


def test_malformed_pose_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"width": 64, "height": 64, "persons": [{"keypoints": [[1, 2]]}]}))
    assert pose2img.main(["--prompt", "x", "--pose", str(bad), "--outdir", str(tmp_path), *FAST]) == 2
    assert str(bad) in capsys.readouterr().err


def _files(outdir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(outdir)): p.read_bytes() for p in sorted((outdir / "images").rglob("*.png"))}


def test_batch_is_resumable_without_redoing_work(pipe, dataset, tmp_path):
    records = read_mappings(dataset)
    assert len(records) == 20
    kwargs = dict(n=1, seed=7, num_inference_steps=2, progress=False)
    full = tmp_path / "full"
    report = run_batch(pipe, records, full, **kwargs)
    assert report.generated == 20
    resumed = tmp_path / "resumed"
    run_batch(pipe, records[:7], resumed, **kwargs)  # "killed" after 7 entries
    first = {p: p.stat().st_mtime_ns for p in (resumed / "images").rglob("*.png")}
    report = run_batch(pipe, records, resumed, **kwargs)
    assert report.skipped_existing == 7 and report.generated == 13
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())  # nothing redone
    assert _files(resumed) == _files(full)  # and the same bytes as an uninterrupted run
    index = json.loads((resumed / "index.shard-0-of-1.json").read_text())
    assert len(index["entries"]) == 20 and {e["scenario"] for e in index["entries"]} == {"sketch", "watercolor"}


def test_batch_refuses_a_rerun_with_other_settings(pipe, dataset, tmp_path):
    records = read_mappings(dataset)[:2]
    report = run_batch(pipe, records, tmp_path, n=1, seed=1, num_inference_steps=1, progress=False)
    assert report.generated == 2
    meta = json.loads((tmp_path / "index.shard-0-of-1.json").read_text())["meta"]
    assert meta["guidance_scale"] == pipe.sampling.guidance_scale  # the default actually used is recorded
    before = _files(tmp_path)
    with pytest.raises(ValueError, match=r"other settings \(guidance_scale: 10.0 -> 3.0\)"):
        run_batch(pipe, records, tmp_path, n=1, seed=1, num_inference_steps=1, guidance_scale=3.0, progress=False)
    with pytest.raises(ValueError, match="num_inference_steps: 1 -> 2, seed: 1 -> 2"):
        run_batch(pipe, records, tmp_path, n=1, seed=2, num_inference_steps=2, progress=False)
    assert _files(tmp_path) == before  # nothing added or overwritten
    # the same settings, spelled out, resume as before
    report = run_batch(pipe, records, tmp_path, n=1, seed=1, num_inference_steps=1, guidance_scale=10.0, progress=False)
    assert report.skipped_existing == 2


def test_batch_shards_union_to_the_full_set(pipe, dataset, tmp_path):
    records = read_mappings(dataset)[:9]
    for i in range(3):
        run_batch(pipe, records, tmp_path, n=2, seed=1, num_inference_steps=1, shard=(i, 3), progress=False)
    expected = {p for r in records for p in output_paths(tmp_path, r, 2)}
    assert set((tmp_path / "images").rglob("*.png")) == expected
    assert sum(len(json.loads(p.read_text())["entries"]) for p in tmp_path.glob("index.shard-*.json")) == 9


def test_batch_skips_and_counts_entries_with_missing_files(pipe, dataset, tmp_path):
    records = read_mappings(dataset)[:3]
    records[1].pose_path.rename(records[1].pose_path.with_suffix(".moved"))
    try:
        report = run_batch(pipe, records, tmp_path, n=1, seed=1, num_inference_steps=1, progress=False)
    finally:
        records[1].pose_path.with_suffix(".moved").rename(records[1].pose_path)
    assert report.generated == 2 and report.missing_inputs == [records[1].key]


def test_parse_shard():
    assert parse_shard("1/4") == (1, 4)
    with pytest.raises(ValueError, match="must look like i/n"):
        parse_shard("1-4")


def test_split_checkpoint_pair_loads_with_repeated_ckpt(tmp_path, capsys):
    """`--ckpt base --ckpt unet`: the shipped tiny layout, named explicitly, gives the config's own checkpoints'."""
    tiny = ROOT / "humansd_data/checkpoints/tiny"
    common = ["--prompt", "a red figure", "--pose", "assets/poses/demo_single.json", "--steps", "2"]
    explicit = ["--config", "configs/tiny/mannequin-humansd.yaml", "--ckpt", str(tiny / "base-tiny.safetensors")]
    explicit += ["--ckpt", str(tiny / "humansd-tiny-paper.safetensors")]
    assert pose2img.main([*common, *explicit, "--outdir", str(tmp_path / "pair")]) == 0
    default_args = ["--config", "configs/tiny/mannequin-humansd.yaml"]  # its `checkpoint:` names the same pair
    assert pose2img.main([*common, *default_args, "--outdir", str(tmp_path / "default")]) == 0
    pair = np.asarray(Image.open(tmp_path / "pair" / "seed1234_0.png"))
    default = np.asarray(Image.open(tmp_path / "default" / "seed1234_0.png"))
    assert pair.shape == (128, 128, 3) and np.array_equal(pair, default)
    capsys.readouterr()
    missing = [*explicit[:4], "--ckpt", str(tmp_path / "unet.safetensors")]
    assert pose2img.main([*common, *missing, "--outdir", str(tmp_path / "x")]) == 2
    assert "unet.safetensors" in capsys.readouterr().err
