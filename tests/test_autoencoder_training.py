"""Autoencoder training: full training moves every weight, decoder-only fine-tuning leaves the latents unchanged."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from ldm.data.keys import BatchKey
from ldm.data.synthetic import write_tiny_dataset
from ldm.models.autoencoder import AutoencoderKL
from ldm.training.autoencoder import AutoencoderModule

REPO = Path(__file__).resolve().parents[1]
DDCONFIG = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 32,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 32,
    "ch_mult": [1, 2],
    "num_res_blocks": 1,
    "attn_resolutions": [],
    "dropout": 0.0,
}


def _script():
    spec = importlib.util.spec_from_file_location("train_autoencoder", REPO / "scripts" / "train_autoencoder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _vae(seed: int = 0, ch: int = 32) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(ddconfig={**DDCONFIG, "ch": ch}, embed_dim=4)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _train(module: AutoencoderModule, steps: int = 3) -> None:
    optimizer = module.configure_optimizers()
    torch.manual_seed(1)
    batch = {BatchKey.IMAGE: torch.rand(2, 3, 32, 32) * 2 - 1}
    module.train()
    module.on_train_epoch_start()
    module.log_dict = lambda *a, **k: None  # outside a Trainer there is nowhere to log
    for _ in range(steps):
        optimizer.zero_grad()
        module.training_step(batch, 0).backward()
        optimizer.step()


def _changed(before: dict, after: dict, prefix: str) -> list[str]:
    return [k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])]


def test_decoder_only_keeps_the_latents_and_trains_the_decoder():
    vae = _vae()
    before = _snapshot(vae)
    module = AutoencoderModule(vae=vae, learning_rate=1e-2, decoder_only=True)
    params = {id(p) for group in module.configure_optimizers().param_groups for p in group["params"]}
    assert params == {id(p) for p in [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]}
    _train(module)
    after = _snapshot(vae)
    assert _changed(before, after, "encoder.") == [] and _changed(before, after, "quant_conv.") == []
    assert _changed(before, after, "decoder.") and _changed(before, after, "post_quant_conv.")
    assert not vae.encoder.training  # frozen part stays in eval mode


def test_full_training_moves_the_encoder_too():
    vae = _vae()
    before = _snapshot(vae)
    _train(AutoencoderModule(vae=vae, learning_rate=1e-2))
    after = _snapshot(vae)
    assert _changed(before, after, "encoder.") and _changed(before, after, "decoder.")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ae")
    write_tiny_dataset(root / "data", n=8, size=32, seed=0)
    init = root / "init.safetensors"
    save_file({f"first_stage_model.{k}": v.half() for k, v in _vae(seed=5).state_dict().items()}, str(init))
    config = {
        "vae": {"target": "ldm.models.autoencoder.AutoencoderKL", "params": {"embed_dim": 4, "ddconfig": DDCONFIG}},
        "training": {
            "init": str(init),
            "decoder_only": True,
            "learning_rate": 1e-2,
            "kl_weight": 0.0,
            "seed": 0,
            "max_minutes": 5,
            "crop_size": 16,
            "max_steps": 2,
        },
        "data": {"root": str(root / "data"), "image_size": 32, "batch_size": 2},
        "output": str(root / "out.safetensors"),
    }
    path = root / "vae.yaml"
    path.write_text(yaml.safe_dump(config))
    return root, path, init


def test_script_fine_tunes_the_decoder_of_the_init_weights(setup):
    root, config, init = setup
    assert _script().main(["--config", str(config), "--logdir", str(root / "logs")]) == 0
    start, out = load_file(str(init)), load_file(str(root / "out.safetensors"))
    assert out.keys() == start.keys()
    encoder = [k for k in start if k.startswith(("first_stage_model.encoder.", "first_stage_model.quant_conv."))]
    decoder = [k for k in start if k.startswith("first_stage_model.decoder.")]
    assert encoder and all(torch.equal(start[k], out[k]) for k in encoder)
    assert any(not torch.equal(start[k], out[k]) for k in decoder)


def test_script_rejects_a_missing_or_mismatched_init(setup, tmp_path, capsys):
    root, config, _ = setup
    script = _script()
    assert script.main(["--config", str(config), f"training.init={tmp_path / 'nope.safetensors'}"]) == 2
    assert "no file" in capsys.readouterr().err
    other = tmp_path / "other.safetensors"
    save_file({f"first_stage_model.{k}": v for k, v in _vae(ch=64).state_dict().items()}, str(other))
    assert script.main(["--config", str(config), f"training.init={other}"]) == 2
    assert "does not match" in capsys.readouterr().err
    save_file({"model.diffusion_model.x": torch.zeros(1)}, str(other))
    assert script.main(["--config", str(config), f"training.init={other}"]) == 2
    assert "no first_stage_model.* weights in" in capsys.readouterr().err


def test_cool_down_decays_the_learning_rate_towards_zero_at_max_steps():
    module = AutoencoderModule(vae=_vae(), learning_rate=1e-2, decoder_only=True, lr_decay_steps=2)
    module._trainer = SimpleNamespace(max_steps=4, global_step=0)  # what Lightning attaches during fit
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    rates = []
    for step in range(4):
        module._trainer.global_step = step
        scheduler.step()
        rates.append(scheduler.get_last_lr()[0])
    assert rates == pytest.approx([1e-2, 1e-2, 1e-2, 5e-3])  # 0 would be the rate at step max_steps
    assert isinstance(AutoencoderModule(vae=_vae()).configure_optimizers(), torch.optim.AdamW)  # default: constant


@pytest.mark.parametrize("bad", [0, -3, 1.5, True])
def test_cool_down_rejects_non_positive_or_fractional_lengths(bad):
    with pytest.raises(ValueError, match="lr_decay_steps"):
        AutoencoderModule(vae=_vae(), lr_decay_steps=bad)


def test_script_rejects_a_cool_down_longer_than_the_run(setup, capsys):
    root, config, _ = setup
    assert _script().main(["--config", str(config), "training.lr_decay_steps=3"]) == 2
    assert "lr_decay_steps (3) is larger than max_steps (2)" in capsys.readouterr().err


def test_script_wires_the_cool_down_into_training(setup):
    root, config, _ = setup
    outs = {}
    for decay in ("null", "2"):  # same init, seed and batches; the cool-down halves the second step's rate
        out = root / f"decay-{decay}.safetensors"
        args = ["--config", str(config), "--logdir", str(root / f"logs-{decay}"), f"training.lr_decay_steps={decay}"]
        assert _script().main([*args, f"output={out}"]) == 0
        outs[decay] = load_file(str(out))
    decoder = [k for k in outs["2"] if k.startswith("first_stage_model.decoder.")]
    assert any(not torch.equal(outs["null"][k], outs["2"][k]) for k in decoder)
