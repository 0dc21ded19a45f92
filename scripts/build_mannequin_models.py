r"""Reproduce the embedded tiny models of the mannequin world from scratch, stage by stage, on CPU.

Stages (`all` runs them in this order; or one at a time):
    world   generate the dataset (scripts/make_mannequin_world.py; figures with marked left limbs) unless it
            exists, and a second, training-only one for the pose net (`--extra-world-size` images, seed 1;
            humansd_data/datasets/MannequinExtra)
    vae     train the tiny kl-f8 VAE (scripts/train_autoencoder.py) -> .../vae-tiny.safetensors
    decoder fine-tune that VAE's decoder on whole 128-px images with the encoder frozen, so the latents stay the
            same (configs/tiny/mannequin-vae-decoder.yaml) -> .../vae-tiny.safetensors
    init    assemble the initial HumanSD weights: trained VAE + seeded frozen text tower + seeded random UNet;
            writes the shared base file .../base-tiny.safetensors (VAE + text tower, fp16) and
            logs/mannequin/init.safetensors, and reports the latent scale factor the VAE needs
    cache   encode the training split once with the trained VAE (one orientation: the marked world is not
            mirror-symmetric, so the UNets train without flips) into a latent cache,
            humansd_data/datasets/Mannequin/latents-train.safetensors, which the UNet stages train on; with
            `--unet-extra-world` also the extra world's training split (.../MannequinExtra/latents-train.safetensors)
    roundtrip  the base world's training split encoded and decoded by the shipped VAE (after `init`;
            scripts/make_vae_roundtrip_world.py) -> humansd_data/datasets/MannequinRoundTrip, so the pose net also
            learns to read decoder output
    pose    train the tiny HigherHRNet (scripts/train_pose.py) on the training splits of the worlds present: base,
            extra, and the round trips (listed twice: a third of the samples): the 16-wide net from scratch
            (logs/mannequin/pose-w16.safetensors), then grown 1.5x wider and trained 4,000 + 2,500 more steps
            (`--init`: only these, from the given weights) -> humansd_data/checkpoints/tiny/pose-tiny.safetensors
    pretrain  the shared UNet pre-training of the shipped recipe: plain loss with Min-SNR-5 weighting, EMA,
            `--pretrain-steps` steps of batch 64 at lr 1e-3 on the latent cache (with `--unet-extra-world` on
            both caches: 39,000 images instead of 9,000), the last `--cooldown-steps`
            decaying linearly to 0 -> logs/mannequin/pretrained/humansd-tiny-plain.safetensors (42,000 steps, the
            total the shipped UNets trained for, with a 2,000-step cool-down: ~3.6 h on 2 CPU cores, one job with
            2 threads, ~195 steps per minute)
    unet    train one tiny HumanSD UNet (`--mode plain|paper|reference`, scripts/train.py) and export its EMA UNet
            to .../humansd-tiny-<mode>.safetensors (UNet keys only, fp16)

`all` runs world ... pose, then `pretrain`, then for each loss the shipped fine-tune: `unet` from the base file +
the pre-trained UNet, 1,000 steps of batch 32 from lr 1e-4 decaying linearly to 0, without EMA (one CPU core:
plain ~8 min, paper ~59, reference ~77).

Trailing `key=value` arguments are dotted config overrides passed to the stage's training script (e.g.
`lightning.trainer.accelerator=gpu data.params.batch_size=64` for `unet`, `trainer.accelerator=gpu` for `pose`,
`data.batch_size=64` for `vae`); `scripts/build_mannequin_gpu.sh` uses them to build everything on one GPU.

`--smoke N` rehearses the whole recipe at toy scale before hours are spent on it: 64- and 32-image worlds, every
training stage N steps of batch 4, then a 4-image evaluation of the paper-mode UNet, all inside `--workdir`
(default outputs/mannequin-smoke, with its own copy of configs/), so the shipped weights and worlds are never
touched. It proves that the stages fit together (files, formats, the latent scale, the cache fingerprint), not
that the models learn anything: `all --smoke 2` takes under a minute on 2 CPU cores (41 s measured).

Example:
    python scripts/build_mannequin_models.py all
    python scripts/build_mannequin_models.py all --smoke 2          # the rehearsal, in outputs/mannequin-smoke
    python scripts/build_mannequin_models.py pretrain --pretrain-steps 42000 --cooldown-steps 2000
    python scripts/build_mannequin_models.py unet --mode paper --seed 23 --max-steps 1000 --no-ema \
        --init humansd_data/checkpoints/tiny/base-tiny.safetensors \
        --init logs/mannequin/pretrained/humansd-tiny-plain.safetensors \
        data.params.batch_size=32 module.base_learning_rate=1e-4 module.lr_schedule=linear
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

logger = logging.getLogger("build_mannequin_models")

ROOT = Path(__file__).resolve().parents[1]
WORLD = Path("humansd_data/datasets/Mannequin")
EXTRA_WORLD = Path("humansd_data/datasets/MannequinExtra")  # more pose-net training images (no validation split)
ROUNDTRIP_WORLD = Path("humansd_data/datasets/MannequinRoundTrip")  # VAE round trips of WORLD's training split
TINY = Path("humansd_data/checkpoints/tiny")
MODEL_CONFIG = Path("configs/tiny/mannequin-humansd.yaml")
INIT = Path("logs/mannequin/init.safetensors")
CACHE = WORLD / "latents-train.safetensors"
EXTRA_CACHE = EXTRA_WORLD / "latents-train.safetensors"  # `--unet-extra-world`: more pre-training images
MODES = ("plain", "paper", "reference")
PRETRAINED_DIR = Path("logs/mannequin/pretrained")
SHARED_PREFIXES = ("first_stage_model.", "cond_stage_model.")  # the base file: VAE + text tower
# The shipped recipe (README "Results"): one pre-training, then a short fine-tune per loss from it.
PRETRAIN_OVERRIDES = ("data.params.batch_size=64", "module.base_learning_rate=1e-3", "loss.snr_gamma=5")
FINETUNE_STEPS = 1000
# The shipped pose net: the 16-wide net grown 1.5x wider (same outputs at the start), then 4,000 steps of 32 from
# lr 1e-3 and 2,500 more from 5e-4 (exported in float16).
POSE_W16 = Path("logs/mannequin/pose-w16.safetensors")
POSE_GROWN = Path("logs/mannequin/pose-grown.safetensors")
POSE_GROWN_CONFIG = (
    "model.params.pose_config=configs/pose/higherhrnet_tiny_mannequin.yaml",
    "data.params.batch_size=32",
)
POSE_GROW_OVERRIDES = (
    *POSE_GROWN_CONFIG,
    "model.params.learning_rate=1e-3",
    "trainer.max_steps=4000",
    "trainer.val_check_interval=2000",
)
POSE_FINAL_OVERRIDES = (
    *POSE_GROWN_CONFIG,
    "model.params.learning_rate=5e-4",
    "model.params.warmup_steps=50",
    "trainer.max_steps=2500",
    "trainer.val_check_interval=2500",
)
FINETUNE_OVERRIDES = ("data.params.batch_size=32", "module.base_learning_rate=1e-4", "module.lr_schedule=linear")
# `--smoke`: world sizes, and the overrides that shorten each training script to N steps of batch 4.
SMOKE_WORLD_SIZES = (64, 32)
SMOKE_BATCH = 4
SMOKE_DIR = Path("outputs/mannequin-smoke")


def smoke_overrides(args: argparse.Namespace, script: str) -> list[str]:
    """Overrides that cut one training script to `--smoke` steps (none without --smoke); user overrides follow."""
    n = getattr(args, "smoke", None)
    if n is None:
        return []
    if script == "train_autoencoder":
        return [f"training.max_steps={n}", f"data.batch_size={SMOKE_BATCH}"]
    if script == "train_pose":
        return [f"trainer.max_steps={n}", f"trainer.val_check_interval={n}", f"data.params.batch_size={SMOKE_BATCH}"]
    if script == "train":
        return [f"data.params.batch_size={SMOKE_BATCH}"]  # the steps come from --max-steps / --pretrain-steps
    raise ValueError(f"no smoke overrides for {script!r}")


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
    worlds = [(WORLD, args.world_size, 0, []), (EXTRA_WORLD, args.extra_world_size, 1, ["--val-fraction", "0"])]
    for root, size, seed, extra in worlds:
        if size == 0:
            continue
        if (root / "mapping_file_training.json").is_file():
            logger.info("World exists at %s; not regenerating.", root)
            continue
        argv = ["--out", str(root), "--n", str(size), "--size", "128", "--seed", str(seed), *extra]
        _run("make_mannequin_world", argv + ["--workers", str(args.workers)])


def stage_pose(args: argparse.Namespace) -> None:
    maps = [WORLD / "mapping_file_training.json"]
    maps += [p for p in [EXTRA_WORLD / "mapping_file_training.json"] if p.is_file()]
    maps += 2 * [p for p in [ROUNDTRIP_WORLD / "mapping_file_training.json"] if p.is_file()]
    data = [f"data.params.train.map_file=[{','.join(map(str, maps))}]"] if len(maps) > 1 else []
    limit = ["--max-minutes", str(args.max_minutes)] if args.max_minutes is not None else []
    user = [*smoke_overrides(args, "train_pose"), *args.overrides]
    if args.init:  # continue from trained weights (e.g. the shipped net), growing them if they are narrower
        if len(args.init) != 1:
            raise SystemExit("`pose --init` takes one HigherHRNet weights file.")
        start = args.init[0]
    else:  # the 16-wide net from scratch (the config's schedule)
        start = POSE_W16
        argv = ["--config", "configs/tiny/mannequin-pose.yaml", "--out", str(start), *limit]
        _run("train_pose", argv + data + user)
    config = ["--config", "configs/tiny/mannequin-pose.yaml", *limit]
    argv = [*config, "--init-from", str(start), "--grow", "--out", str(POSE_GROWN), *POSE_GROW_OVERRIDES]
    _run("train_pose", argv + data + user)
    argv = [*config, "--init-from", str(POSE_GROWN), "--out", str(TINY / "pose-tiny.safetensors"), "--half"]
    _run("train_pose", argv + [*POSE_FINAL_OVERRIDES, *data, *user])


def stage_roundtrip(args: argparse.Namespace) -> None:
    argv = ["--map-file", str(WORLD / "mapping_file_training.json"), "--out", str(ROUNDTRIP_WORLD)]
    argv += ["--model-config", str(MODEL_CONFIG), "--ckpt", str(TINY / "base-tiny.safetensors")]
    argv += ["--device", args.device]
    if args.overwrite:
        argv.append("--overwrite")
    if args.roundtrip_limit is not None:
        argv += ["--limit", str(args.roundtrip_limit)]
    _run("make_vae_roundtrip_world", argv)


def stage_vae(args: argparse.Namespace) -> None:
    argv = ["--config", "configs/tiny/mannequin-vae.yaml"]
    if args.max_minutes is not None:
        argv.append(f"training.max_minutes={args.max_minutes}")
    _run("train_autoencoder", argv + smoke_overrides(args, "train_autoencoder") + args.overrides)


def stage_decoder(args: argparse.Namespace) -> None:
    vae_file = TINY / "vae-tiny.safetensors"
    start = vae_file if vae_file.is_file() else TINY / "base-tiny.safetensors"  # a fresh clone: the shipped VAE
    argv = ["--config", "configs/tiny/mannequin-vae-decoder.yaml", f"training.init={start}", f"output={vae_file}"]
    if args.max_minutes is not None:
        argv.append(f"training.max_minutes={args.max_minutes}")
    if args.smoke is not None:  # the config's cool-down is longer than a toy run: decay over all of it
        argv.append(f"training.lr_decay_steps={args.smoke}")
    _run("train_autoencoder", argv + smoke_overrides(args, "train_autoencoder") + args.overrides)


def _set_scale_factor(config: Path, value: float) -> None:
    """Rewrite the `scale_factor:` line of the model config in place (keeps its comment and the rest)."""
    text = config.read_text()
    updated, count = re.subn(r"(\n\s*scale_factor:\s*)[0-9.eE+-]+", rf"\g<1>{value:.5f}", text, count=1)
    if count != 1:
        raise SystemExit(f"No `scale_factor:` line in {config}; set it to {value:.5f} by hand.")
    config.write_text(updated)
    logger.info("Set scale_factor: %.5f in %s", value, config)


@torch.no_grad()
def stage_init(args: argparse.Namespace) -> None:
    from ldm.checkpoint import load_prefixed
    from ldm.config import load_config
    from ldm.data.humansd import HumanPoseDataset
    from ldm.diffusion.schedule import SCHEDULE_BUFFER_NAMES
    from ldm.inference.loading import build_model

    torch.manual_seed(args.seed)  # seeds the frozen text tower and the UNet init
    model = build_model(load_config(MODEL_CONFIG))
    vae_file = TINY / "vae-tiny.safetensors"
    if not vae_file.is_file():  # a fresh clone ships the VAE only inside base-tiny (float16): start from that one
        logger.info("No %s: taking the VAE from %s.", vae_file, TINY / "base-tiny.safetensors")
        vae_file = TINY / "base-tiny.safetensors"
    load_prefixed(model.vae, vae_file, "first_stage_model.")  # only the VAE; the rest stays as initialised
    state = model.state_dict()
    # The base file holds the VAE and the text tower in float16: round them here, so that init.safetensors, the base
    # file and the latent cache (encoded from the base file) hold the same encoder bit for bit (a float32 vae-tiny
    # would otherwise give a cache that `pretrain` refuses) and the UNets train with the VAE that ships.
    for name, tensor in state.items():
        if name.startswith(SHARED_PREFIXES) and tensor.is_floating_point():
            tensor.copy_(tensor.half())
    data = HumanPoseDataset(map_file=str(WORLD / "mapping_file_training.json"), image_size=128, augment=False)
    images = torch.stack([data[i]["image"] for i in range(0, len(data), max(1, len(data) // 256))])
    std = float(model.vae.encode(images).sample(torch.Generator().manual_seed(0)).std())
    logger.info("VAE latent std %.4f -> scale factor %.5f (config had %.5f)", std, 1 / std, model.scale_factor)
    _set_scale_factor(MODEL_CONFIG, 1 / std)  # the UNet stages train (and the pipeline samples) at unit variance
    # Shared by every tiny UNet: VAE + text tower (fp16) and the schedule buffers (kept float32).
    base = {k: v.half().contiguous() for k, v in state.items() if k.startswith(SHARED_PREFIXES)}
    base.update({k: state[k].contiguous() for k in SCHEDULE_BUFFER_NAMES})
    TINY.mkdir(parents=True, exist_ok=True)
    save_file(base, str(TINY / "base-tiny.safetensors"), metadata={"latent_std": f"{std:.6f}", "seed": str(args.seed)})
    INIT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(INIT))
    logger.info("Wrote %s and %s", TINY / "base-tiny.safetensors", INIT)


def stage_cache(args: argparse.Namespace) -> None:
    for world, cache in zip((WORLD, EXTRA_WORLD), unet_caches(args), strict=False):
        argv = ["--model-config", str(MODEL_CONFIG), "--ckpt", str(TINY / "base-tiny.safetensors")]
        argv += ["--map-file", str(world / "mapping_file_training.json"), "--out", str(cache)]
        argv += ["--device", args.device, "--workers", str(args.workers - 1 if args.workers > 1 else 0)]
        _run("cache_latents", argv + ["--no-flips"])  # the UNet configs train without mirror images (marked world)


def unet_caches(args: argparse.Namespace) -> list[Path]:
    """The latent caches the pre-training reads: the base world's, and with `--unet-extra-world` the extra world's."""
    return [CACHE, EXTRA_CACHE] if getattr(args, "unet_extra_world", False) else [CACHE]


def _check_cache_matches_init(init: list[Path], caches: list[Path]) -> None:
    """The latent caches must come from the VAE the UNet trains with (a retrained encoder needs new caches)."""
    from ldm.checkpoint import load_prefixed
    from ldm.config import load_config
    from ldm.data.latent_cache import vae_fingerprint
    from ldm.inference.loading import build_model

    flag = " --unet-extra-world" if len(caches) > 1 else ""
    for cache in caches:
        if not cache.is_file():
            raise SystemExit(f"No latent cache at {cache}; run: python scripts/build_mannequin_models.py cache{flag}")
    vae = build_model(load_config(MODEL_CONFIG)).vae
    load_prefixed(vae, init, "first_stage_model.")
    fingerprint = vae_fingerprint(vae)
    for cache in caches:
        with safe_open(str(cache), framework="pt") as f:
            cached = (f.metadata() or {}).get("vae_fingerprint")
        if cached != fingerprint:
            names = " + ".join(map(str, init))
            raise SystemExit(f"{cache} was encoded by another VAE encoder than {names}'s; rerun the `cache` stage.")


def stage_unet(args: argparse.Namespace) -> None:
    from ldm.training.export import export_inference_weights
    from ldm.training.run import RUN_STAMP_ENV

    init = args.init or [INIT]
    caches = getattr(args, "caches", [CACHE])
    _check_cache_matches_init(init, caches)
    name = f"mannequin-{args.mode}-s{args.seed}" + ("" if args.init is None else f"-from-{init[-1].stem}")
    argv = ["--config", f"configs/tiny/mannequin-train-{args.mode}.yaml", "--name", name, "--seed", str(args.seed)]
    argv += ["--logdir", "logs/mannequin"] + [a for p in init for a in ("--init-from", str(p))]
    overrides = [f"lightning.trainer.max_steps={args.max_steps}"] + (["module.use_ema=false"] if args.no_ema else [])
    if caches != [CACHE]:
        overrides.append(f"data.params.train.path=[{','.join(map(str, caches))}]")
    if args.max_minutes is not None:
        overrides.append(f"lightning.trainer.max_time={{minutes: {args.max_minutes}}}")
    # The run folder is <stamp>_<name>: fix the stamp here (not "the newest folder of that name" afterwards, which is
    # another process's when two runs of one name go side by side, nor a stamp left by an earlier stage).
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S")
    run = Path("logs/mannequin") / f"{stamp}_{name}"
    if run.exists():
        raise SystemExit(f"{run} exists already (another run of {name} started this second); start again.")
    os.environ[RUN_STAMP_ENV] = stamp
    _run("train", argv + overrides + smoke_overrides(args, "train") + args.overrides)  # options, then key=value
    full = run / "export.safetensors"
    # A run that ends with a learning-rate cool-down exports its trained weights: the decay to 0 already averages
    # what the EMA would (measured: 0.261 trained vs 0.259 EMA pose AP after `pretrain`'s cool-down, 200 entries).
    use_ema = not args.no_ema and not getattr(args, "export_trained", False)
    export_inference_weights(run / "checkpoints" / "last.ckpt", full, use_ema=use_ema, dtype="fp16")
    state = load_file(str(full))
    unet = {k: v for k, v in state.items() if k.startswith("model.diffusion_model.")}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / unet_file_name(args.mode, args.seed)
    with safe_open(str(full), framework="pt") as f:
        steps = (f.metadata() or {}).get("global_step", "unknown")
    meta = {"mode": args.mode, "seed": str(args.seed), "max_steps": str(args.max_steps), "steps": steps}
    meta |= {"run": str(run), "init": " + ".join(map(str, init)), "ema": str(use_ema)}
    meta |= {"overrides": " ".join(args.overrides)}
    save_file(unet, str(out), metadata={"info": json.dumps(meta)})
    logger.info("Wrote %s (%.1f MB)", out, out.stat().st_size / 1e6)


def unet_file_name(mode: str, seed: int) -> str:
    """File name of an exported UNet: seed 23 (the shipped seed) without a suffix."""
    return f"humansd-tiny-{mode}.safetensors" if seed == 23 else f"humansd-tiny-{mode}-s{seed}.safetensors"


def _with(args: argparse.Namespace, **changes: object) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


def pretrain_overrides(steps: int, cooldown_steps: int) -> list[str]:
    """The pre-training recipe: PRETRAIN_OVERRIDES and a linear cool-down of the learning rate to 0 over the last
    `cooldown_steps` steps (at most the whole run; 0: a constant rate throughout)."""
    if cooldown_steps < 0:
        raise SystemExit(f"--cooldown-steps must be >= 0; got {cooldown_steps}.")
    cooldown = min(cooldown_steps, steps)
    schedule = ["module.lr_schedule=linear", f"module.lr_decay_steps={cooldown}"] if cooldown else []
    return [*PRETRAIN_OVERRIDES, *schedule]


def stage_pretrain(args: argparse.Namespace) -> None:
    """The shared pre-training: `unet` in plain mode with the recipe's overrides (user overrides come last)."""
    steps = args.pretrain_steps
    overrides = [*pretrain_overrides(steps, args.cooldown_steps), *smoke_overrides(args, "train"), *args.overrides]
    stage_unet(
        _with(
            args,
            mode="plain",
            max_steps=steps,
            no_ema=False,
            init=args.init,  # None: from the seeded initial weights; or continue from trained ones
            out_dir=PRETRAINED_DIR,
            overrides=overrides,
            caches=unet_caches(args),
            export_trained=args.cooldown_steps > 0,
        )
    )


def finetune_args(args: argparse.Namespace, mode: str) -> argparse.Namespace:
    """`unet` arguments of the shipped fine-tune of one loss from the pre-trained UNet."""
    init = [TINY / "base-tiny.safetensors", PRETRAINED_DIR / unet_file_name("plain", args.seed)]
    overrides = [*FINETUNE_OVERRIDES, *smoke_overrides(args, "train"), *args.overrides]
    smoke = getattr(args, "smoke", None)
    steps = FINETUNE_STEPS if smoke is None else smoke
    return _with(args, mode=mode, max_steps=steps, no_ema=True, init=init, overrides=overrides)


STAGES = {
    "world": stage_world,
    "pose": stage_pose,
    "vae": stage_vae,
    "decoder": stage_decoder,
    "init": stage_init,
    "cache": stage_cache,
    "roundtrip": stage_roundtrip,
    "pretrain": stage_pretrain,
    "unet": stage_unet,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=[*STAGES, "all"], help="what to build")
    parser.add_argument("--mode", choices=MODES, default="paper", help="loss of the `unet` stage")
    parser.add_argument("--seed", type=int, default=23, help="seed of the init/unet stages")
    parser.add_argument("--max-steps", type=int, default=3000, help="training steps of the `unet` stage")
    parser.add_argument(
        "--pretrain-steps", type=int, default=42000, help="steps of 64 of the `pretrain` stage (shipped: 42,000 in all)"
    )
    parser.add_argument(
        "--cooldown-steps",
        type=int,
        default=2000,
        help="`pretrain`: the learning rate decays linearly to 0 over the last N steps (0: constant; shipped: 2,000)",
    )
    parser.add_argument("--max-minutes", type=float, help="stop the pose/vae/unet training after this many minutes")
    parser.add_argument("--world-size", type=int, help="images of the generated world (default 10,000)")
    parser.add_argument(
        "--extra-world-size", type=int, help="training images of the pose net's extra world (0: none; default 30,000)"
    )
    parser.add_argument("--workers", type=int, default=1, help="processes generating the world / reading it (cache)")
    parser.add_argument("--device", default="cpu", help="torch device of the `cache` and `roundtrip` stages' VAE")
    parser.add_argument(
        "--init",
        type=Path,
        action="append",
        help="`unet`/`pretrain`: start from these model weights; repeat for files that together hold the model "
        "(e.g. --init base-tiny.safetensors --init <unet file>; default: logs/mannequin/init.safetensors). "
        "`pose`: continue from this HigherHRNet weights file instead of training from scratch",
    )
    parser.add_argument(
        "--unet-extra-world",
        action="store_true",
        help="`cache`: also encode the extra world's training split (~22 min for 30,000 images on 2 cores); "
        "`pretrain`: train on both caches (39,000 images instead of 9,000)",
    )
    parser.add_argument("--out-dir", type=Path, default=TINY, help="`unet`: where the UNet file is written")
    parser.add_argument("--no-ema", action="store_true", help="`unet`: train and export without EMA (fine-tuning)")
    parser.add_argument(
        "--overwrite", action="store_true", help="`roundtrip`: redo existing round trips (needed after a new VAE)"
    )
    parser.add_argument("--roundtrip-limit", type=int, help="`roundtrip`: first N training images only (quick runs)")
    parser.add_argument(
        "--smoke",
        type=int,
        metavar="N",
        help="rehearse at toy scale in --workdir: 64/32-image worlds, every training stage N steps of batch 4; "
        "`all` then evaluates the paper-mode UNet on 4 entries",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help=f"build in this folder (configs/ copied in if absent; paths are relative to it) instead of the current "
        f"one; --smoke's default: {SMOKE_DIR}",
    )
    parser.add_argument("overrides", nargs="*", default=[], help="dotted key=value overrides for the training script")
    args = parser.parse_intermixed_args(argv)
    if any("=" not in o for o in args.overrides):
        parser.error(f"overrides must be key=value; got {[o for o in args.overrides if '=' not in o]}")
    if args.smoke is not None and args.smoke < 1:
        parser.error(f"--smoke takes a number of steps >= 1; got {args.smoke}")
    smoke_sizes = SMOKE_WORLD_SIZES if args.smoke is not None else (10000, 30000)
    args.world_size = smoke_sizes[0] if args.world_size is None else args.world_size
    args.extra_world_size = smoke_sizes[1] if args.extra_world_size is None else args.extra_world_size
    if args.smoke is not None:
        args.pretrain_steps = args.smoke
        args.cooldown_steps = min(args.cooldown_steps, args.smoke)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    workdir = args.workdir if args.workdir is not None else SMOKE_DIR if args.smoke is not None else None
    if workdir is not None:
        # paths given on the command line mean what they meant where the command was typed
        args.init = None if args.init is None else [p.resolve() for p in args.init]
        args.out_dir = args.out_dir if args.out_dir == TINY else args.out_dir.resolve()
        _enter_workdir(workdir, smoke=args.smoke is not None)
    start = time.perf_counter()
    if args.stage == "all":
        for stage in ("world", "vae", "decoder", "init", "cache", "roundtrip", "pose", "pretrain"):
            STAGES[stage](args)
        for mode in MODES:
            stage_unet(finetune_args(args, mode))
        if args.smoke is not None:
            _smoke_evaluation()
    else:
        STAGES[args.stage](args)
    logger.info("%s finished in %.1f min%s", args.stage, (time.perf_counter() - start) / 60, _where(workdir))
    return 0


def _enter_workdir(workdir: Path, smoke: bool) -> None:
    """Make `workdir` the current folder, with its own copy of the repository's configs (`init` rewrites the model
    config's latent scale there). A smoke run refuses the repository itself: it would overwrite the shipped files."""
    workdir = workdir.resolve()
    if smoke and workdir == ROOT:
        raise SystemExit(f"--smoke would overwrite the shipped weights in {ROOT}; give another --workdir.")
    workdir.mkdir(parents=True, exist_ok=True)
    if workdir != ROOT and not (workdir / "configs").exists():
        shutil.copytree(ROOT / "configs", workdir / "configs")
    os.chdir(workdir)
    logger.info("Working in %s", workdir)


def _where(workdir: Path | None) -> str:
    return "" if workdir is None else f" (in {Path.cwd()})"


def _smoke_evaluation() -> None:
    """The last step of `all --smoke`: the built files load and sample through the evaluation of the real build."""
    argv = ["--modes", "paper", "--limit", "4", "--steps", "2", "--outdir", "eval", "--no-roundtrip", "--errors"]
    argv += ["--threads", "1"]
    _run("evaluate_mannequin", argv)


if __name__ == "__main__":
    sys.exit(main())
