"""Fine-tune HumanSD (or SD-2.1) with the plain or the heatmap-guided loss.

Examples:
    # one GPU (full HumanSD recipe, SD-2.1 init with the 4->8 input expansion)
    python scripts/train.py --config configs/humansd/humansd-finetune.yaml --name finetune_humansd
    # 8 GPUs on one node (DDP)
    torchrun --standalone --nproc-per-node 8 scripts/train.py --config configs/humansd/humansd-finetune.yaml \\
        lightning.trainer.devices=8 lightning.strategy.name=ddp
    # resume a run (its saved config, checkpoint and data position)
    python scripts/train.py --resume logs/2024-05-01T12-00-00_finetune_humansd
    # tiny CPU smoke run
    python scripts/train.py --config configs/tiny/train-plain.yaml \\
        data.params.train.map_file=/tmp/tiny/mapping_file_training.json

Positional ``key=value`` arguments override config entries (OmegaConf dotted keys).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only

from ldm.cli import HelpFormatter
from ldm.training.run import prepare_run

logger = logging.getLogger("train")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--config", action="append", type=Path, help="training YAML; repeat to merge several, left to right")
    p.add_argument("overrides", nargs="*", default=[], help="dotted config overrides, e.g. data.params.batch_size=2")
    p.add_argument("--resume", type=Path, help="run folder or checkpoint inside one to resume (keeps its folder)")
    p.add_argument("--name", help="run-folder suffix; the first config file's name if omitted")
    p.add_argument("--logdir", type=Path, default=Path("logs"), help="parent folder of run folders")
    p.add_argument("--seed", type=int, default=23, help="seed of init, data order and noise (resume keeps its own)")
    p.add_argument(
        "--init-from",
        type=Path,
        action="append",
        help="initial weights (overrides init.checkpoint; e.g. SD-2.1 .ckpt); repeat for files that together hold "
        "the model (e.g. a base file + a UNet file)",
    )
    p.add_argument(
        "--trust-checkpoint", action="store_true", help="allow checkpoints that need full (unsafe) unpickling"
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # key=value overrides may come between options
    # Every process of a multi-GPU run executes this script; only rank 0 logs below warnings.
    level = args.log_level if rank_zero_only.rank == 0 else "WARNING"
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run = prepare_run(
            args.config,
            args.overrides,
            resume=args.resume,
            name=args.name,
            logdir=args.logdir,
            seed=args.seed,
            init_from=args.init_from[0] if args.init_from and len(args.init_from) == 1 else args.init_from,
            trust_checkpoint=args.trust_checkpoint,
        )
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f"train: error: {err}", file=sys.stderr)
        return 2
    run.fit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
