"""The GIL is released while detecting: Python threads sharing one Detector run at once."""

import threading
import time

import numpy as np
import retinaface_rs as rf
from conftest import T1
from PIL import Image

CALLS = 6


def run_threads(detector, image, threads):
    """Run CALLS detections in each of `threads` threads; (wall seconds, call intervals)."""
    intervals = []
    lock = threading.Lock()
    results = []

    def work():
        for _ in range(CALLS):
            start = time.perf_counter()
            faces = detector.detect(image)
            end = time.perf_counter()
            with lock:
                intervals.append((start, end))
                results.append(faces.boxes)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - start, intervals, results


def overlap(intervals):
    """Seconds during which at least two calls were running."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running, last, both = 0, None, 0.0
    for t, step in events:
        if running >= 2:
            both += t - last
        running += step
        last = t
    return both


def test_two_threads_run_in_parallel():
    # One core per call, so two calls at once can use the two cores of a small machine.
    detector = rf.Detector(threads=1)
    image = np.asarray(Image.open(T1).convert("RGB"))
    detector.detect(image)  # warm: buffers allocated
    serial, _, _ = run_threads(detector, image, 1)
    serial *= 2  # the same work as the two threads below, one call after the other
    parallel, intervals, results = run_threads(detector, image, 2)
    reference = detector.detect(image).boxes
    assert all(np.array_equal(r, reference) for r in results)
    busy = sum(e - s for s, e in intervals)
    # With the GIL held the calls would take turns: no two would ever overlap.
    assert overlap(intervals) > 0.5 * busy / 2, (overlap(intervals), busy)
    message = f"two threads {parallel:.2f} s, one after the other {serial:.2f} s"
    assert parallel < 0.8 * serial, message


def test_batch_matches_single_calls():
    detector = rf.Detector()
    image = np.asarray(Image.open(T1).convert("RGB"))
    batch = detector.detect_batch([image, T1, image[:, ::-1]])
    assert [len(f) for f in batch] == [6, 6, 6]
    np.testing.assert_array_equal(batch[0].boxes, detector.detect(image).boxes)
    np.testing.assert_array_equal(batch[2].boxes, detector.detect(image[:, ::-1]).boxes)
