#!/usr/bin/env bash
# Video anonymisation side by side with `deface` (pip install deface): frames/s of each tool on
# the same 1280×720 clip with the same threads, and each tool's face recall on sampled frames
# (the share of faces our detector finds above 0.5 in the original frames and no longer finds
# in the anonymised ones). Each tool runs at its defaults.
#
#   scripts/bench_anonymize.sh [SECONDS] [THREADS]     (PYTHON and DEFACE may name the tools)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-4}
threads=${2:-2}
bin=./target/release/retinaface
deface=${DEFACE:-deface}
py=${PYTHON:-python3}
[ -x "$bin" ] || cargo build --release -p retinaface-cli
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A slow pan and zoom over the group photo, 25 fps, with a tone.
ffmpeg -v error -y -loop 1 -i ../shared/data/photos/t1.jpg -f lavfi -i "sine=frequency=440:duration=$secs" \
    -filter_complex "[0:v]scale=1920:-2,zoompan=z='1.2+0.002*on':x='(iw-iw/zoom)*on/($secs*25)':y='ih/2-(ih/zoom/2)':d=$((secs * 25)):s=1280x720:fps=25[v]" \
    -map "[v]" -map 1:a -t "$secs" -c:v libx264 -pix_fmt yuv420p -c:a aac "$work/clip.mp4"
frames=$((secs * 25))

t0=$(date +%s.%N)
"$bin" anonymize "$work/clip.mp4" --out "$work/ours" --threads "$threads" 2>/dev/null
t1=$(date +%s.%N)
OMP_NUM_THREADS=$threads "$deface" "$work/clip.mp4" -o "$work/deface.mp4" >/dev/null 2>&1
t2=$(date +%s.%N)

sample() { mkdir -p "$2"; ffmpeg -v error -i "$1" -vf "select=not(mod(n\,10))" -fps_mode passthrough "$2/f%03d.png"; }
sample "$work/clip.mp4" "$work/s_orig"
sample "$work/ours/clip.mp4" "$work/s_ours"
sample "$work/deface.mp4" "$work/s_deface"
for d in s_orig s_ours s_deface; do "$bin" detect "$work/$d" --json "$work/$d.json" 2>/dev/null; done

"$py" - "$work" "$frames" "$t0" "$t1" "$t2" "$threads" <<'PY'
import json, sys
work, frames, t0, t1, t2, threads = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:6]), sys.argv[6]
def load(n): return {r['image']: [f['box'] for f in r['faces']] for r in json.load(open(f'{work}/{n}.json'))}
def iou(a, b):
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0])); ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    u = (a[2]-a[0])*(a[3]-a[1]) + (b[2]-b[0])*(b[3]-b[1]) - iw*ih
    return iw*ih/u if u > 0 else 0
orig = load('s_orig'); total = sum(len(v) for v in orig.values())
print(f'clip 1280x720, {frames} frames at 25 fps, {threads} threads; {total} faces in {len(orig)} sampled frames')
for name, secs in (('ours', t1 - t0), ('deface', t2 - t1)):
    out = load('s_' + name)
    hidden = sum(1 for k, fs in orig.items() for f in fs if not any(iou(f, g) > 0.5 for g in out.get(k, [])))
    print(f'{name:7s} {frames / secs:7.1f} frames/s   recall {hidden / total:.3f}')
print(f'speed ratio ours/deface: {(t2 - t1) / (t1 - t0):.2f}x')
PY
