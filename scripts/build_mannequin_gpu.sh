#!/usr/bin/env bash
# Build the mannequin world's tiny models on one CUDA GPU (issue #5): the stages of build_mannequin_models.py with
# GPU batch sizes, the ablation (3 loss modes x 3 seeds) trained as concurrent processes, then evaluated.
#
#   bash scripts/build_mannequin_gpu.sh                      # full build, ~12 min on one H100 (estimate)
#   CALIBRATE=1 bash scripts/build_mannequin_gpu.sh          # ~2 min: every stage briefly, prints step rates
#   ACCEL=cpu CALIBRATE=1 bash scripts/build_mannequin_gpu.sh  # dry run of the plumbing on a CPU
#   SKIP_EVAL=1 ... / EVAL_ONLY=1 ...                        # train only / evaluate what was trained
#
# Every stage has a wall-clock budget (minutes) and a step count; the UNets of all modes get the same UNET_STEPS
# (set it from a calibration run so that the slowest mode finishes inside UNET_MIN). Shipped outputs land where
# the CPU builder puts them (humansd_data/checkpoints/tiny/, seed 23 = the shipped file); logs and tables go to
# $OUT_DIR.
set -uo pipefail

PY=${PY:-python}
ACCEL=${ACCEL:-gpu}                     # Lightning accelerator
DEVICE=$([ "$ACCEL" = gpu ] && echo cuda || echo cpu)
OUT_DIR=${OUT_DIR:-outputs/mannequin_gpu}
CALIBRATE=${CALIBRATE:-0}
WORLD_N=${WORLD_N:-10000}
SEEDS=${SEEDS:-"23 24 25"}
MODES=${MODES:-"plain paper reference"}
if [ "$CALIBRATE" = 1 ]; then
    POSE_MIN=${POSE_MIN:-0.75} POSE_STEPS=${POSE_STEPS:-100000}
    VAE_MIN=${VAE_MIN:-0.75}
    UNET_MIN=${UNET_MIN:-0.75} UNET_STEPS=${UNET_STEPS:-100000}
    EVAL_LIMIT=${EVAL_LIMIT:-10} ROUNDTRIP_ARGS=(--roundtrip-limit 256)
else
    POSE_MIN=${POSE_MIN:-2.5} POSE_STEPS=${POSE_STEPS:-6000}
    VAE_MIN=${VAE_MIN:-2.5}
    UNET_MIN=${UNET_MIN:-3.0} UNET_STEPS=${UNET_STEPS:-6000}
    EVAL_LIMIT=${EVAL_LIMIT:-300} ROUNDTRIP_ARGS=()
fi
POSE_BATCH=${POSE_BATCH:-64} VAE_BATCH=${VAE_BATCH:-64} UNET_BATCH=${UNET_BATCH:-64}
UNET_LR=${UNET_LR:-1.0e-3} EVAL_STEPS=${EVAL_STEPS:-20}
# Min-SNR-gamma timestep weighting for every UNet arm (README "Results": on CPU, 8,600 steps with gamma 5 beat 18,200
# uniform ones on every metric). UNET_SNR_GAMMA= (empty) restores the uniform weighting of SD/HumanSD.
UNET_SNR_GAMMA=${UNET_SNR_GAMMA-5}
UNET_EXTRA=()
[ -n "$UNET_SNR_GAMMA" ] && UNET_EXTRA=(loss.snr_gamma="$UNET_SNR_GAMMA")
mkdir -p "$OUT_DIR"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
T0=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - T0 )) s] $*"; }
B() { "$PY" scripts/build_mannequin_models.py "$@"; }

if [ "${EVAL_ONLY:-0}" != 1 ]; then

stamp "world ($WORLD_N images)"
B world --world-size "$WORLD_N" --workers "${WORLD_WORKERS:-12}" || exit 1

stamp "VAE (${VAE_MIN} min, batch $VAE_BATCH)"
# whole 128-px images (VAE_CROP=64 restores the crops the first build used; see configs/tiny/mannequin-vae-decoder.yaml)
B vae --max-minutes "$VAE_MIN" data.batch_size="$VAE_BATCH" data.num_workers=4 training.crop_size="${VAE_CROP:-null}" \
    >"$OUT_DIR/vae.log" 2>&1 || { echo "!! vae stage failed"; tail -30 "$OUT_DIR/vae.log"; exit 1; }
grep -h "psnr\|PSNR\|Wrote" "$OUT_DIR/vae.log" | tail -3

stamp "init (shared base file, scale factor)"
B init >"$OUT_DIR/init.log" 2>&1 || { tail -30 "$OUT_DIR/init.log"; exit 1; }
grep -h "scale" "$OUT_DIR/init.log"

stamp "latent cache and VAE round trips (the training split through the new VAE)"
B cache --device "$DEVICE" --workers "${WORLD_WORKERS:-12}" >"$OUT_DIR/cache.log" 2>&1 || { tail -30 "$OUT_DIR/cache.log"; exit 1; }
B roundtrip --device "$DEVICE" --overwrite "${ROUNDTRIP_ARGS[@]}" >"$OUT_DIR/roundtrip.log" 2>&1 || { tail -30 "$OUT_DIR/roundtrip.log"; exit 1; }

stamp "pose net (${POSE_MIN} min, ${POSE_STEPS} steps, batch $POSE_BATCH) on the worlds and the round trips"
# Continue from the shipped pose net at a lower learning rate; POSE_INIT= (empty) trains from scratch with the
# config's schedule instead.
POSE_INIT=${POSE_INIT-humansd_data/checkpoints/tiny/pose-tiny.safetensors}
POSE_ARGS=()
if [ -n "$POSE_INIT" ] && [ -f "$POSE_INIT" ]; then
    POSE_ARGS=(--init "$POSE_INIT" model.params.learning_rate="${POSE_LR:-1.5e-3}")
fi
B pose "${POSE_ARGS[@]}" --max-minutes "$POSE_MIN" trainer.accelerator="$ACCEL" trainer.max_steps="$POSE_STEPS" \
    data.params.batch_size="$POSE_BATCH" data.params.num_workers=6 trainer.val_check_interval=1000000 \
    trainer.limit_val_batches=5 model.params.warmup_steps=300 >"$OUT_DIR/pose.log" 2>&1 \
    || { echo "!! pose stage failed"; tail -30 "$OUT_DIR/pose.log"; exit 1; }
grep -h "Trained\|val AP\|Wrote" "$OUT_DIR/pose.log" | tail -3

stamp "UNets: modes [$MODES] x seeds [$SEEDS], ${UNET_STEPS} steps or ${UNET_MIN} min, batch $UNET_BATCH"
pids=()
for mode in $MODES; do
    for seed in $SEEDS; do
        B unet --mode "$mode" --seed "$seed" --max-steps "$UNET_STEPS" --max-minutes "$UNET_MIN" \
            lightning.trainer.accelerator="$ACCEL" data.params.batch_size="$UNET_BATCH" data.params.num_workers=0 \
            module.base_learning_rate="$UNET_LR" lightning.callbacks.checkpoint.every_n_train_steps=1000 \
            "${UNET_EXTRA[@]}" >"$OUT_DIR/unet-$mode-s$seed.log" 2>&1 &
        pids+=($!)
    done
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
[ "$failed" = 0 ] || echo "!! $failed UNet run(s) failed"
for f in "$OUT_DIR"/unet-*.log; do
    echo "$f: $(grep -ho 'Wrote .*' "$f" | tail -1)"
done
"$PY" - <<'EOF'
import json, pathlib
from safetensors import safe_open
for f in sorted(pathlib.Path("humansd_data/checkpoints/tiny").glob("humansd-tiny-*.safetensors")):
    with safe_open(str(f), framework="pt") as h:
        info = json.loads((h.metadata() or {}).get("info", "{}"))
    print(f"{f.name}: steps {info.get('steps')} of {info.get('max_steps')}")
EOF
fi
[ "${SKIP_EVAL:-0}" = 1 ] && { stamp "trained (evaluation skipped)"; exit 0; }

stamp "evaluation: $EVAL_LIMIT validation images x seeds per mode, $EVAL_STEPS DDIM steps"
pids=()
for mode in $MODES; do
    timeout "${EVAL_TIMEOUT:-600}" "$PY" scripts/evaluate_mannequin.py --modes "$mode" --seeds $SEEDS --limit "$EVAL_LIMIT" --steps "$EVAL_STEPS" \
        --device "$DEVICE" --threads 2 --outdir "$OUT_DIR/eval-$mode" >"$OUT_DIR/eval-$mode.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || echo "!! an evaluation failed"; done
"$PY" scripts/evaluate_mannequin.py --merge $(for m in $MODES; do echo "$OUT_DIR/eval-$m"; done) \
    --outdir "$OUT_DIR/eval"
stamp "done"
