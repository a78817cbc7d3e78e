#!/usr/bin/env bash
# The mesh branch trained jointly with detection (SPEC §1.7), against the same run without
# it: fine-tuning the port's MobileNet-0.25 from its pretrained .pth on the 581 training
# images, the port's recipe (configs/mobilenet0.25-port.toml) at batch 8, 640 px, one seed
# and one budget for both. The run with the branch adds `[model] mesh = true` and the
# branch's loss settings of configs/mobilenet0.25-port-mesh.toml, weighted by λ3 = 0.01
# against the detection terms (the detection layers train). Prints one table: validation AP
# at IoU 0.5 and 0.5:0.95 (the 145 WIDER FACE images of ../shared), landmark NME of the
# landmark head and of the mesh's five landmark vertices (on the training images: the only
# landmark labels there are), and the training time.
#
# Usage: scripts/mesh_joint.sh
# Env: EPOCHS (4), LR (1e-4), SEED (0), MODEL (the legacy .pth), THREADS (default: every
#      core), OUT (default runs/mesh-joint), RETINAFACE, SHARED.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
BIN=${RETINAFACE:-target/release/retinaface}
EPOCHS=${EPOCHS:-4}
LR=${LR:-1e-4}
SEED=${SEED:-0}
OUT=${OUT:-runs/mesh-joint}
MODEL=${MODEL:-$SHARED/models/retinaface/mobilenet0.25_biubug6_layout_legacy.pth}
THREADS_FLAG=()
[ -n "${THREADS:-}" ] && THREADS_FLAG=(--threads "$THREADS")
[ -x "$BIN" ] || cargo build --release -p retinaface-cli >&2
mkdir -p "$OUT"
TRAIN=$SHARED/data/widerface/train

# The two configurations: the port's recipe, and the same with the branch.
cp configs/mobilenet0.25-port.toml "$OUT/without.toml"
sed -e 's/^\[model\]$/[model]\nmesh = true/' \
  -e 's/^\[loss\]$/[loss]\nmesh_weight = 0.01\nmesh_anchors = 8\nmesh_crop = 64\nmesh_landmark_weight = 1.0/' \
  -e 's/^\[optim\]$/[optim]\nmesh_lr = 3e-4/' \
  configs/mobilenet0.25-port.toml > "$OUT/with.toml"

ap() {
  "$BIN" eval widerface --images "$SHARED/data/widerface/val/images" \
    --gt "$SHARED/data/widerface/val/ground_truth" --model "$1" --iou "$2" --json 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(" | ".join("%.4f" % r[k]["ap"] for k in ("easy","medium","hard")))'
}

nme() {
  "$BIN" eval landmarks --labels "$TRAIN/label.txt" --images "$TRAIN/images" --model "$1" \
    --json "${@:2}" 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.4f" % r["mean_nme"])'
}

row() { # name, model file, training seconds, whether it has the branch
  local mesh="–"
  [ "$4" = yes ] && mesh=$(nme "$2" --mesh)
  echo "| $1 | $(ap "$2" 0.5) | $(ap "$2" 0.5:0.95) | $(nme "$2") | $mesh | $3 |"
}

rows=("$(row "start ($(basename "$MODEL"))" "$MODEL" "" no)")
for variant in without with; do
  run="$OUT/$variant"
  rm -rf "$run"
  start=$(date +%s)
  "$BIN" train --config "$OUT/$variant.toml" --init "$MODEL" --data "$TRAIN/images" \
    --epochs "$EPOCHS" --batch 8 --lr "$LR" --seed "$SEED" --checkpoint-every 0 \
    "${THREADS_FLAG[@]}" --out "$run" 2> "$run.log" || { echo "training failed: $run.log" >&2; exit 1; }
  secs=$(( $(date +%s) - start ))
  has=no
  [ "$variant" = with ] && has=yes
  rows+=("$(row "$variant the branch" "$run/final.safetensors" "${secs} s" "$has")")
done
echo "| model | AP@0.5 easy | medium | hard | AP@0.5:0.95 easy | medium | hard | landmark NME | mesh landmark NME | training time |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
