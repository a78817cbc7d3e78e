#!/usr/bin/env bash
# DF²S²'s ablation on the data we have: three networks trained with the same budget (epochs,
# image size, batch, seed, backbone initialisation) on the 581 training images, each with its
# own recipe — its learning rate, and its decay points scaled from the recipe's own epochs to
# the budget's — then evaluated on the 145 validation images (AP at IoU 0.5 and the WIDER
# Face Challenge mAP over 0.5:0.95):
#   retinaface     RetinaFace light, the port's pyramid (configs/mobilenet0.25-scratch-320.toml)
#   df2s2-noseg    DF²S² light without the segmentation branch (λ2 = 0)
#   df2s2          DF²S² light with it (λ2 = 1)
#
# Usage: scripts/ablation_df2s2.sh [row ...]       (default: all three, in that order)
# Env: BIN (default target/release/retinaface), OUT (runs/ablation), EPOCHS (20), SIZE (320),
#      BATCH (8), SEED (0), BACKBONE (a weights file for --init-backbone; default: scratch),
#      THREADS (default: every core).
# A row that stopped part-way (killed, machine restarted) resumes from its last checkpoint;
# a finished row is only evaluated again. Results: $OUT/<row>/eval.json and $OUT/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/retinaface}
OUT=${OUT:-runs/ablation}
EPOCHS=${EPOCHS:-20}
SIZE=${SIZE:-320}
BATCH=${BATCH:-8}
SEED=${SEED:-0}
BACKBONE=${BACKBONE:-}
SHARED=${SHARED:-../shared}
TRAIN=$SHARED/data/widerface/train
VAL=$SHARED/data/widerface/val
ROWS=("$@")
[ ${#ROWS[@]} -gt 0 ] || ROWS=(retinaface df2s2-noseg df2s2)

[ -x "$BIN" ] || { echo "build first: cargo build --release -p retinaface-cli" >&2; exit 1; }
mkdir -p "$OUT"
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")

# The row's config, written into $OUT with its decay epochs scaled to $EPOCHS.
config_of() {
    local src lambda=""
    case "$1" in
        retinaface) src=configs/mobilenet0.25-scratch-320.toml ;;
        df2s2-noseg) src=configs/df2s2-mobilenet0.25.toml; lambda=0.0 ;;
        df2s2) src=configs/df2s2-mobilenet0.25.toml ;;
        *) echo "unknown row $1 (retinaface, df2s2-noseg, df2s2)" >&2; exit 2 ;;
    esac
    python3 - "$src" "$OUT/$1.toml" "$EPOCHS" "$lambda" <<'EOF'
import re, sys
src, dst, epochs, seg = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
text = open(src).read()
own = int(re.search(r"^epochs = (\d+)", text, re.M).group(1))
decays = [int(d) for d in re.findall(r"\d+", re.search(r"^decay_epochs = \[(.*)\]", text, re.M).group(1))]
scaled = [round(d * epochs / own) for d in decays]
text = re.sub(r"^decay_epochs = .*$", f"decay_epochs = {scaled}", text, flags=re.M)
if seg:
    text, n = re.subn(r"^segmentation_weight = .*$", f"segmentation_weight = {seg}", text, flags=re.M)
    assert n == 1, "no segmentation_weight to set"
open(dst, "w").write(text)
print(f"{dst}: decay epochs {decays} of {own} -> {scaled} of {epochs}", file=sys.stderr)
EOF
    echo "$OUT/$1.toml"
}

for row in "${ROWS[@]}"; do
    dir=$OUT/$row
    config=$(config_of "$row")
    if [ -f "$dir/final.safetensors" ] && [ -f "$dir/done" ]; then
        echo "== $row: trained"
    elif [ -d "$dir/checkpoints" ]; then
        echo "== $row: resuming"
        "$BIN" train --resume --out "$dir" "${threads[@]}"
        touch "$dir/done"
    else
        echo "== $row: training ($config)"
        init=(--init scratch)
        [ -n "$BACKBONE" ] && init+=(--init-backbone "$BACKBONE")
        "$BIN" train --config "$config" --data "$TRAIN/images" --labels "$TRAIN/label.txt" \
            "${init[@]}" --epochs "$EPOCHS" --image-size "$SIZE" --batch "$BATCH" \
            --seed "$SEED" --checkpoint-every 50 --out "$dir" "${threads[@]}"
        touch "$dir/done"
    fi
    "$BIN" eval widerface --images "$VAL/images" --gt "$VAL/ground_truth" \
        --model "$dir/final.safetensors" --iou 0.5:0.95 --json "${threads[@]}" > "$dir/eval.json"
    echo "$row: $(cat "$dir/eval.json")"
done

{
    echo "| row | AP easy | AP medium | AP hard | mAP easy | mAP medium | mAP hard | minutes |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
    for row in retinaface df2s2-noseg df2s2; do
        [ -f "$OUT/$row/eval.json" ] || continue
        python3 - "$OUT/$row" "$row" <<'EOF'
import json, sys
d, row = sys.argv[1], sys.argv[2]
e = json.load(open(f"{d}/eval.json"))
# A resumed run logs again the steps after its last checkpoint: the last line of each step.
steps = {s["step"]: s for s in map(json.loads, open(f"{d}/metrics.jsonl"))}.values()
minutes = sum(s["images"] / s["images_per_s"] for s in steps if s["images_per_s"] > 0) / 60
at = [e[s]["per_iou"]["0.50"] for s in ("easy", "medium", "hard")]
m = [e[s]["ap"] for s in ("easy", "medium", "hard")]
print(f"| {row} | " + " | ".join(f"{v:.4f}" for v in at + m) + f" | {minutes:.0f} |")
EOF
    done
    echo
    echo "Mean training loss per epoch (total; classification in brackets):"
    echo
    python3 - "$OUT" "$EPOCHS" <<'EOF'
import json, os, sys
out, epochs_run = sys.argv[1], int(sys.argv[2])
rows = [r for r in ("retinaface", "df2s2-noseg", "df2s2") if os.path.exists(f"{out}/{r}/metrics.jsonl")]
curves = {}
for r in rows:
    steps = {s["step"]: s for s in map(json.loads, open(f"{out}/{r}/metrics.jsonl"))}.values()
    by_epoch = {}
    for s in steps:
        # From the step's index: the logged epoch is the one after the step.
        by_epoch.setdefault((s["step"] - 1) * epochs_run // s["steps"], []).append(s)
    curves[r] = {e: (sum(x["loss"] for x in v) / len(v), sum(x["class"] for x in v) / len(v))
                 for e, v in by_epoch.items()}
epochs = sorted({e for c in curves.values() for e in c})
print("| epoch | " + " | ".join(rows) + " |")
print("| --- |" + " --- |" * len(rows))
for e in epochs:
    cells = [f"{curves[r][e][0]:.3f} ({curves[r][e][1]:.3f})" if e in curves[r] else "" for r in rows]
    print(f"| {e + 1} | " + " | ".join(cells) + " |")
EOF
} > "$OUT/summary.md"
cat "$OUT/summary.md"
