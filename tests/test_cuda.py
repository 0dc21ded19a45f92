"""CUDA code paths on the tiny model: pipeline parity with the CPU, bf16 autocast, the SDPA kernels behind
`ldm.models.attention`, `torch.compile`, channels-last and sliced/tiled VAE decoding, and short Lightning runs
(bf16-mixed with the plain and heatmap-guided losses; one-GPU DDP over NCCL).

Skipped without a CUDA device. The fp32 comparisons turn cuDNN's TF32 convolutions off (`no_tf32`) so that their
tolerances measure the code path, not the reduced-precision convolution mode (fp32 matmuls are full precision by
default). Models, inputs and training configs are the ones of `tests/test_fast_path.py` and `tests/test_training.py`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from test_fast_path import _build, _max_diff, _unet_inputs
from test_pipeline import two_people_keypoints
from test_training import PAPER, PLAIN, REFERENCE, REPO, _metrics, _overrides, torchrun_train
from torch.nn.attention import SDPBackend, sdpa_kernel

from ldm.data.synthetic import write_tiny_dataset
from ldm.inference.fast_path import FastPathOptions, apply_fast_path, decode_latents
from ldm.inference.pipeline import PoseToImagePipeline
from ldm.models.attention import attention, attention_backend
from ldm.training.run import RUN_STAMP_ENV, prepare_run

DEVICE = "cuda"
ACCELERATOR = "gpu"  # Lightning's name for DEVICE
DIST_BACKEND = "nccl"
# What `F.scaled_dot_product_attention` raises when the kernels allowed by `sdpa_kernel` cannot run these inputs.
SDPA_UNAVAILABLE = ("No available kernel", "No viable backend")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture
def no_tf32():
    """Full-precision fp32 convolutions for the duration of a test (cuDNN allows TF32 by default)."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = saved


def _pipeline(device: str = DEVICE, **kwargs) -> PoseToImagePipeline:
    return PoseToImagePipeline(_build(), device=device, default_size=(64, 64), skeleton_width=2, **kwargs)


def _images(pipe: PoseToImagePipeline, **kwargs) -> np.ndarray:
    """(2, 64, 64, 3) int16 images of a fixed call (pose latents and noise come from the seeded CPU generator)."""
    call = {"num_inference_steps": 3, "guidance_scale": 5.0, "seed": 7, "num_images": 2, **kwargs}
    out = pipe("a dancer", two_people_keypoints(), **call)
    return np.stack([np.asarray(im, dtype=np.int16) for im in out.images])


def _on_device(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(DEVICE) for t in tensors)


# ---------------------------------------------------------------- pipeline: device parity, bf16 autocast
def test_pipeline_on_cuda_matches_cpu(no_tf32):
    """Same seed -> same image on both devices: all randomness is drawn on the CPU generator (eta = 0)."""
    cpu = _images(_pipeline("cpu"))
    cuda = _images(_pipeline())
    assert cpu.std() > 0  # not a constant image
    assert np.abs(cpu - cuda).mean() <= 2


def test_pipeline_bf16_autocast_close_to_fp32():
    model = _build()
    unet_dtypes: list[torch.dtype] = []
    model.unet.register_forward_hook(lambda _m, _i, out: unet_dtypes.append(out.dtype))
    ref = _images(PoseToImagePipeline(model, device=DEVICE, default_size=(64, 64), skeleton_width=2), eta=0.5)
    assert set(unet_dtypes) == {torch.float32}
    unet_dtypes.clear()
    steps: list[dict] = []
    bf16 = PoseToImagePipeline(model, device=DEVICE, precision="bf16", default_size=(64, 64), skeleton_width=2)
    low = _images(bf16, eta=0.5, callback=steps.append)  # eta > 0: per-step noise from a CUDA generator
    assert set(unet_dtypes) == {torch.bfloat16}  # autocast is on for the UNet
    assert len(steps) == 3 and all(torch.isfinite(s["x"]).all() and torch.isfinite(s["x0_pred"]).all() for s in steps)
    assert np.abs(ref - low).mean() <= 8  # bf16: ~1e-2 relative error per layer (measured on CPU: 1-2 levels)


# ---------------------------------------------------------------- attention kernels
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize(
    "backend",
    [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    ids=["flash", "mem_efficient", "math"],
)
def test_sdpa_kernels_equal_math_reference(backend: SDPBackend, dtype: torch.dtype):
    """`attention()` on each SDPA kernel (head dim 64; self and cross shapes) vs the explicit fp32 reference."""
    g = torch.Generator().manual_seed(0)
    for n, m in ((256, 256), (256, 77)):
        q = torch.randn(2, 4, n, 64, generator=g).to(DEVICE, dtype)
        k, v = (torch.randn(2, 4, m, 64, generator=g).to(DEVICE, dtype) for _ in range(2))
        with attention_backend("math"):
            ref = attention(q.float(), k.float(), v.float())  # the same (rounded) inputs, in fp32
        with attention_backend("auto"), sdpa_kernel(backend):
            try:
                out = attention(q, k, v)
            except RuntimeError as err:
                if not any(msg in str(err) for msg in SDPA_UNAVAILABLE):
                    raise
                pytest.skip(f"torch has no {backend.name} kernel for {dtype} here: {err}")
        assert out.dtype == dtype and out.shape == (2, 4, n, 64)
        assert _max_diff(ref, out) <= 2e-2, (n, m)


# ---------------------------------------------------------------- torch.compile, channels-last, VAE decoding
def test_compiled_unet_equals_eager(no_tf32):
    """Real inductor (Triton) compile of the tiny UNet, through the pipeline's `compile_unet` option."""
    model = _build().to(DEVICE)
    x, t, ctx = _on_device(*_unet_inputs())
    try:
        with torch.no_grad():
            eager = model.unet(x, t, ctx)
            pipe = PoseToImagePipeline(model, device=DEVICE, compile_unet=True)
            compiled = pipe.model.unet(x, t, ctx)
            again = pipe.model.unet(x, t, ctx)  # cached graph
    finally:
        torch.compiler.reset()
    assert _max_diff(eager, compiled) <= 1e-3
    assert _max_diff(eager, again) <= 1e-3


def test_pipeline_cuda_graphs_equal_eager(no_tf32):
    """torch.compile mode "reduce-overhead" (CUDA graphs) through the pipeline, with PLMS (it keeps earlier
    network outputs, which a graph replay would overwrite without `LatentDiffusion.cuda_graph_steps`), and the
    shared-input CFG batch (x of batch B, text of 2B) inside the graph."""
    try:
        plain = _images(_pipeline(), sampler="plms")
        graphs = _pipeline(compile_unet=True, compile_mode="reduce-overhead", share_cfg_input=True)
        assert graphs.model.cuda_graph_steps and graphs.model.share_cfg_input
        first, again = _images(graphs, sampler="plms"), _images(graphs, sampler="plms")  # again: replays
    finally:
        torch.compiler.reset()
    assert np.abs(plain - first).max() <= 2 and np.abs(plain - again).max() <= 2


def test_channels_last_equals_plain(no_tf32):
    model = _build().to(DEVICE)
    x, t, ctx = _on_device(*_unet_inputs())
    with torch.no_grad():
        plain = model.unet(x, t, ctx)
        apply_fast_path(model, FastPathOptions(channels_last=True))
        conv = next(m for m in model.unet.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.device.type == DEVICE and conv.weight.is_contiguous(memory_format=torch.channels_last)
        fast = model.unet(x, t, ctx)
    assert _max_diff(plain, fast) <= 1e-4


def test_vae_slicing_and_tiling_equal_plain(no_tf32):
    model = _build().to(DEVICE)
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    with torch.no_grad():
        plain = model.decode_latents(latents)
        sliced = decode_latents(model, latents, FastPathOptions(vae_slicing=True))
        both = decode_latents(model, latents, FastPathOptions(vae_slicing=True, vae_tiling=True))
    # As the CPU test's 1e-5, scaled to the output (cuDNN may pick another algorithm for batch 1 than for 3).
    tol = 1e-5 * max(1.0, plain.abs().max().item())
    assert _max_diff(plain, sliced) <= tol
    assert _max_diff(plain, both) <= tol  # 8x8 latents fit in one 64-pixel tile


def test_multi_tile_decode_on_cuda_equals_cpu(no_tf32):
    """Several tiles: the blending masks and accumulators live on the latents' device."""
    cpu = _build()
    cuda = _build().to(DEVICE)
    z = torch.randn(1, 4, 21, 30, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = cpu.vae.decode_tiled(z, tile=16, overlap=8)
        out = cuda.vae.decode_tiled(z.to(DEVICE), tile=16, overlap=8)
    assert out.device.type == DEVICE and out.shape == ref.shape == (1, 3, 168, 240)
    assert _max_diff(ref, out.cpu()) <= 1e-4 * max(1.0, ref.abs().max().item())


def test_pipeline_fast_options_equal_plain(no_tf32):
    plain = _images(_pipeline())
    fast = _images(_pipeline(channels_last=True, share_cfg_input=True, vae_slicing=True, vae_tiling=True))
    assert np.abs(plain - fast).max() <= 2


# ---------------------------------------------------------------- Lightning training on the GPU
@pytest.fixture(scope="module")
def train_map(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 training items (4 batches of 2 per epoch) + 2 validation items (as `tests/test_training.py`)."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny-data"), n=10, size=64, seed=0)


class DeviceLossRecorder(Callback):
    """Training loss per step and the device the module trained on (Lightning moves it back to CPU at teardown)."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.devices: set[str] = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].item())
        self.devices.add(pl_module.device.type)


@pytest.mark.parametrize(
    ("config", "extra"),
    [(PLAIN, []), (PAPER, []), (REFERENCE, ["module.use_ema=true"])],
    ids=["plain", "heatmap-paper", "heatmap-reference-ema"],
)
def test_bf16_mixed_training_run(
    config: Path, extra: list[str], train_map: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # configs name model_config relative to the repository root
    monkeypatch.setenv(RUN_STAMP_ENV, "test")
    overrides = _overrides(
        train_map,
        f"lightning.trainer.accelerator={ACCELERATOR}",
        "lightning.trainer.precision=bf16-mixed",
        "lightning.trainer.max_steps=4",
        "lightning.callbacks.checkpoint=null",
        "lightning.callbacks.image_sampler={every_n_steps: 2, num_images: 2, steps: 2}",
        *extra,
    )
    run = prepare_run([config], overrides, logdir=tmp_path, name="bf16")
    recorder = DeviceLossRecorder()
    trainer = run.fit(extra_callbacks=[recorder])
    assert trainer.precision == "bf16-mixed"
    assert recorder.devices == {DEVICE}
    assert len(recorder.losses) == 4 and all(math.isfinite(x) for x in recorder.losses), recorder.losses
    assert len(list((run.layout.images / "train").glob("*.png"))) == 2  # sampled at steps 2 and 4


def test_one_gpu_ddp(train_map: Path, tmp_path: Path) -> None:
    """DDP with one process, launched as `tests/test_training.py` launches its 2-process run (torchrun)."""
    proc = torchrun_train(1, [
        "--config", str(PLAIN), "--logdir", str(tmp_path), "--name", "ddp",
        *_overrides(train_map, "lightning.trainer.max_steps=2", f"lightning.trainer.accelerator={ACCELERATOR}",
                    "lightning.trainer.devices=1", "lightning.strategy.name=ddp",
                    f"lightning.strategy.params.process_group_backend={DIST_BACKEND}"),
    ])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"distributed_backend={DIST_BACKEND}" in proc.stdout + proc.stderr
    (run_dir,) = tmp_path.glob("*_ddp")
    losses = {int(r["step"]): float(r["train/loss"]) for r in _metrics(run_dir) if r.get("train/loss")}
    assert sorted(losses) == [0, 1] and all(math.isfinite(x) for x in losses.values()), losses
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
