#!/usr/bin/env bash
# GPU validation (make gpu-check), sized for one H200 in under 10 minutes:
#   1. build the demo at imbalance 100 exactly (template captions, balanced eval split; the demo
#      pool allows ~2.6k training rows at that ratio, so training runs a fixed number of steps)
#   2. images + tensor shards (32 px: the demo's own size; the model resizes on the GPU)
#   3. train CLIP with ViT-S-32 from scratch, then a supervised run with the study's transfer
#      (a cosine head frozen to the CLIP run's text embeddings of "a {class}", subsampled
#      softmax weighted by sqrt frequency, SGD as the study), bf16 autocast; score both on the
#      held-out split and on an ImageFolder (wnid folders) written from the eval images
#   4. the same model under open_clip_train, fed a CSV export of the same manifest (its rows
#      repeated so that one open_clip epoch is as many steps as our runs)
#   5. print both reports' key numbers per evaluation set, throughput, and the throughput ratio
# Every knob is an environment variable (GPU_CHECK_*); outputs land under $GPU_CHECK_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
CURATE=${CURATE:-.venv/bin/curate}
[ -x "$PY" ] || PY=python3
[ -x "$CURATE" ] || CURATE=curate
WORK=${GPU_CHECK_DIR:-runs/gpu-check}   # runs/ is git-ignored
MODEL=${GPU_CHECK_MODEL:-ViT-S-32}
IMBALANCE=${GPU_CHECK_IMBALANCE:-100}
MAX_PER_CLASS=${GPU_CHECK_MAX_PER_CLASS:-}   # empty: the largest the demo pool allows at that ratio
EVAL_PER_CLASS=${GPU_CHECK_EVAL_PER_CLASS:-5}
RESOLUTION=${GPU_CHECK_RESOLUTION:-32}
STEPS=${GPU_CHECK_STEPS:-400}
BATCH=${GPU_CHECK_BATCH:-256}
LR=${GPU_CHECK_LR:-5e-4}
WORKERS=${GPU_CHECK_WORKERS:-$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))}
COMPILE=${GPU_CHECK_COMPILE:-0}            # 1: torch.compile in both trainers
DEVICE=${GPU_CHECK_DEVICE:-cuda}           # cpu: a smoke run of this script without a GPU
PRECISION=${GPU_CHECK_PRECISION:-bf16}
IMAGE_SIZE=${GPU_CHECK_IMAGE_SIZE:-}       # empty: the model's own (224 for ViT-S-32)
OPENCLIP_TIMEOUT=${GPU_CHECK_OPENCLIP_TIMEOUT:-240}
SL_OBJECTIVE=${GPU_CHECK_SL_OBJECTIVE:-sl-frozen-text-subsample}
SUBSAMPLE=${GPU_CHECK_SUBSAMPLE:-50}       # classes per softmax (the study's default)
NAME=gpucheck-r${IMBALANCE}

export CURATE_CACHE=${CURATE_CACHE:-$PWD/$WORK/cache}
export NO_ALBUMENTATIONS_UPDATE=1
export CURATE_NO_PROGRESS=${CURATE_NO_PROGRESS:-1}   # logs, not bars, when captured
mkdir -p "$WORK"
LOG="$WORK/gpu-check.log"
exec > >(tee -a "$LOG") 2>&1
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 ))s] $*"; }

stamp "gpu-check: $MODEL, imbalance $IMBALANCE, clip + $SL_OBJECTIVE, $STEPS steps of batch $BATCH, $PRECISION; outputs in $WORK"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
[ "$DEVICE" = cuda ] && "$PY" - <<'EOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu-check: torch sees no CUDA device; this check needs a GPU (run the CPU tests with make test)")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
EOF

MANIFESTS="$WORK/manifests"
M="$MANIFESTS/$NAME"
RUNS="$WORK/runs"
if [ -f "$M/manifest.parquet" ]; then
    stamp "1/5 manifest $M exists: reused"
else
    stamp "1/5 build the demo at imbalance $IMBALANCE"
    MPC=()
    [ -n "$MAX_PER_CLASS" ] && MPC=(--max-per-class "$MAX_PER_CLASS")
    "$CURATE" build --imbalance "$IMBALANCE" --captions template --name "$NAME" ${MPC[@]+"${MPC[@]}"} \
        --eval-per-class "$EVAL_PER_CLASS" --allow-shortfall --out-root "$MANIFESTS"
fi

stamp "2/5 images and tensor shards ($RESOLUTION px)"
"$CURATE" shards "$M" --resolution "$RESOLUTION"   # resumes: finished shards are kept

EXTRA=()
[ "$COMPILE" = 1 ] && EXTRA+=(--compile)
[ -n "$IMAGE_SIZE" ] && EXTRA+=(--image-size "$IMAGE_SIZE")
FOLDER="$WORK/imagefolder-$NAME"
stamp "3/5 ImageFolder of the eval images ($FOLDER)"
"$PY" scripts/gpu_check.py imagefolder "$M" "$FOLDER"
CLIP_RUN="$RUNS/$NAME-clip-$MODEL"
SL_RUN="$RUNS/$NAME-$SL_OBJECTIVE-$MODEL"
rm -rf "$CLIP_RUN" "$SL_RUN"   # fresh runs each time: the throughput must be these runs'
stamp "3/5 train clip ($MODEL, $PRECISION, $DEVICE)"
"$CURATE" train "$M" --objective clip --model "$MODEL" --steps "$STEPS" --batch-size "$BATCH" \
    --lr "$LR" --precision "$PRECISION" --device "$DEVICE" ${EXTRA[@]+"${EXTRA[@]}"} --log-every 20 \
    --checkpoint-epochs 1000 --out "$CLIP_RUN"   # one checkpoint at the end: a ViT's is ~0.7 GB
stamp "3/5 train $SL_OBJECTIVE (head frozen to the clip run's text tower, $PRECISION, $DEVICE)"
"$CURATE" train "$M" --objective "$SL_OBJECTIVE" --preset paper-sl --head "$CLIP_RUN" --prompts a+cname \
    --subsample-weights sqrt --subsample-classes "$SUBSAMPLE" --model "$MODEL" --steps "$STEPS" \
    --batch-size "$BATCH" --precision "$PRECISION" --device "$DEVICE" ${EXTRA[@]+"${EXTRA[@]}"} --log-every 20 \
    --checkpoint-epochs 1000 --out "$SL_RUN"
for RUN in "$CLIP_RUN" "$SL_RUN"; do
    "$CURATE" eval "$RUN" --dataset "imagefolder:$FOLDER" --device "$DEVICE" --workers "$WORKERS"
done

stamp "4/5 open_clip_train on the same manifest ($MODEL, 1 epoch of the repeated rows)"
OC_LOG="$WORK/open_clip_train.log"
: > "$OC_LOG"
if ! "$PY" -c "import open_clip_train.main" 2>/dev/null; then
    echo "open_clip_train is not importable here (it ships in open_clip_torch >= 2.23)" | tee "$OC_LOG"
else
    "$CURATE" export "$M" --format openclip-csv --out "$WORK/export" >/dev/null
    ONE=$(ls "$WORK"/export/train.openclip-csv.* | head -n 1)
    CSV="$WORK/export/train-repeated.tsv"
    "$PY" - "$ONE" "$CSV" "$(( STEPS * BATCH ))" <<'EOF'
import sys
src, dest, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
header, *rows = open(src, encoding="utf-8").read().splitlines()
reps = max(1, -(-want // max(1, len(rows))))
with open(dest, "w", encoding="utf-8") as f:
    f.write("\n".join([header] + rows * reps) + "\n")
print(f"open_clip_train input: {len(rows)} rows x {reps} = {len(rows) * reps}")
EOF
    OC_EXTRA=()
    [ "$COMPILE" = 1 ] && OC_EXTRA+=(--torchcompile)
    [ -n "$IMAGE_SIZE" ] && OC_EXTRA+=(--force-image-size "$IMAGE_SIZE")
    OC_PRECISION=amp_bf16
    [ "$PRECISION" = fp32 ] && OC_PRECISION=fp32
    # bounded: its throughput is read from its log lines, so a cut-short epoch still counts
    timeout "$OPENCLIP_TIMEOUT" "$PY" -m open_clip_train.main \
        --train-data "$CSV" --dataset-type csv --csv-separator $'\t' \
        --csv-img-key filepath --csv-caption-key title \
        --model "$MODEL" --precision "$OC_PRECISION" --batch-size "$BATCH" --epochs 1 \
        --workers "$WORKERS" --lr "$LR" --wd 0.1 --warmup 50 --seed 0 ${OC_EXTRA[@]+"${OC_EXTRA[@]}"} \
        --log-every-n-steps 10 --save-frequency 0 --zeroshot-frequency 0 --val-frequency 0 \
        --logs "$WORK/open_clip_logs" --name "gpucheck-$(date +%s)" >"$OC_LOG" 2>&1 \
        || echo "open_clip_train exited with status $? (its throughput lines so far still count; see $OC_LOG)"
fi

stamp "5/5 reports"
"$CURATE" compare "$CLIP_RUN" "$SL_RUN"
"$PY" scripts/gpu_check.py summary "$CLIP_RUN" "$SL_RUN" \
    --openclip-log "$OC_LOG" --json "$WORK/gpu-check.json"
stamp "done in $(( $(date +%s) - T0 )) s; log: $LOG, summary: $WORK/gpu-check.json"
