#!/usr/bin/env bash
# Fine-tuning from the port's pretrained MobileNet-0.25 checkpoints: validation AP (the 145
# WIDER FACE images of ../shared) before, and after one epoch on the 581 training images at
# batch 8, 640 px, for each BatchNorm setting and learning rate, with the fine-tuning recipe
# (configs/mobilenet0.25-finetune.toml; CONFIG= for the port's). Prints one table.
#
# Usage: scripts/finetune_bn.sh
# Env: BNS ("frozen train"), LRS ("1e-9 1e-4"), MODELS (the two .pth files), EPOCHS (1),
#      SEED (0), CONFIG (the run configuration the flags apply over; default
#      configs/mobilenet0.25-finetune.toml, empty for the port's recipe), THREADS (default: every
#      core), OUT (default runs/finetune-bn), RETINAFACE, SHARED; TRAINER=torch fine-tunes with the port's recipe in PyTorch instead
#      (scripts/torch_finetune_ref.py, run by PYTHON, which needs torch, numpy, pillow and
#      onnxruntime), scored by the same evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
BIN=${RETINAFACE:-target/release/retinaface}
BNS=${BNS:-"frozen train"}
LRS=${LRS:-"1e-9 1e-4"}
EPOCHS=${EPOCHS:-1}
SEED=${SEED:-0}
OUT=${OUT:-runs/finetune-bn}
M=$SHARED/models/retinaface
MODELS=${MODELS:-"$M/mobilenet0.25_biubug6_layout_legacy.pth $M/mobilenet0.25_biubug6_layout_zip.pth"}
CONFIG=${CONFIG-configs/mobilenet0.25-finetune.toml}
CONFIG_FLAG=()
[ -n "$CONFIG" ] && CONFIG_FLAG=(--config "$CONFIG")
THREADS_FLAG=()
[ -n "${THREADS:-}" ] && THREADS_FLAG=(--threads "$THREADS")
[ -x "$BIN" ] || cargo build --release -p retinaface-cli >&2
mkdir -p "$OUT"

ap() {
  "$BIN" eval widerface --images "$SHARED/data/widerface/val/images" \
    --gt "$SHARED/data/widerface/val/ground_truth" --model "$1" --json 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(" ".join("%.4f" % r[k]["ap"] for k in ("easy","medium","hard")))'
}

rows=()
for model in $MODELS; do
  name=$(basename "$model" .pth)
  rows+=("$name | start | | $(ap "$model" | sed 's/ / | /g') |")
  for bn in $BNS; do
    for lr in $LRS; do
      run="$OUT/$name-$bn-$lr"
      rm -rf "$run"
      start=$(date +%s)
      if [ "${TRAINER:-}" = torch ]; then
        "${PYTHON:-python3}" scripts/torch_finetune_ref.py "$model" --data "$SHARED/data/widerface/train" \
          --epochs "$EPOCHS" --batch 8 --lr "$lr" --batch-norm "$bn" --seed "$SEED" --threads "${THREADS:-$(nproc)}" \
          --out "$run.pth" 2> "$run.log" || { echo "training failed: $run.log" >&2; exit 1; }
        result=$run.pth
      else
        "$BIN" train "${CONFIG_FLAG[@]}" --init "$model" --data "$SHARED/data/widerface/train/images" \
          --epochs "$EPOCHS" --batch 8 --lr "$lr" --batch-norm "$bn" --seed "$SEED" --checkpoint-every 0 \
          "${THREADS_FLAG[@]}" --out "$run" 2> "$run.log" || { echo "training failed: $run.log" >&2; exit 1; }
        result=$run/final.safetensors
      fi
      secs=$(( $(date +%s) - start ))
      rows+=("$name | $bn | $lr | $(ap "$result" | sed 's/ / | /g') | ${secs} s")
    done
  done
done
echo "| start | BatchNorm | lr | easy | medium | hard | training time |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
