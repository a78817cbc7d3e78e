"""The Ray Data UDF on a local cluster: every image comes back once, with the CLI's faces."""

import os
from pathlib import Path

import numpy as np
import pytest
import ray
from conftest import assert_same_faces, val_images


@pytest.fixture(scope="module")
def cluster():
    # A throwaway local cluster: no token authentication, no dashboard.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_map_batches_returns_every_image_once_with_the_cli_faces(cluster, cli_json, data):
    from retinaface_rs.ray import FaceDetector

    paths = val_images()[:36]
    ds = ray.data.read_images([str(p) for p in paths], include_paths=True, mode="RGB")
    ds = ds.map_batches(
        FaceDetector,
        compute=ray.data.ActorPoolStrategy(size=2),
        batch_size=5,
        # Half a CPU each: with both of the cluster's CPUs held by actors, the read tasks
        # that feed them could never be scheduled.
        num_cpus=0.5,
    )
    rows = ds.take_all()
    names = sorted(Path(r["path"]).name for r in rows)
    assert names == sorted(p.name for p in paths)
    expected = cli_json(data / "widerface" / "val" / "images")

    class Result:  # the columns of one row, as a `Faces` result reads
        def __init__(self, row):
            self.boxes, self.scores, self.landmarks = row["boxes"], row["scores"], row["landmarks"]
            self.height, self.width = row["image"].shape[:2]

        def __len__(self):
            return len(self.scores)

    faces = 0
    for row in rows:
        result = Result(row)
        assert result.boxes.dtype == np.float32 and result.boxes.shape == (len(result), 4)
        assert_same_faces(result, expected[Path(row["path"]).name])
        faces += len(result)
    assert faces > 100
