#!/usr/bin/env bash
# Load, overload and soak of `retinaface serve`, beside `retinaface detect` on a folder, on the
# same machine in one run:
#   1. `detect` on a folder of 200 copies of a 640×480 JPEG (its throughput mode): images/s,
#      the median of 3 runs;
#   2. the server with default settings, `hey` for DURATION at concurrency 1, 8 and 64 against
#      /v1/detect with that JPEG: successful (200) requests/s, p50 and p99 latency, and the
#      ratio of the 200s per second to the folder's images/s;
#   3. overload: `--queue 4`, concurrency 128: how many 503s, and the server's largest
#      resident memory over the run (sampled every 0.2 s);
#   4. soak: 20,000 requests mixing good JPEGs, undecodable bodies and bodies over
#      --max-body; resident memory after the first 1,000 and at the end, the server's count of
#      answers against the requests sent, and /readyz afterwards.
#      The oversized bodies go without keep-alive: the server refuses them from their declared
#      length without reading them and closes the connection, so a client that reused it
#      would lose its next request before the server saw it.
# Usage: scripts/bench_serve.sh [load] [overload] [soak]   (default: all three; the folder run
#        always comes first)   env: BIN, DURATION=60s, PORT=18181, OUT=runs/bench_serve
# Needs `hey`, `ffmpeg` and `curl` (Debian packages; installed when missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/retinaface}
DURATION=${DURATION:-60s}
PORT=${PORT:-18181}
OUT=${OUT:-runs/bench_serve}
SHARED=${SHARED:-../shared}
URL=http://127.0.0.1:$PORT
PARTS=" ${*:-load overload soak} "

[ -x "$BIN" ] || { echo "build first: cargo build --release -p retinaface-cli" >&2; exit 1; }
for tool in hey ffmpeg curl; do
    if ! command -v $tool >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $tool >/dev/null
    fi
done
mkdir -p "$OUT/folder"
photo=$OUT/photo.jpg
ffmpeg -loglevel error -y -i "$SHARED/data/photos/t1.jpg" -vf scale=640:480 -q:v 3 "$photo"
for k in $(seq 1 200); do cp "$photo" "$OUT/folder/$k.jpg"; done
head -c 20000 /dev/urandom > "$OUT/bad.bin"
head -c 3000000 /dev/urandom > "$OUT/oversized.bin"

echo "== detect on a folder of 200 copies"
rates=()
for run in 1 2 3; do
    start=$(date +%s.%N)
    "$BIN" detect "$OUT/folder" --json "$OUT/folder.json" 2>/dev/null
    end=$(date +%s.%N)
    rates+=("$(python3 -c "print(200 / ($end - $start))")")
done
folder=$(printf '%s\n' "${rates[@]}" | sort -g | sed -n 2p)
echo "folder: ${rates[*]} images/s, median $folder"

server_pid=
start_server() {
    "$BIN" serve --addr "127.0.0.1:$PORT" "$@" 2> "$OUT/server.log" &
    server_pid=$!
    for _ in $(seq 1 100); do
        grep -q "listening on" "$OUT/server.log" && return 0
        sleep 0.1
    done
    echo "the server did not start" >&2; cat "$OUT/server.log" >&2; exit 1
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" || true; }
rss_mb() { awk '/VmRSS/ { print $2 / 1024 }' "/proc/$server_pid/status"; }
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true' EXIT

# `hey`'s report → "ok/s p50_ms p99_ms n200 n503".
summarise() {
    python3 - "$1" "$2" <<'EOF'
import re, sys
text, seconds = open(sys.argv[1]).read(), float(sys.argv[2].rstrip("s"))
codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", text)}
lat = {p: float(v) * 1000 for p, v in re.findall(r"(\d+)%+ in ([\d.]+) secs", text)}
print(f"{codes.get(200, 0) / seconds:.2f} {lat.get('50', float('nan')):.1f} "
      f"{lat.get('99', float('nan')):.1f} {codes.get(200, 0)} {codes.get(503, 0)}")
EOF
}

if [[ $PARTS == *" load "* ]]; then
echo "== the server, default settings"
start_server
printf '| concurrency | 200/s | p50 ms | p99 ms | 200s | ratio to the folder |\n| --- | --- | --- | --- | --- | --- |\n' > "$OUT/load.md"
for c in 1 8 64; do
    hey -z "$DURATION" -c "$c" -m POST -T image/jpeg -D "$photo" "$URL/v1/detect" > "$OUT/hey_c$c.txt"
    read -r ok p50 p99 n200 _ < <(summarise "$OUT/hey_c$c.txt" "$DURATION")
    ratio=$(python3 -c "print(f'{$ok / $folder:.2f}')")
    echo "| $c | $ok | $p50 | $p99 | $n200 | $ratio |" | tee -a "$OUT/load.md"
done
stop_server
fi

if [[ $PARTS == *" overload "* ]]; then
echo "== overload: --queue 4, concurrency 128"
start_server --queue 4
( while kill -0 "$server_pid" 2>/dev/null; do rss_mb; sleep 0.2; done ) > "$OUT/rss.txt" &
sampler=$!
hey -z "$DURATION" -c 128 -m POST -T image/jpeg -D "$photo" "$URL/v1/detect" > "$OUT/hey_overload.txt"
read -r ok p50 p99 n200 n503 < <(summarise "$OUT/hey_overload.txt" "$DURATION")
stop_server
wait "$sampler" || true
max_rss=$(sort -g "$OUT/rss.txt" | tail -n 1)
echo "overload: $ok 200/s, $n200 answered 200, $n503 answered 503, largest RSS $max_rss MB" | tee "$OUT/overload.md"
fi

if [[ $PARTS == *" soak "* ]]; then
echo "== soak: 20,000 requests"
start_server --max-body 2MB
hey -n 1000 -c 8 -m POST -T image/jpeg -D "$photo" "$URL/v1/detect" > /dev/null
rss_first=$(rss_mb)
hey -n 13000 -c 8 -m POST -T image/jpeg -D "$photo" "$URL/v1/detect" > "$OUT/soak_good.txt" &
good=$!
hey -n 3000 -c 4 -m POST -T image/jpeg -D "$OUT/bad.bin" "$URL/v1/detect" > "$OUT/soak_bad.txt" &
bad=$!
hey -n 3000 -c 4 -disable-keepalive -m POST -T image/jpeg -D "$OUT/oversized.bin" "$URL/v1/detect" > "$OUT/soak_big.txt" &
big=$!
wait "$good" "$bad" "$big"
rss_last=$(rss_mb)
curl -s "$URL/metrics" > "$OUT/soak_metrics.txt"
ready=$(curl -s -o /dev/null -w '%{http_code}' "$URL/readyz")
stop_server
python3 - "$rss_first" "$rss_last" "$ready" "$OUT" <<'EOF' | tee "$OUT/soak.md"
import re, sys
first, last, ready, out = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
metrics = open(f"{out}/soak_metrics.txt").read()
server = {int(s): int(n) for s, n in
          re.findall(r'retinaface_requests_total\{route="/v1/detect",status="(\d+)"\} (\d+)', metrics)}
client = {}
errors = 0
for name in ("soak_good", "soak_bad", "soak_big"):
    text = open(f"{out}/{name}.txt").read()
    for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", text):
        client[int(c)] = client.get(int(c), 0) + int(n)
    errors += sum(int(n) for n in re.findall(r"\[(\d+)\]\s+(?:Post|Get)", text))
client[200] = client.get(200, 0) + 1000  # the first 1,000
print(f"soak: RSS {first:.0f} MB after 1,000 requests, {last:.0f} MB after 20,000 "
      f"({(last / first - 1) * 100:+.1f} %); answered by the server: {sum(server.values())} "
      f"of 20000 {dict(sorted(server.items()))}; received by the client: "
      f"{dict(sorted(client.items()))} and {errors} connection errors; /readyz {ready}")
EOF
fi
