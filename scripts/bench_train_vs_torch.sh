#!/usr/bin/env bash
# Training throughput, side by side: `retinaface train` (real images, augmentation, matching,
# loss with OHEM, backward, SGD; the `images_per_s` of each step in metrics.jsonl, the first
# step of a run left out as warm-up) and PyTorch's training step of the same network
# (../shared/tools/ref/torch_train_bench.py: forward, multi-task loss, backward, SGD on
# synthetic targets). Same batch, size and thread count; the two alternate in rounds so both
# see the same machine. Prints both medians and ours / PyTorch.
#
# Usage: scripts/bench_train_vs_torch.sh [rounds]
# Env: NETWORK (mobilenet, or resnet50: configs/resnet50-port.toml against
#      scripts/torch_resnet50_step.py), PYTHON (with torch; default python3), BATCH (8),
#      SIZE (640), THREADS ("2 1"),
#      STEPS (steps per run, 6), BN (train|frozen, our BatchNorm; default train, as PyTorch
#      trains it), RETINAFACE (default target/release/retinaface), SHARED (../shared),
#      ISA (avx2: both sides held to AVX2 on an AVX-512 machine, to measure what an AVX2-only
#      machine gets with the same cores and caches — ours by RETINAFACE_SIMD=avx2 and a binary
#      built without gemm's AVX-512 kernels, given as RETINAFACE:
#        cargo build --release -p retinaface-cli --no-default-features --features train,serve \
#            --target-dir target/avx2
#      PyTorch by ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2, MKL_ENABLE_INSTRUCTIONS=AVX2).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
PYTHON=${PYTHON:-python3}
BATCH=${BATCH:-8}
SIZE=${SIZE:-640}
THREADS=${THREADS:-"2 1"}
STEPS=${STEPS:-6}
BN=${BN:-train}
BIN=${RETINAFACE:-target/release/retinaface}
SHARED=${SHARED:-../shared}
DATA=$SHARED/data/widerface/train/images
NETWORK=${NETWORK:-mobilenet}
ISA=${ISA:-native}
case $ISA in
  native) ;;
  avx2)
    if [ "$BIN" = target/release/retinaface ]; then
      echo "error: ISA=avx2 needs RETINAFACE set to a binary built without gemm-avx512 (see the header)" >&2
      exit 1
    fi
    export RETINAFACE_SIMD=avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ;;
  *) echo "error: ISA is native or avx2" >&2; exit 1 ;;
esac
case $NETWORK in
  mobilenet) CONFIG=(); TORCH_BENCH=$SHARED/tools/ref/torch_train_bench.py ;;
  resnet50) CONFIG=(--config configs/resnet50-port.toml); TORCH_BENCH=scripts/torch_resnet50_step.py ;;
  *) echo "error: NETWORK is mobilenet or resnet50" >&2; exit 1 ;;
esac

[ -x "$BIN" ] || cargo build --release -p retinaface-cli >&2
if ! "$PYTHON" -c 'import torch' 2>/dev/null; then
  echo "error: $PYTHON cannot import torch (pip install torch; set PYTHON)" >&2
  exit 1
fi

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for t in $THREADS; do
  for r in $(seq "$ROUNDS"); do
    rm -rf "$tmp/run"
    "$BIN" train "${CONFIG[@]}" --data "$DATA" --batch "$BATCH" --image-size "$SIZE" --epochs 1 \
      --max-steps $((STEPS + 1)) --threads "$t" --batch-norm "$BN" --checkpoint-every 0 \
      --out "$tmp/run" > /dev/null 2>&1
    # Steps after the first, one figure per line.
    python3 -c 'import json,sys
for i, l in enumerate(open(sys.argv[1])):
    if i: print(json.loads(l)["images_per_s"])' "$tmp/run/metrics.jsonl" >> "$tmp/ours_$t"
    OMP_NUM_THREADS=$t "$PYTHON" "$TORCH_BENCH" --threads "$t" --batch "$BATCH" --size "$SIZE" \
      --iters "$STEPS" | sed -n 's/.*= \([0-9.]*\) images\/s.*/\1/p' >> "$tmp/torch_$t"
  done
done

python3 - "$tmp" "$BATCH" "$SIZE" "$BN" "$NETWORK" "$ISA" $THREADS <<'PY'
import os, statistics, sys
d, batch, size, bn, net, isa, threads = *sys.argv[1:7], sys.argv[7:]
print(f"{net}, batch {batch} at {size}x{size}, our BatchNorm {bn}, instruction set {isa}; images/s, medians")
print(f"{'threads':>7} {'ours':>8} {'PyTorch':>8} {'ours/PyTorch':>13} {'our steps':>10} {'torch runs':>11}")
for t in threads:
    read = lambda n: [float(x) for x in open(os.path.join(d, f"{n}_{t}")).read().split()]
    ours, torch = read("ours"), read("torch")
    if not ours or not torch:
        print(f"{t:>7} missing figures (ours {len(ours)}, torch {len(torch)})")
        continue
    o, p = statistics.median(ours), statistics.median(torch)
    print(f"{t:>7} {o:8.2f} {p:8.2f} {o / p:13.2f} {len(ours):>10} {len(torch):>11}")
PY
