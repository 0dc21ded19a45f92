r"""Train the bottom-up HigherHRNet pose estimator (e.g. the tiny one on the mannequin world) and export it.

Examples:
    # the tiny estimator on the mannequin world (~16 min on a shared 2-core CPU)
    nice -n 10 python scripts/train_pose.py --config configs/tiny/mannequin-pose.yaml --num-threads 1 \
        --max-minutes 16 --out humansd_data/checkpoints/tiny/pose-tiny.safetensors
    # continue from trained weights (new optimizer and schedule; e.g. more epochs at a lower learning rate)
    python scripts/train_pose.py --init-from humansd_data/checkpoints/tiny/pose-tiny.safetensors \
        model.params.learning_rate=1e-3 --max-minutes 30 --out outputs/pose-more.safetensors
    # grow a trained 16-wide net into the shipped, 1.5x wider one (same outputs at the start), then train on
    python scripts/train_pose.py --init-from pose-w16.safetensors --grow \
        model.params.pose_config=configs/pose/higherhrnet_tiny_mannequin.yaml --out outputs/pose-grown.safetensors
    # smoke run on another dataset root
    python scripts/train_pose.py data_root=/tmp/world trainer.max_steps=20 trainer.val_check_interval=10

Positional ``key=value`` arguments override config entries (OmegaConf dotted keys). The exported file loads with
``PoseEstimator.from_checkpoint(out, config)`` with the model's pose_config (also stored in the file's metadata).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger

from ldm.cli import HelpFormatter
from ldm.config import instantiate, load_config
from ldm.pose.estimator import check_pose_state_dict, load_pose_state_dict
from ldm.pose.grow import widen_pose_state_dict
from ldm.training.pose_module import PoseNetModule, check_pose_train_config, export_pose_weights

logger = logging.getLogger("train_pose")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--config", type=Path, default=Path("configs/tiny/mannequin-pose.yaml"), help="training YAML")
    p.add_argument("overrides", nargs="*", default=[], help="dotted config overrides, e.g. trainer.max_steps=100")
    p.add_argument("--out", type=Path, help="export the trained weights to this .safetensors file")
    p.add_argument(
        "--init-from", type=Path, help="start from these HigherHRNet weights (.safetensors or mmcv .pth; strict)"
    )
    p.add_argument(
        "--grow",
        action="store_true",
        help="--init-from weights may be narrower than the config's network: widen them without changing the "
        "outputs (ldm.pose.grow), then train",
    )
    p.add_argument("--half", action="store_true", help="export float16 weights (half the file size)")
    p.add_argument("--max-minutes", type=float, help="stop training after this many minutes (Trainer max_time)")
    p.add_argument(
        "--num-threads", type=int, help="torch intra-op threads (1 is fastest on a CPU shared with other jobs)"
    )
    p.add_argument("--log-dir", type=Path, default=Path("outputs/train_pose"), help="Lightning logs and checkpoints")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level")
    return p


def _init_net(module: PoseNetModule, path: Path, *, grow: bool) -> None:
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_pose_state_dict(path).items()}
    if grow:
        state = widen_pose_state_dict(state, module.net)
    module.net.load_state_dict(check_pose_state_dict(state, module.net, str(path)))
    logger.info("Initialised the network from %s%s.", path, " (widened)" if grow else "")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.out is not None and args.out.suffix != ".safetensors":
            raise ValueError(f"--out must end in .safetensors; got {args.out}.")
        if args.max_minutes is not None and args.max_minutes <= 0:
            raise ValueError(f"--max-minutes must be positive; got {args.max_minutes}.")
        if args.num_threads is not None and args.num_threads < 1:
            raise ValueError(f"--num-threads must be >= 1; got {args.num_threads}.")
        cfg = check_pose_train_config(load_config(args.config, args.overrides))
        pl.seed_everything(cfg.get("seed", 0), workers=True)
        datamodule = instantiate(cfg["data"])
        module: PoseNetModule = instantiate(cfg["model"])
        if args.grow and args.init_from is None:
            raise ValueError("--grow needs --init-from (the trained weights to widen).")
        if args.init_from is not None:
            _init_net(module, args.init_from, grow=args.grow)
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f"train_pose: error: {err}", file=sys.stderr)
        return 2
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    max_time = datetime.timedelta(minutes=args.max_minutes) if args.max_minutes else None
    trainer = pl.Trainer(
        **cfg["trainer"], max_time=max_time, default_root_dir=args.log_dir, logger=CSVLogger(args.log_dir)
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    minutes = (time.perf_counter() - start) / 60
    metrics = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    logger.info("Trained %d steps in %.1f min; final val AP %.4f.", trainer.global_step, minutes, metrics["val/ap"])
    if args.out is not None:
        meta = {"train_config": str(args.config), "overrides": " ".join(args.overrides)}
        meta |= {"init_from": str(args.init_from)} if args.init_from is not None else {}
        meta |= {"init_grown": "true"} if args.grow else {}
        meta |= {"global_step": str(trainer.global_step), "val_ap": f"{metrics['val/ap']:.4f}"}
        export_pose_weights(module.net, args.out, pose_config=module.pose_config, half=args.half, metadata=meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
