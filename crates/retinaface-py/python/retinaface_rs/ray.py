"""Ray Data: detect faces in a dataset of images with an actor pool.

    import ray
    from retinaface_rs.ray import FaceDetector

    ds = ray.data.read_images("s3://bucket/photos/", include_paths=True, mode="RGB")
    ds = ds.map_batches(
        FaceDetector,
        fn_constructor_kwargs={"threshold": 0.5},
        compute=ray.data.ActorPoolStrategy(size=8),
        batch_size=16,
        num_cpus=2,
    )

Each actor loads the model once (the embedded one by default, nothing is downloaded) and
detects the images of a batch in parallel on the CPUs Ray gave it. The batch's columns pass
through unchanged; `boxes` (N, 4), `scores` (N,) and `landmarks` (N, 5, 2) float32 arrays are
added per row (`landmarks` is NaN for a model without a landmark head).
"""

import numpy as np

from ._native import Detector

__all__ = ["FaceDetector"]


def _assigned_cpus():
    """The CPUs Ray assigned to this actor (1 when unknown)."""
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        return max(1, int(round(cpus)))
    except Exception:  # not in a Ray worker
        return 1


def _column(values):
    """A column of per-row arrays of varying length, as Ray stores them."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


class FaceDetector:
    """A callable class for `Dataset.map_batches`: reads the `image` column (uint8 RGB
    arrays, or paths or bytes), adds `boxes`, `scores` and `landmarks`.

    Constructor arguments are `Detector`'s (pass them with `fn_constructor_kwargs`) plus
    `column`, the image column's name. `threads=None` uses the CPUs the actor was given.
    """

    def __init__(self, model=None, threshold=0.5, nms=0.4, threads=None, tta=False,
                 max_side=2000, column="image"):
        self.column = column
        self.detector = Detector(
            model=model, threshold=threshold, nms=nms, tta=tta, max_side=max_side,
            threads=threads or _assigned_cpus(),
        )

    def __call__(self, batch):
        images = batch[self.column]
        # Same-size images arrive as one (B, H, W, 3) array; others as a column of arrays.
        results = self.detector.detect_batch(list(images))
        landmarks = []
        for faces in results:
            lm = faces.landmarks
            if lm is None:
                lm = np.full((len(faces), 5, 2), np.nan, np.float32)
            landmarks.append(lm)
        columns = {
            "boxes": _column([f.boxes for f in results]),
            "scores": _column([f.scores for f in results]),
            "landmarks": _column(landmarks),
        }
        if hasattr(batch, "assign"):  # batch_format="pandas"
            return batch.assign(**{k: list(v) for k, v in columns.items()})
        return {**batch, **columns}
