#!/usr/bin/env python3
"""The large-photo policy, measured: false detections and recall of `detect` on high-resolution
photos at several `--max-side` values (and `full`, one pass at full resolution).

The photos are the WIDER FACE validation images of ../shared upscaled ×3 and ×4 (Lanczos), with
their ground truth scaled alike, and the group and portrait photos of ../shared upscaled ×3 and
×6 with, as ground truth, the faces `detect` finds in the originals (threshold 0.5), scaled. A
detection above 0.5 is a true positive if it matches a ground-truth face at IoU ≥ 0.5 (each
face matched once); recall counts the faces of at least 16 px (in the original photo) that are
found, of those that a detector at the original size finds.

    python3 scripts/highres_policy.py [--images N] [--sides 2000,2560,3200,full]

Needs Pillow and a release build (`cargo build --release -p retinaface-cli`).
"""
import argparse, json, os, subprocess, sys, tempfile
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")
BIN = os.path.join(ROOT, "target", "release", "retinaface")


def wider_gt():
    path = os.path.join(SHARED, "widerface", "val", "wider_face_val_bbx_gt.txt")
    lines = open(path).read().split("\n")
    gt, i = {}, 0
    while i < len(lines) and lines[i].strip():
        name = lines[i].strip()
        n = int(lines[i + 1])
        boxes = []
        for k in range(max(n, 1)):
            v = lines[i + 2 + k].split()
            if n:
                x, y, w, h = map(float, v[:4])
                if w > 0 and h > 0:
                    boxes.append([x, y, x + w, y + h])
        gt[name] = boxes
        i += 2 + max(n, 1)
    return gt


def detect(paths, extra):
    out = subprocess.run([BIN, "detect", *paths, "--json", "-", *extra],
                         capture_output=True, check=True).stdout
    return {r["image"]: [f["box"] for f in r["faces"]] for r in json.loads(out)}


def iou(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def match(dets, gts):
    used, tp = set(), 0
    for d in dets:
        best, bi = 0.0, None
        for i, g in enumerate(gts):
            if i not in used:
                v = iou(d, g)
                if v > best:
                    best, bi = v, i
        if best >= 0.5:
            used.add(bi)
            tp += 1
    return tp, used


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--sides", default="2000,2560,3200,full")
    a = ap.parse_args()
    gt = wider_gt()
    work = tempfile.mkdtemp()
    images_dir = os.path.join(SHARED, "widerface", "val", "images")
    originals = []
    for event in sorted(os.listdir(images_dir)):
        for f in sorted(os.listdir(os.path.join(images_dir, event))):
            key = f"{event}/{f}"
            if key in gt:
                originals.append((os.path.join(images_dir, event, f), gt[key]))
    originals = originals[: a.images]
    photos = [os.path.join(SHARED, "photos", p) for p in sorted(os.listdir(os.path.join(SHARED, "photos")))]
    base = detect(photos, [])
    for p in photos:
        originals.append((p, base[p]))
    # Faces the detector finds at the original size: the reachable part of the ground truth.
    found_at_1 = detect([p for p, _ in originals], ["--max-side", "full"])
    cases = []  # (path, scale, gt boxes scaled, reachable gt indices)
    for k, (p, boxes) in enumerate(originals):
        img = Image.open(p).convert("RGB")
        _, reachable = match(found_at_1[p], boxes)
        reachable = {i for i in reachable if boxes[i][2] - boxes[i][0] >= 16}
        for s in (3, 4) if "widerface" in p else (3, 6):
            out = os.path.join(work, f"{k}_x{s}.png")
            img.resize((img.width * s, img.height * s), Image.LANCZOS).save(out, compress_level=1)
            cases.append((out, s, [[v * s for v in b] for b in boxes], reachable))
    print(f"{len(cases)} photos, long sides {min(max(Image.open(c[0]).size) for c in cases)}"
          f"–{max(max(Image.open(c[0]).size) for c in cases)} px")
    print("| --max-side | detections | false | false per photo | recall (reachable faces ≥ 16 px) |")
    print("|---|---|---|---|---|")
    for side in a.sides.split(","):
        res = detect([c[0] for c in cases], ["--max-side", side])
        dets = fp = hit = total = 0
        for path, _, boxes, reachable in cases:
            d = res[path]
            tp, used = match(d, boxes)
            dets += len(d)
            fp += len(d) - tp
            hit += len(used & reachable)
            total += len(reachable)
        print(f"| {side} | {dets} | {fp} | {fp / len(cases):.2f} | {hit}/{total} = {hit / max(total, 1):.3f} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
