#!/usr/bin/env bash
# The long fuzz campaign (outside CI): every target in turn until it has run RUNS executions
# (default 1,200,000), restarting after each finding. Corpora grow in fuzz/corpus/<target>,
# findings land in fuzz/artifacts/<target>/, and one line per run is appended to
# fuzz/campaign.log: target, executions, coverage, features, exit status.
# Build first: RUSTC_BOOTSTRAP=1 cargo fuzz build -s none
set -uo pipefail
cd "$(dirname "$0")"
RUNS=${RUNS:-1200000}
BIN=../target/x86_64-unknown-linux-gnu/release
TARGETS=${*:-image onnx torch_legacy torch_zip safetensors mat wider_predictions wider_ground_truth labels train_config checkpoint request}
# The PyTorch targets start from the port's checkpoints in ../shared (weights are not kept in
# the repository); libFuzzer's -max_len keeps their first 64 KiB.
SHARED_PTH=../../shared/models/retinaface
for t in $TARGETS; do
    mkdir -p "corpus/$t" "artifacts/$t" "seeds/$t"
    case "$t" in
        torch_legacy) cp -n "$SHARED_PTH"/*_legacy.pth "seeds/$t/" 2>/dev/null || true ;;
        torch_zip) cp -n "$SHARED_PTH"/*_zip.pth "seeds/$t/" 2>/dev/null || true ;;
    esac
    done_runs=0
    while [ "$done_runs" -lt "$RUNS" ]; do
        left=$((RUNS - done_runs))
        log=$(mktemp)
        "$BIN/$t" "corpus/$t" "seeds/$t" -runs="$left" -max_len=65536 -timeout=20 \
            -rss_limit_mb=3000 -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$log" 2>&1
        status=$?
        n=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
        ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
        n=${n:-0}
        echo "$t runs=$n cov=${cov:-?} ft=${ft:-?} status=$status" >>campaign.log
        if [ "$status" -ne 0 ]; then
            cp "$log" "artifacts/$t/log-$(date +%s).txt"
        fi
        rm -f "$log"
        done_runs=$((done_runs + n))
        # A target that cannot run at all must not loop forever.
        if [ "$n" -eq 0 ]; then
            echo "$t: no execution counted, stopping this target" >>campaign.log
            break
        fi
    done
done
