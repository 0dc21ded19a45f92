"""Generate images of people in a given pose with HumanSD.

Single mode: one prompt and one pose (HumanSD .npz, COCO/OpenPose/plain JSON, a skeleton image, or a photo
whose pose is detected). Batch mode (--from-mapping): every entry of a Human-Art / LAION-Human mapping file,
into a per-scenario folder tree, resumable and shardable (one process per GPU).

Examples:
    python scripts/pose2img.py --prompt "oil painting of two people dancing" --pose assets/poses/two_people.json
    python scripts/pose2img.py --from-mapping humansd_data/datasets/HumanArt/mapping_file_validation.json \\
        --outdir outputs/eval/humansd --shard 0/4 --device cuda:0
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ldm.cli import HelpFormatter
from ldm.inference.defaults import resolve_model
from ldm.inference.outputs import save_generation, weights_fingerprint
from ldm.inference.pipeline import DEFAULT_ADDED_PROMPT, DEFAULT_NEGATIVE_PROMPT, PRECISIONS, PoseToImagePipeline
from ldm.inference.pose_input import PoseSource, load_pose_input
from ldm.samplers import SamplerName, TimestepSpacing

logger = logging.getLogger("pose2img")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--prompt", help="text prompt (single mode)")
    io.add_argument("--pose", type=Path, help="pose file (.npz/.json), skeleton image, or photo (single mode)")
    io.add_argument(
        "--pose-type",
        choices=[s.value for s in PoseSource],
        default="auto",
        help="how an image given as --pose is read",
    )
    io.add_argument(
        "--detector", choices=["higherhrnet", "mediapipe"], default="mediapipe", help="pose detector for photos"
    )
    io.add_argument("--detector-ckpt", type=Path, help="HigherHRNet weights (for --detector higherhrnet)")
    io.add_argument("--from-mapping", type=Path, help="batch mode: mapping JSON (Human-Art / LAION-Human layout)")
    io.add_argument("--base-path", type=Path, help="root the mapping's paths are relative to (default: its folder)")
    io.add_argument("--shard", default="0/1", help="batch mode: process shard i of n (i/n), one per GPU")
    io.add_argument("--limit", type=int, help="batch mode: at most this many entries (after sharding)")
    io.add_argument("--outdir", type=Path, default=Path("outputs/pose2img"), help="output folder")
    io.add_argument("--init-image", type=Path, help="image to start from when --strength < 1")
    gen = p.add_argument_group("generation")
    gen.add_argument("--negative-prompt", default=DEFAULT_NEGATIVE_PROMPT, help="unconditional text of CFG")
    gen.add_argument("--added-prompt", default=DEFAULT_ADDED_PROMPT, help="appended as 'prompt, added'")
    gen.add_argument("--steps", type=int, help="sampler steps (default: the model config's; 50 for HumanSD)")
    gen.add_argument(
        "--scale",
        type=float,
        help="classifier-free guidance scale (default: the model config's; 10 for HumanSD, 1 for the tiny model)",
    )
    gen.add_argument("--sampler", choices=[s.value for s in SamplerName], default="ddim", help="sampler")
    gen.add_argument(
        "--spacing",
        choices=[s.value for s in TimestepSpacing],
        default="trailing",
        help="timestep grid ('original' = bit-parity with the original repo)",
    )
    gen.add_argument("--eta", type=float, help="DDIM eta (default: the model config's `defaults.eta`, else 0)")
    gen.add_argument("--strength", type=float, default=1.0, help="< 1 starts from the noised init image (SDEdit)")
    gen.add_argument("--seed", type=int, default=1234, help="random seed")
    gen.add_argument("--n", type=int, default=1, help="images per prompt")
    gen.add_argument("--height", type=int, help="output height (default: short side 512, multiples of 64)")
    gen.add_argument("--width", type=int, help="output width")
    gen.add_argument("--threshold", type=float, default=0.05, help="keypoint score threshold for drawing")
    model = p.add_argument_group("model")
    model.add_argument("--config", type=Path, help="model config (default: HumanSD if its weights exist, else tiny)")
    model.add_argument("--ckpt", type=Path, action="append", help="weights (.ckpt/.safetensors); repeat: base + UNet")
    model.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0")
    model.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32", help="autocast precision")
    model.add_argument("--trust-checkpoint", action="store_true", help="allow pickles beyond weights_only")
    fast = p.add_argument_group("speed and memory (see ldm/inference/fast_path.py)")
    fast.add_argument("--channels-last", action="store_true", help="UNet in channels-last memory format")
    fast.add_argument("--compile", action="store_true", help="torch.compile the UNet (the first image compiles)")
    fast.add_argument(
        "--compile-mode",
        choices=["default", "reduce-overhead", "max-autotune"],
        help="torch.compile mode (implies --compile; reduce-overhead: CUDA graphs, the fastest on a GPU once warm)",
    )
    fast.add_argument(
        "--prepack-weights", action="store_true", help="CPU: pack the UNet weights once for oneDNN/MKL (faster)"
    )
    fast.add_argument(
        "--winograd",
        action="store_true",
        help="CPU fp32: --prepack-weights and the UNet's 3x3 convolutions as Winograd F(4x4,3x3) (faster still)",
    )
    fast.add_argument(
        "--unet-dtype", choices=["bf16", "fp16"], help="store the UNet weights in this dtype (needs --precision same)"
    )
    fast.add_argument(
        "--share-cfg-input",
        action="store_true",
        help="guidance: run the UNet layers before the first cross-attention once for both branches (faster)",
    )
    fast.add_argument("--vae-slicing", action="store_true", help="decode one image at a time (less memory)")
    fast.add_argument("--vae-tiling", action="store_true", help="decode in overlapping tiles (large images)")
    return p


def _detector(args: argparse.Namespace):
    from ldm.pose.estimator import build_detector

    if args.detector == "higherhrnet":
        if args.detector_ckpt is None:
            raise ValueError("--detector higherhrnet needs --detector-ckpt (e.g. the HigherHRNet-W48 .pth).")
        return build_detector("higherhrnet", checkpoint=args.detector_ckpt)
    return build_detector("mediapipe")


def run_single(args: argparse.Namespace, pipe: PoseToImagePipeline, extra: dict) -> None:
    if not args.prompt:
        raise ValueError("--prompt is required (or use --from-mapping for batch mode).")
    pose, size = None, (args.height, args.width)
    if args.pose is not None:
        detector = _detector(args) if args.pose.suffix.lower() not in (".npz", ".json") else None
        pose, (h, w) = load_pose_input(
            args.pose,
            source=args.pose_type,
            detector=detector,
            multiple=pipe.model.image_multiple,
            short_side=min(pipe.default_size),  # 512 for the real model, the tiny model's native size otherwise
        )
        size = (args.height or h, args.width or w)
    prompt = f"{args.prompt}, {args.added_prompt}" if args.added_prompt else args.prompt
    out = pipe(
        prompt,
        pose,
        negative_prompt=args.negative_prompt,
        num_inference_steps=args.steps,
        guidance_scale=args.scale,
        eta=args.eta,
        sampler=args.sampler,
        timestep_spacing=args.spacing,
        seed=args.seed,
        height=size[0],
        width=size[1],
        num_images=args.n,
        strength=args.strength,
        init_image=str(args.init_image) if args.init_image else None,
        pose_threshold=args.threshold,
        progress=True,
    )
    stem = f"seed{args.seed}"
    paths = save_generation(out, args.outdir, stem, extra={**extra, "pose_file": str(args.pose)})
    logger.info("Wrote %d image(s), pose, overlay, grid and %s.json to %s", len(paths), stem, args.outdir)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.from_mapping is not None:
            from ldm.inference.batch import parse_shard

            parse_shard(args.shard)  # validate before loading a model
        config, ckpt, notice = resolve_model(args.config, args.ckpt)
        if notice:
            logger.warning(notice)
        pipe = PoseToImagePipeline.from_config(
            config,
            ckpt,
            device=args.device,
            precision=args.precision,
            allow_random=ckpt is None,
            trust_pickle=True if args.trust_checkpoint else None,
            channels_last=args.channels_last,
            compile_unet=args.compile or args.compile_mode is not None,
            compile_mode=args.compile_mode,
            prepack_weights=args.prepack_weights,
            winograd=args.winograd,
            unet_dtype=args.unet_dtype,
            share_cfg_input=args.share_cfg_input,
            vae_slicing=args.vae_slicing,
            vae_tiling=args.vae_tiling,
        )
        extra = {
            "config": str(config),
            "checkpoint": str(ckpt) if ckpt else None,
            "checkpoint_fingerprint": weights_fingerprint(ckpt),
            "added_prompt": args.added_prompt,
        }
        if args.from_mapping is not None:
            from ldm.inference.batch import run_batch_from_args

            run_batch_from_args(args, pipe, extra)
        else:
            run_single(args, pipe, extra)
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f"pose2img: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
