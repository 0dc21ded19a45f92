"""VAE round-trip datasets (ldm/data/vae_roundtrip.py, scripts/make_vae_roundtrip_world.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ldm.config import load_config
from ldm.data.humansd import HumanPoseDataset, read_mappings
from ldm.data.synthetic import write_tiny_dataset
from ldm.data.vae_roundtrip import roundtrip_images, write_roundtrip_dataset
from ldm.inference.loading import build_model
from ldm.models.autoencoder import AutoencoderKL

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs" / "tiny" / "humansd-tiny.yaml"


def _vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return build_model(load_config(TINY_CONFIG)).vae.eval()


@pytest.fixture()
def data(tmp_path):
    return write_tiny_dataset(tmp_path / "data", n=5, size=32, seed=0)


def test_roundtrip_images_is_decode_of_encode_mode():
    vae = _vae()
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        want = vae.decode(vae.encode(x).mode()).clamp(-1, 1).add(1).mul(127.5).permute(0, 2, 3, 1).numpy()
    got = roundtrip_images(vae, images)
    assert got.dtype == np.uint8 and got.shape == images.shape
    assert np.abs(got.astype(np.float32) - want).max() <= 0.51
    sampled = roundtrip_images(vae, images, sample=True, generator=torch.Generator().manual_seed(0))
    assert not np.array_equal(sampled, got)  # the posterior's spread is not zero for a random VAE


@pytest.mark.parametrize(
    "bad", [np.zeros((32, 32, 3), np.uint8), np.zeros((1, 32, 32, 4), np.uint8), np.zeros((1, 32, 32, 3))]
)
def test_roundtrip_images_rejects_wrong_layouts(bad):
    with pytest.raises(ValueError, match="uint8"):
        roundtrip_images(_vae(), bad)


def test_written_dataset_keeps_labels_and_loads(data, tmp_path):
    records = read_mappings(data)
    map_file = write_roundtrip_dataset(records, _vae(), tmp_path / "rt", split="training", batch_size=2)
    assert map_file == tmp_path / "rt" / "mapping_file_training.json"
    copied = read_mappings(map_file)
    assert [(r.key, r.prompt, r.pose) for r in copied] == [(r.key, r.prompt, r.pose) for r in records]
    for src, dst in zip(records, copied, strict=True):
        assert dst.image.endswith(".png")
        assert dst.pose_path.read_bytes() == src.pose_path.read_bytes()
        assert Image.open(dst.image_path).size == Image.open(src.image_path).size
    real = HumanPoseDataset(map_file=data, image_size=32, augment=False)
    roundtrip = HumanPoseDataset(map_file=map_file, image_size=32, augment=False)
    for i in range(len(records)):
        assert torch.equal(real[i]["keypoints"], roundtrip[i]["keypoints"])
        assert not torch.equal(real[i]["image"], roundtrip[i]["image"])


def test_existing_images_are_kept_unless_overwrite(data, tmp_path):
    records = read_mappings(data)
    out = tmp_path / "rt"
    write_roundtrip_dataset(records, _vae(), out, batch_size=4)
    first = out / Path(records[0].image).with_suffix(".png")
    Image.new("RGB", (32, 32), (1, 2, 3)).save(first)
    write_roundtrip_dataset(records, _vae(), out, batch_size=4)  # resumes: the marked image stays
    assert np.asarray(Image.open(first))[0, 0].tolist() == [1, 2, 3]
    write_roundtrip_dataset(records, _vae(), out, batch_size=4, overwrite=True)
    assert np.asarray(Image.open(first))[0, 0].tolist() != [1, 2, 3]
    other = _vae()
    with torch.no_grad():
        other.decoder.conv_out.bias.add_(0.1)  # another decoder: the kept images would be stale
    with pytest.raises(ValueError, match="another VAE"):
        write_roundtrip_dataset(records, other, out, batch_size=4)
    write_roundtrip_dataset(records, other, out, batch_size=4, overwrite=True)
    write_roundtrip_dataset(records, other, out, batch_size=4)  # now it is this VAE's folder


def test_bad_arguments(data, tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        write_roundtrip_dataset(read_mappings(data), _vae(), tmp_path / "rt", batch_size=0)
    with pytest.raises(ValueError, match="no records"):
        write_roundtrip_dataset([], _vae(), tmp_path / "rt")


def _script():
    spec = importlib.util.spec_from_file_location("rt_world", REPO / "scripts" / "make_vae_roundtrip_world.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_writes_the_split_and_reports_missing_files(data, tmp_path, capsys):
    script = _script()
    config = TINY_CONFIG
    vae = _vae()
    ckpt = tmp_path / "vae.safetensors"
    save_file({f"first_stage_model.{k}": v.contiguous() for k, v in vae.state_dict().items()}, str(ckpt))
    out = tmp_path / "rt"
    args = ["--map-file", str(data), "--out", str(out), "--model-config", str(config), "--ckpt", str(ckpt)]
    assert script.main([*args, "--limit", "3"]) == 0, capsys.readouterr().err
    assert len(read_mappings(out / "mapping_file_training.json")) == 3
    assert script.main(["--map-file", str(tmp_path / "missing.json"), *args[2:]]) == 2
    assert "missing.json" in capsys.readouterr().err
    assert script.main([*args, "--ckpt", str(tmp_path / "nothing.safetensors")]) == 2
    assert "nothing.safetensors" in capsys.readouterr().err


def test_roundtrip_coco_points_at_the_png_round_trips(tmp_path):
    from ldm.data.vae_roundtrip import roundtrip_coco

    coco = {
        "images": [{"id": 3, "file_name": "images/a/b/000003.jpg", "width": 32, "height": 32}],
        "annotations": [{"id": 1, "image_id": 3, "keypoints": [0] * 51}],
        "categories": [{"id": 1, "name": "person"}],
    }
    src = tmp_path / "validation_coco.json"
    src.write_text(json.dumps(coco))
    out = roundtrip_coco(src, tmp_path / "rt")
    assert out == tmp_path / "rt" / "annotations" / "validation_coco.json"
    written = json.loads(out.read_text())
    assert written["images"][0]["file_name"] == "images/a/b/000003.png"
    assert written["annotations"] == coco["annotations"]
    src.write_text("[]")
    with pytest.raises(ValueError, match="not a COCO file"):
        roundtrip_coco(src, tmp_path / "rt")
