#!/usr/bin/env python3
"""Detect faces in every image of a folder with Ray Data, and write them to Parquet.

    python examples/ray_detect.py photos/ faces.parquet                 # a local Ray
    python examples/ray_detect.py s3://bucket/photos/ out/ --address auto   # a cluster

One row per image: `path`, `width`, `height`, `faces` (the count), `scores` (a list),
`boxes` (a list of [x1, y1, x2, y2]) and `landmarks` (a list of ten numbers per face: five
(x, y) pairs). Needs `pip install retinaface-rs[ray]`.
"""

import argparse
import time

import numpy as np
import ray
from retinaface_rs.ray import FaceDetector

IMAGE_EXTENSIONS = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"]


def to_rows(batch):
    """Plain lists instead of arrays, which every Parquet reader understands."""
    def lists(column, width=None):
        out = np.empty(len(column), dtype=object)
        shape = (-1,) if width is None else (-1, width)
        out[:] = [np.asarray(a, np.float32).reshape(shape).tolist() for a in column]
        return out

    return {
        "path": batch["path"],
        "height": np.array([im.shape[0] for im in batch["image"]], np.int32),
        "width": np.array([im.shape[1] for im in batch["image"]], np.int32),
        "faces": np.array([len(s) for s in batch["scores"]], np.int32),
        "scores": lists(batch["scores"]),
        "boxes": lists(batch["boxes"], 4),
        "landmarks": lists(batch["landmarks"], 10),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", help="a folder (local, s3://, gs://, …) or a file of images")
    ap.add_argument("out", help="the Parquet output (a folder of files)")
    ap.add_argument("--address", help="a Ray cluster to join (`auto`, or host:port); "
                    "default: start a local one")
    ap.add_argument("--actors", type=int, help="detector actors (default: the cluster's CPUs "
                    "divided by --cpus-per-actor, less one actor's worth for reading)")
    ap.add_argument("--cpus-per-actor", type=float, default=1,
                    help="CPUs of each actor; its detector uses as many threads")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--model", help="a weights file (default: the embedded model)")
    a = ap.parse_args()

    ray.init(address=a.address)
    cpus = ray.cluster_resources().get("CPU", 1)
    actors = a.actors or max(1, int(cpus // a.cpus_per_actor) - 1)
    start = time.perf_counter()
    ds = ray.data.read_images(a.images, include_paths=True, mode="RGB",
                              file_extensions=IMAGE_EXTENSIONS)
    ds = ds.map_batches(
        FaceDetector,
        fn_constructor_kwargs={"threshold": a.threshold, "model": a.model},
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=a.batch_size,
        num_cpus=a.cpus_per_actor,
    )
    ds.map_batches(to_rows, batch_size=a.batch_size).write_parquet(a.out)
    seconds = time.perf_counter() - start
    written = ray.data.read_parquet(a.out)
    images = written.count()
    faces = written.sum("faces") if images else 0
    print(f"{images} image(s), {faces} face(s), {seconds:.1f} s with {actors} actor(s) "
          f"of {a.cpus_per_actor:g} CPU: {a.out}")


if __name__ == "__main__":
    main()
