"""Seconds per UNet call: our `UNetModel` vs `diffusers.UNet2DConditionModel` holding the SAME weights.

Both networks live in this one process. The diffusers UNet is built from ours with diffusers' own LDM conversion
utilities (as `ldm.interop.diffusers.to_diffusers`); before any timing the fp32 output of every implementation and
variant is checked equal to diffusers' (max abs difference <= ``--tol``, default 1e-4), otherwise the benchmark
aborts. Timed calls alternate between the implementations (ours, diffusers, ours, ...) so that background load hits
all alike; the median of ``--iters`` calls per implementation and its time relative to diffusers in eager mode
(seconds / diffusers' seconds; < 1: faster than diffusers) are reported (CUDA peak memory too). Variants of ours
share its parameters (no extra copy):

- ``--prepack``: ours with the CPU fast path's prepacked conv / linear weights (`prepack_weights`), still eager;
- ``--winograd``: ours prepacked with its 3x3 convolutions as Winograd F(4x4, 3x3) (`FastPathOptions.winograd`,
  CPU fp32; under bf16 autocast it is the prepacked path), still eager;
- ``--channels-last``: ours with its weights in channels-last format (`channels_last`);
- ``--share-cfg-input``: the inputs become a real CFG batch (both halves share the latent and timestep, the text
  differs) and ours (and, with ``--prepack``, the prepacked ours) is also timed in the shared-input form
  (`FastPathOptions.share_cfg_input`: the first half of x and t, the whole context; the layers before the first
  cross-attention run once), against diffusers on the full batch; with ``--weights-dtype`` its half-weight copy
  too (and compiled, with ``--compile``);
- ``--compile`` / ``--compile-diffusers``: ours / diffusers under `torch.compile` (``--freezing`` turns on
  inductor's weight freezing, which prepacks weights for oneDNN on CPU; it applies to both compiled models;
  ``--compile-mode reduce-overhead`` adds CUDA graphs on a GPU). With ``--weights-dtype`` the half-weight UNets
  are compiled too (the fastest GPU configuration: no per-call weight casts, fused kernels, CUDA graphs).

The eager rows ("ours" vs "diffusers") are the like-for-like comparison; fast-path and compiled rows are reported
against diffusers *eager*, and against compiled diffusers when ``--compile-diffusers`` is given.

Weights are random (slightly perturbed so zero-initialised layers do not hide differences): timing only. The batch
is 2 by default: one classifier-free-guidance step (conditional + unconditional) for one image. bf16 runs under
`torch.autocast` (what `PoseToImagePipeline(precision="bf16")` does), fp32 runs without.

Examples:
    python -m benchmarks unet_vs_diffusers --sizes 256 512 --dtypes fp32 bf16 --iters 3 --threads 1 --prepack
    python -m benchmarks unet_vs_diffusers --sizes 256 --prepack --compile --compile-diffusers --freezing
    python -m benchmarks unet_vs_diffusers --config configs/tiny/humansd-tiny.yaml --sizes 64 --iters 5
    python -m benchmarks unet_vs_diffusers --device cuda --sizes 512 --batch-size 2 --iters 20 --threads 16
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ldm.cli import HelpFormatter
from ldm.config import instantiate, load_config, to_container
from ldm.inference.fast_path import prepack_weights
from ldm.inference.winograd import use_winograd
from ldm.models.unet import UNetModel

logger = logging.getLogger("unet_vs_diffusers")

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument(
        "--config",
        type=Path,
        default=Path("configs/stable-diffusion/v2-inference.yaml"),
        help="model config whose model.params.unet is benchmarked (default: full-size SD-2.1)",
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[256], help="image sides (latent side = size / 8)")
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"], help="precisions")
    p.add_argument("--batch-size", type=int, default=2, help="UNet batch (2 = one CFG step for one image)")
    p.add_argument("--iters", type=int, default=3, help="timed calls per implementation, size and dtype")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per implementation, size and dtype")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (keep 1 on a shared machine)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--prepack", action="store_true", help="also time ours with prepacked conv weights (CPU)")
    p.add_argument(
        "--winograd",
        action="store_true",
        help="also time ours prepacked with Winograd 3x3 convolutions (CPU fp32)",
    )
    p.add_argument(
        "--weights-dtype",
        choices=["bf16", "fp16"],
        help="also time both UNets with weights stored in this dtype (in that dtype's row, under autocast)",
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="also time our UNet in channels-last format (and, with --weights-dtype and --compile, its compiled "
        "half-weight copy in channels-last)",
    )
    p.add_argument(
        "--share-cfg-input",
        action="store_true",
        help="CFG-shaped inputs (halves share x and t) and also time ours in the shared-input form",
    )
    p.add_argument("--compile", action="store_true", help="also time our UNet under torch.compile")
    p.add_argument("--compile-diffusers", action="store_true", help="also time diffusers under torch.compile")
    p.add_argument("--freezing", action="store_true", help="inductor weight freezing for the compiled models")
    p.add_argument(
        "--inductor-tuning",
        action="store_true",
        help="inductor settings of diffusers' speed guide for the compiled models: 1x1 convolutions as matmuls, "
        "coordinate-descent tuning, no epilogue fusion",
    )
    p.add_argument(
        "--compile-targets",
        nargs="+",
        choices=["fp32-weights", "half-weights"],
        default=["fp32-weights", "half-weights"],
        help="which UNets --compile / --compile-diffusers compile: the fp32-weight ones (checked in fp32, timed in "
        "every dtype: one compile per dtype) and/or the --weights-dtype ones (one compile each)",
    )
    p.add_argument(
        "--compile-mode",
        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
        help="torch.compile mode of the compiled models (reduce-overhead: CUDA graphs)",
    )
    p.add_argument("--tol", type=float, default=1e-4, help="max abs fp32 difference allowed before timing")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    return p


def build_unet(config: Path, seed: int = 0) -> tuple[UNetModel, dict[str, Any]]:
    """Our UNet from `model.params.unet` of a config, with perturbed random weights, and the VAE ddconfig."""
    cfg = load_config(config)
    params = cfg.model.params
    torch.manual_seed(seed)
    unet = instantiate(params.unet).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    return unet, to_container(params.vae.params)


def diffusers_unet_like(unet: UNetModel, vae_params: dict[str, Any]) -> nn.Module:
    """A diffusers `UNet2DConditionModel` with our weights, via diffusers' own LDM conversion (strict load)."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders import single_file_utils as sfu

    unet_params = {k: v for k, v in unet.config.items() if not (k.startswith("num_head") and v == -1)}
    cfg = {"model": {"params": {"unet_config": {"params": unet_params}, "first_stage_config": {"params": vae_params}}}}
    ckpt = {f"model.diffusion_model.{k}": v.detach() for k, v in unet.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcfg = sfu.create_unet_diffusers_config_from_ldm(cfg, ckpt)
        ref = UNet2DConditionModel(**dcfg)
        ref.load_state_dict(sfu.convert_ldm_unet_checkpoint(ckpt, dcfg), strict=True)
    return ref.eval()


def shared_copy(module: nn.Module) -> nn.Module:
    """A structural copy of `module` that shares its parameters and buffers (no extra weight memory)."""
    return copy.deepcopy(module, memo={id(t): t for t in (*module.parameters(), *module.buffers())})


class SharedInput(nn.Module):
    """Calls a UNet of ours in the shared-input form of classifier-free guidance: the first half of a CFG batch's x
    and t (the halves are equal) with the whole context; returns the full batch's output."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        half = x.shape[0] // 2
        return self.unet(x[:half], t[:half], ctx)


def make_inputs(
    unet: UNetModel, size: int, batch: int, device: torch.device, cfg: bool = False
) -> tuple[torch.Tensor, ...]:
    """Random x, t, context of a batch; `cfg`: the two halves share x and t (a classifier-free-guidance batch)."""
    gen = torch.Generator().manual_seed(size)
    side = size // 8
    rows = batch // 2 if cfg else batch
    x = torch.randn(rows, unet.config["in_channels"], side, side, generator=gen)
    ctx = torch.randn(batch, 77, unet.config["context_dim"], generator=gen)
    t = torch.linspace(1, 999, rows).long()
    if cfg:
        x, t = x.repeat(2, 1, 1, 1), t.repeat(2)
    return x.to(device), t.to(device), ctx.to(device)


def mark_step() -> None:
    """Tell CUDA-graph trees a new step starts (harmless without compiled CUDA graphs)."""
    torch.compiler.cudagraph_mark_step_begin()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_impls(
    impls: dict[str, nn.Module],
    inputs: tuple[torch.Tensor, ...],
    dtype: torch.dtype | None,
    iters: int,
    warmup: int,
) -> dict[str, Any]:
    """Interleaved timing of the UNets on the same inputs: medians, ratios to "ours", output differences to "ours"
    and (CUDA) peak allocated memory per implementation."""
    x, t, ctx = inputs
    device = x.device
    amp = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def call(name: str) -> torch.Tensor:
        if name.startswith("diffusers"):
            return impls[name](x, t, encoder_hidden_states=ctx).sample
        return impls[name](x, t, ctx)

    times: dict[str, list[float]] = {name: [] for name in impls}
    outs: dict[str, torch.Tensor] = {}
    peaks: dict[str, float] = {}
    with torch.no_grad(), amp:
        for i in range(warmup + iters):
            for name in impls:
                _sync(device)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                mark_step()  # CUDA graphs (compile mode reduce-overhead): a new step, earlier outputs may be reused
                start = time.perf_counter()
                out = call(name)
                _sync(device)
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
                if i == warmup + iters - 1:
                    outs[name] = out.detach().clone()  # a copy: a CUDA graph's output buffer is overwritten later
                if device.type == "cuda":
                    peaks[name] = torch.cuda.max_memory_allocated(device) / 2**20
    row: dict[str, Any] = {}
    diffusers_s = statistics.median(times["diffusers"])
    for name, values in times.items():
        med = statistics.median(values)
        row[f"{name}_s"] = med
        row[f"{name}_it_per_s"] = 1.0 / med
        row[f"{name}_all_s"] = values
        row[f"ratio_{name}_over_diffusers"] = med / diffusers_s
        if name != "diffusers":
            row[f"{name}_max_abs_diff"] = (outs["diffusers"].float() - outs[name].float()).abs().max().item()
        if name in peaks:
            row[f"{name}_peak_mib"] = peaks[name]
    return row


def check_equal(impls: dict[str, nn.Module], inputs: tuple[torch.Tensor, ...], tol: float) -> float:
    """Max abs difference of every implementation's fp32 output to diffusers'; raises if one is above `tol`."""
    x, t, ctx = inputs
    diffs = {}
    with torch.no_grad():
        mark_step()
        ref = impls["diffusers"](x, t, encoder_hidden_states=ctx).sample.clone()
        for name, impl in impls.items():
            mark_step()
            out = impl(x, t, encoder_hidden_states=ctx).sample if name.startswith("diffusers") else impl(x, t, ctx)
            diffs[name] = (out - ref).abs().max().item()
    if max(diffs.values()) > tol:
        raise RuntimeError(f"Outputs differ by {diffs} (max abs) > {tol:g}: the comparison would be meaningless.")
    return max(diffs.values())


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    device = torch.device(args.device)
    start = time.perf_counter()
    ours, vae_params = build_unet(args.config)
    ref = diffusers_unet_like(ours, vae_params)
    ours, ref = ours.to(device), ref.to(device)
    impls: dict[str, nn.Module] = {"ours": ours, "diffusers": ref}
    if args.prepack:
        impls["ours_prepacked"] = shared_copy(ours)
        prepack_weights(impls["ours_prepacked"])
    if args.winograd:
        impls["ours_winograd"] = shared_copy(ours)
        prepack_weights(impls["ours_winograd"])
        use_winograd(impls["ours_winograd"])
    if args.share_cfg_input:
        if args.batch_size % 2:
            raise SystemExit("--share-cfg-input needs an even --batch-size (a CFG batch).")
        impls["ours_shared_input"] = SharedInput(ours)
        if args.prepack:
            # its own module copy: a prepacked module keeps one packing, for one input shape (batch B here)
            impls["ours_prepacked_shared_input"] = SharedInput(shared_copy(impls["ours_prepacked"]))
        if args.winograd:
            impls["ours_winograd_shared_input"] = SharedInput(shared_copy(impls["ours_winograd"]))
    if args.channels_last:
        impls["ours_channels_last"] = copy.deepcopy(ours).to(memory_format=torch.channels_last)
    if args.freezing or args.inductor_tuning:
        from torch._inductor import config as inductor_config

        inductor_config.freezing = args.freezing or inductor_config.freezing
        if args.inductor_tuning:
            inductor_config.conv_1x1_as_mm = True
            inductor_config.coordinate_descent_tuning = True
            inductor_config.epilogue_fusion = False

    def compiled(module: nn.Module) -> nn.Module:
        return torch.compile(shared_copy(module), mode=args.compile_mode)

    compile_full = "fp32-weights" in args.compile_targets
    compile_half = "half-weights" in args.compile_targets
    if args.compile and compile_full:
        impls["ours_compiled"] = compiled(ours)
    if args.compile_diffusers and compile_full:
        impls["diffusers_compiled"] = compiled(ref)
    half_weights: dict[str, nn.Module] = {}
    if args.weights_dtype:  # both UNets with their weights stored in bf16/fp16 (no per-call weight casts)
        tag = args.weights_dtype
        half_weights[f"ours_{tag}_weights"] = copy.deepcopy(ours).to(DTYPES[tag])
        half_weights[f"diffusers_{tag}_weights"] = copy.deepcopy(ref).to(DTYPES[tag])
        if args.compile and compile_half:
            half_weights[f"ours_{tag}_weights_compiled"] = compiled(half_weights[f"ours_{tag}_weights"])
        if args.compile and compile_half and args.channels_last:
            cl = copy.deepcopy(half_weights[f"ours_{tag}_weights"]).to(memory_format=torch.channels_last)
            half_weights[f"ours_{tag}_weights_channels_last_compiled"] = compiled(cl)
        if args.compile_diffusers and compile_half:
            half_weights[f"diffusers_{tag}_weights_compiled"] = compiled(half_weights[f"diffusers_{tag}_weights"])
        if args.share_cfg_input:
            half_ours = half_weights[f"ours_{tag}_weights"]
            half_weights[f"ours_{tag}_weights_shared_input"] = SharedInput(shared_copy(half_ours))
            if args.compile and compile_half:
                half_weights[f"ours_{tag}_weights_shared_input_compiled"] = SharedInput(compiled(half_ours))
    n_params = sum(p.numel() for p in ours.parameters())
    logger.info("Built both UNets (%.1f M parameters each) in %.1f s", n_params / 1e6, time.perf_counter() - start)
    results = []
    for size in args.sizes:
        inputs = make_inputs(ours, size, args.batch_size, device, cfg=args.share_cfg_input)
        diff = check_equal(impls, inputs, args.tol)
        logger.info("size %d: fp32 outputs of all variants equal (max abs diff %.2e <= %g)", size, diff, args.tol)
        for name in args.dtypes:
            row = {"size": size, "latent": size // 8, "batch": args.batch_size, "dtype": name, "fp32_check": diff}
            timed = impls | (half_weights if name == args.weights_dtype else {})  # half weights: their dtype's row
            row.update(time_impls(timed, inputs, DTYPES[name], args.iters, args.warmup))
            logger.info(
                "size %d %s: %s",
                size,
                name,
                ", ".join(
                    f"{n} {row[f'{n}_s']:.3f} s ({row[f'ratio_{n}_over_diffusers']:.2f}x diffusers)" for n in timed
                ),
            )
            results.append(row)
    return results


def format_table(results: list[dict[str, Any]]) -> str:
    """Markdown table: seconds per call, time relative to diffusers eager (< 1: faster than diffusers) and the max
    abs output difference of each variant to diffusers (bf16: rounding)."""
    names: list[str] = []  # every variant of any row, in first-seen order (half-weight variants: one row only)
    for r in results:
        names += [k[: -len("_s")] for k in r if k.endswith("_s") and not k.endswith(("_all_s", "_per_s"))]
    names = list(dict.fromkeys(names))
    others = [n for n in names if n != "diffusers"]
    head = " | ".join(
        [f"{n} s/call" for n in names] + [f"{n}/diffusers" for n in others] + [f"{n} max abs diff" for n in others]
    )
    lines = [f"| image | latent | batch | dtype | {head} |", "|---" * (4 + len(names) + 2 * len(others)) + "|"]
    for r in results:
        cells = [f"{r[f'{n}_s']:.3f}" if f"{n}_s" in r else "-" for n in names]
        cells += [f"**{r[f'ratio_{n}_over_diffusers']:.2f}**" if f"{n}_s" in r else "-" for n in others]
        cells += [f"{r[f'{n}_max_abs_diff']:.1e}" if f"{n}_s" in r else "-" for n in others]
        lines.append(f"| {r['size']}² | {r['latent']}² | {r['batch']} | {r['dtype']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = run(args)
    meta = {
        "config": str(args.config),
        "device": args.device,
        "threads": torch.get_num_threads(),
        "iters": args.iters,
        "warmup": args.warmup,
        "torch": torch.__version__,
        "freezing": args.freezing,
        "inductor_tuning": args.inductor_tuning,
        "compile_mode": args.compile_mode,
        "cfg_inputs": args.share_cfg_input,
    }
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
