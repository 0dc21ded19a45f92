"""Reproduce the embedded tiny models of the mannequin world from scratch, stage by stage, on CPU.

Stages (run all with `all`, or one at a time):
    world   generate the dataset (scripts/make_mannequin_world.py) unless it exists
    pose    train the tiny HigherHRNet (scripts/train_pose.py) -> humansd_data/checkpoints/tiny/pose-tiny.safetensors
    vae     train the tiny kl-f8 VAE (scripts/train_autoencoder.py) -> .../vae-tiny.safetensors
    init    assemble the initial HumanSD weights: trained VAE + seeded frozen text tower + seeded random UNet;
            writes the shared base file .../base-tiny.safetensors (VAE + text tower, fp16) and
            logs/mannequin/init.safetensors, and reports the latent scale factor the VAE needs
    unet    train one tiny HumanSD UNet (`--mode plain|paper|reference`, scripts/train.py) and export its EMA UNet
            to .../humansd-tiny-<mode>.safetensors (UNet keys only, fp16)

Example:
    python scripts/build_mannequin_models.py all
    python scripts/build_mannequin_models.py unet --mode paper --seed 23 --max-steps 3000
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger("build_mannequin_models")

ROOT = Path(__file__).resolve().parents[1]
WORLD = Path("humansd_data/datasets/Mannequin")
TINY = Path("humansd_data/checkpoints/tiny")
MODEL_CONFIG = Path("configs/tiny/mannequin-humansd.yaml")
INIT = Path("logs/mannequin/init.safetensors")
MODES = ("plain", "paper", "reference")


def _script(name: str):
    """Import a sibling script as a module (scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name: str, argv: list[str]) -> None:
    start = time.perf_counter()
    rc = _script(name).main(argv)
    if rc:
        raise SystemExit(f"{name} failed with exit code {rc}")
    logger.info("%s finished in %.1f min", name, (time.perf_counter() - start) / 60)


def stage_world(args: argparse.Namespace) -> None:
    if (WORLD / "mapping_file_training.json").is_file():
        logger.info("World exists at %s; not regenerating.", WORLD)
        return
    _run("make_mannequin_world", ["--out", str(WORLD), "--n", "3000", "--size", "128", "--seed", "0"])


def stage_pose(args: argparse.Namespace) -> None:
    _run("train_pose", ["--config", "configs/tiny/mannequin-pose.yaml", "--out", str(TINY / "pose-tiny.safetensors")])


def stage_vae(args: argparse.Namespace) -> None:
    _run("train_autoencoder", ["--config", "configs/tiny/mannequin-vae.yaml"])


@torch.no_grad()
def stage_init(args: argparse.Namespace) -> None:
    from ldm.config import load_config
    from ldm.data.humansd import HumanPoseDataset
    from ldm.diffusion.schedule import SCHEDULE_BUFFER_NAMES
    from ldm.inference.loading import build_model

    torch.manual_seed(args.seed)  # seeds the frozen text tower and the UNet init
    model = build_model(load_config(MODEL_CONFIG))
    vae_state = load_file(str(TINY / "vae-tiny.safetensors"))
    missing = model.load_state_dict(vae_state, strict=False)  # only the VAE part; the rest stays as initialised
    if missing.unexpected_keys or any(k.startswith("first_stage_model.") for k in missing.missing_keys):
        raise SystemExit(f"vae-tiny.safetensors does not match the VAE of {MODEL_CONFIG}.")
    data = HumanPoseDataset(map_file=str(WORLD / "mapping_file_training.json"), image_size=128, augment=False)
    images = torch.stack([data[i]["image"] for i in range(0, len(data), max(1, len(data) // 256))])
    std = float(model.vae.encode(images).sample(torch.Generator().manual_seed(0)).std())
    logger.info("VAE latent std %.4f -> scale factor %.5f (config has %.5f)", std, 1 / std, model.scale_factor)
    state = model.state_dict()
    # Shared by every tiny UNet: VAE + text tower (fp16) and the schedule buffers (kept float32).
    prefixes = ("first_stage_model.", "cond_stage_model.")
    base = {k: v.half().contiguous() for k, v in state.items() if k.startswith(prefixes)}
    base.update({k: state[k].contiguous() for k in SCHEDULE_BUFFER_NAMES})
    TINY.mkdir(parents=True, exist_ok=True)
    save_file(base, str(TINY / "base-tiny.safetensors"), metadata={"latent_std": f"{std:.6f}", "seed": str(args.seed)})
    INIT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(INIT))
    logger.info("Wrote %s and %s", TINY / "base-tiny.safetensors", INIT)


def stage_unet(args: argparse.Namespace) -> None:
    from ldm.training.export import export_inference_weights

    name = f"mannequin-{args.mode}-s{args.seed}"
    argv = ["--config", f"configs/tiny/mannequin-train-{args.mode}.yaml", "--name", name, "--seed", str(args.seed)]
    argv += ["--logdir", "logs/mannequin", f"lightning.trainer.max_steps={args.max_steps}"]
    if args.max_minutes is not None:
        argv.append(f"lightning.trainer.max_time={{minutes: {args.max_minutes}}}")
    _run("train", argv)
    run = sorted(Path("logs/mannequin").glob(f"*_{name}"))[-1]
    full = run / "export.safetensors"
    export_inference_weights(run / "checkpoints" / "last.ckpt", full, use_ema=True, dtype="fp16")
    state = load_file(str(full))
    unet = {k: v for k, v in state.items() if k.startswith("model.diffusion_model.")}
    out = TINY / (
        f"humansd-tiny-{args.mode}.safetensors"
        if args.seed == 23
        else f"humansd-tiny-{args.mode}-s{args.seed}.safetensors"
    )
    meta = {"mode": args.mode, "seed": str(args.seed), "max_steps": str(args.max_steps), "run": str(run)}
    save_file(unet, str(out), metadata={"info": json.dumps(meta)})
    logger.info("Wrote %s (%.1f MB)", out, out.stat().st_size / 1e6)


STAGES = {"world": stage_world, "pose": stage_pose, "vae": stage_vae, "init": stage_init, "unet": stage_unet}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=[*STAGES, "all"], help="what to build")
    parser.add_argument("--mode", choices=MODES, default="paper", help="loss of the `unet` stage")
    parser.add_argument("--seed", type=int, default=23, help="seed of the init/unet stages")
    parser.add_argument("--max-steps", type=int, default=3000, help="training steps of the `unet` stage")
    parser.add_argument("--max-minutes", type=float, help="also stop the `unet` stage after this many minutes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.stage == "all":
        for stage in ("world", "pose", "vae", "init"):
            STAGES[stage](args)
        for mode in MODES:
            stage_unet(argparse.Namespace(**{**vars(args), "mode": mode}))
    else:
        STAGES[args.stage](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
