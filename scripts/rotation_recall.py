#!/usr/bin/env python3
"""Recall on turned frames, with and without `--rotations` (anonymize's option, also on
`detect`): the WIDER FACE validation images of ../shared and the group photo, each turned by
0°, 90°, 180° and 270° with its ground truth turned alike. Counted: the faces of at least 16 px
that the detector finds upright (the reachable ones), found at IoU ≥ 0.5 above anonymize's
threshold 0.3.

    python3 scripts/rotation_recall.py [--images N]

Needs Pillow and a release build (`cargo build --release -p retinaface-cli`).
"""
import argparse, os, sys, tempfile
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from highres_policy import SHARED, detect, match, wider_gt  # noqa: E402


def turn_box(b, w, h, deg):
    x1, y1, x2, y2 = b
    if deg == 0:
        return b
    if deg == 90:  # PIL's ROTATE_270 turns the picture 90° clockwise: (x, y) -> (h - y, x)
        return [h - y2, x1, h - y1, x2]
    if deg == 180:
        return [w - x2, h - y2, w - x1, h - y1]
    return [y1, w - x2, y2, w - x1]  # 270° clockwise: (x, y) -> (y, w - x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=60)
    a = ap.parse_args()
    gt = wider_gt()
    images_dir = os.path.join(SHARED, "widerface", "val", "images")
    originals = []
    for event in sorted(os.listdir(images_dir)):
        for f in sorted(os.listdir(os.path.join(images_dir, event))):
            if f"{event}/{f}" in gt:
                originals.append((os.path.join(images_dir, event, f), gt[f"{event}/{f}"]))
    originals = originals[: a.images]
    t1 = os.path.join(SHARED, "photos", "t1.jpg")
    originals.append((t1, detect([t1], [])[t1]))
    upright = detect([p for p, _ in originals], ["--threshold", "0.3"])
    work = tempfile.mkdtemp()
    cases = {0: [], 90: [], 180: [], 270: []}
    for k, (p, boxes) in enumerate(originals):
        img = Image.open(p).convert("RGB")
        w, h = img.size
        _, found = match(upright[p], boxes)
        reach = [boxes[i] for i in found if boxes[i][2] - boxes[i][0] >= 16]
        for deg, op in [(0, None), (90, Image.ROTATE_270), (180, Image.ROTATE_180), (270, Image.ROTATE_90)]:
            out = os.path.join(work, f"{k}_{deg}.png")
            (img if op is None else img.transpose(op)).save(out, compress_level=1)
            cases[deg].append((out, [turn_box(b, w, h, deg) for b in reach]))
    print("| frame turned by | faces | recall, one pass | recall, `--rotations` |")
    print("|---|---|---|---|")
    for deg, items in cases.items():
        paths = [p for p, _ in items]
        row = []
        for extra in ([], ["--rotations"]):
            res = detect(paths, ["--threshold", "0.3", *extra])
            hit = sum(len(match(res[p], g)[1]) for p, g in items)
            row.append(hit)
        total = sum(len(g) for _, g in items)
        print(f"| {deg}° | {total} | {row[0] / total:.3f} | {row[1] / total:.3f} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
