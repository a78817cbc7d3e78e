#!/usr/bin/env python3
"""Draw the meshes of `retinaface detect --mesh --mesh-colors --json` on a blank canvas.

Each face's camera-facing triangles are filled with the mean albedo of their corners (far
ones first) and outlined, and its box is drawn, at the photo's pixel positions but without
the photo: the picture shows what the branch predicts and nobody's likeness.

Usage: scripts/mesh_picture.py FACES.json OUT.png [--topology OBJ] [--crop]
Needs Pillow (pip install pillow).
"""

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw

TOPOLOGY = Path(__file__).resolve().parent.parent / "crates/retinaface/models/mesh/canonical_face_model.obj"


def triangles(obj_path):
    tris = []
    for line in Path(obj_path).read_text().splitlines():
        if line.startswith("f "):
            tris.append([int(p.split("/")[0]) - 1 for p in line.split()[1:4]])
    return tris


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("faces", help="the JSON of detect --mesh --mesh-colors (one photo)")
    ap.add_argument("out", help="PNG to write")
    ap.add_argument("--topology", default=str(TOPOLOGY))
    ap.add_argument("--crop", action="store_true", help="crop to the faces, with a margin")
    args = ap.parse_args()
    record = json.loads(Path(args.faces).read_text())[0]
    faces = [f for f in record["faces"] if "mesh" in f]
    if not faces:
        raise SystemExit("no face with a mesh in " + args.faces)
    tris = triangles(args.topology)
    canvas = Image.new("RGB", (record["width"], record["height"]), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for face in faces:
        v = face["mesh"]["vertices"]
        colours = face.get("mesh_colors") or [[0.7, 0.7, 0.7]] * len(v)
        front = []
        for t in tris:
            a, b, c = (v[i] for i in t)
            # Counter-clockwise from the front in the model: clockwise on screen (y down).
            area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
            if area < 0:
                depth = (a[2] + b[2] + c[2]) / 3
                front.append((depth, t))
        for _, t in sorted(front, key=lambda d: -d[0]):
            rgb = tuple(int(255 * sum(colours[i][k] for i in t) / 3) for k in range(3))
            draw.polygon([tuple(v[i][:2]) for i in t], fill=rgb, outline=(40, 40, 40))
        x1, y1, x2, y2 = face["box"]
        draw.rectangle([x1, y1, x2, y2], outline=(0, 160, 0), width=2)
    if args.crop:
        boxes = [f["box"] for f in faces]
        margin = 20
        left = max(0, int(min(b[0] for b in boxes)) - margin)
        top = max(0, int(min(b[1] for b in boxes)) - margin)
        right = min(canvas.width, int(max(b[2] for b in boxes)) + margin)
        bottom = min(canvas.height, int(max(b[3] for b in boxes)) + margin)
        canvas = canvas.crop((left, top, right, bottom))
    canvas.save(args.out)
    print(f"{len(faces)} mesh(es): {args.out}")


if __name__ == "__main__":
    main()
