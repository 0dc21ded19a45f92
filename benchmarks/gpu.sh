#!/usr/bin/env bash
# GPU benchmark suite for one CUDA GPU (issue #9). All steps but `unet512_tune` have run (H100 and H200,
# benchmarks/RESULTS.md).
#
#   bash benchmarks/gpu.sh                 # from the repository root, in the project's virtual environment
#   PY=.venv/bin/python OUT_DIR=outputs/benchmarks/gpu STEP_TIMEOUT=300 bash benchmarks/gpu.sh
#   STEPS="unet512_fast cuda_tests" bash benchmarks/gpu.sh     # only some steps, in this order
#
# Steps, most wanted first (each under `timeout $STEP_TIMEOUT`, or TIMEOUT_<step> for one step; a failed or timed-out
# step is reported and the suite goes on):
#   unet512_fast  UNet steps/s at 512² (64² latent), batch 2 = batch 1 with CFG, bf16: ours vs diffusers (same
#                 weights, fp32 outputs checked equal first), eager with fp32 weights under autocast and with
#                 bf16-stored weights, and the bf16-stored ones under torch.compile with CUDA graphs
#                 (mode reduce-overhead; COMPILE_TARGETS="fp32-weights half-weights" compiles the autocast ones too).
#   cuda_tests    tests/test_cuda.py (CUDA = CPU, bf16, SDPA kernels, compile, channels-last, VAE tiling, bf16-mixed
#                 Lightning runs, one-GPU DDP).
#   sampling512   end-to-end sampling at 512², 20 DDIM steps, SD-2.1-size HumanSD (random weights): s/image and
#                 peak memory, plain vs bf16 autocast vs bf16-stored UNet weights, eager and with CUDA graphs
#                 (SAMPLING_VARIANTS to choose others, e.g. compile, channels_last, vae_tiling).
#   train512      training step time and memory at 512²: plain vs heatmap-guided loss, bf16-mixed, random pose net.
#   unet512_tune  unet512_fast's compiled bf16-weight UNets with the inductor settings of diffusers' speed guide
#                 (--inductor-tuning), plus ours in channels-last and ours in the shared-input form of CFG
#                 (--share-cfg-input: the layers before the first cross-attention once per image; CFG-shaped inputs
#                 for all): the candidates for the >= 120 steps/s target.
#   unet512       the eager UNet table in fp32 / bf16 / fp16 autocast (measured once already).
# Results: $OUT_DIR/*.log and *.json; copy the tables into benchmarks/RESULTS.md with the GPU's name.
set -uo pipefail

PY=${PY:-python}
OUT_DIR=${OUT_DIR:-outputs/benchmarks/gpu}
STEP_TIMEOUT=${STEP_TIMEOUT:-480}
mkdir -p "$OUT_DIR"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; "$PY" -c "import torch; print(torch.__version__, torch.version.cuda)"; } \
    | tee "$OUT_DIR/device.txt"

failed=0
run_step() {  # run_step NAME CMD... : run CMD with a timeout (TIMEOUT_NAME or STEP_TIMEOUT), log to $OUT_DIR/NAME.log
    local name=$1
    shift
    local limit_var="TIMEOUT_$name"
    local limit=${!limit_var:-$STEP_TIMEOUT}
    echo "== $name ($(date -u +%T), limit ${limit}s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.log"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        echo "!! $name failed (rc=$rc; 124 = timed out after ${limit}s)"
        failed=$((failed + 1))
    fi
}
step() { local name=$1; shift; run_step "$name" "$PY" -m benchmarks "$@"; }

unet512_fast() {
    step unet512_fast unet_vs_diffusers --device cuda --sizes 512 --dtypes bf16 --batch-size 2 --iters 30 \
        --warmup 3 --threads 8 --weights-dtype bf16 --compile --compile-diffusers --compile-mode reduce-overhead \
        --compile-targets ${COMPILE_TARGETS:-half-weights} --json "$OUT_DIR/unet512_fast.json"
}
cuda_tests() { run_step cuda_tests "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py; }
sampling512() {
    step sampling512 sampling --full-size --device cuda --size 512 --steps 20 --iters 3 --threads 8 \
        --variants ${SAMPLING_VARIANTS:-plain bf16 bf16_weights bf16_weights_cuda_graphs} --json "$OUT_DIR/sampling512.json"
}
train512() {  # train_step.py reports time only: this wrapper adds the CUDA allocator's peak (max over variants)
    run_step train512 "$PY" -c 'import sys, torch
from benchmarks.train_step import main
rc = main(sys.argv[1:])
print(f"peak CUDA memory allocated (max over variants): {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
sys.exit(rc or 0)' --config configs/humansd/humansd-finetune.yaml --device cuda --precision bf16-mixed \
        --random-pose-net --batch-size 1 --size 512 --steps 10 --warmup 3 --threads 8 --json "$OUT_DIR/train512.json"
}
unet512_tune() {
    step unet512_tune unet_vs_diffusers --device cuda --sizes 512 --dtypes bf16 --batch-size 2 --iters 30 \
        --warmup 3 --threads 8 --weights-dtype bf16 --compile --compile-diffusers --compile-mode reduce-overhead \
        --compile-targets half-weights --channels-last --share-cfg-input --inductor-tuning \
        --json "$OUT_DIR/unet512_tune.json"
}
unet512() {
    step unet512 unet_vs_diffusers --device cuda --sizes 512 --dtypes fp32 bf16 fp16 --batch-size 2 \
        --iters 20 --warmup 3 --threads 8 --channels-last --json "$OUT_DIR/unet512.json"
}

for name in ${STEPS:-unet512_fast cuda_tests sampling512 train512 unet512_tune unet512}; do
    case $name in
        unet512_fast | cuda_tests | sampling512 | train512 | unet512_tune | unet512) "$name" ;;
        *) echo "!! unknown step $name"; failed=$((failed + 1)) ;;
    esac
done

echo "== done: $failed step(s) failed; results in $OUT_DIR"
exit "$failed"
