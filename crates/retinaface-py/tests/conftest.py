"""Shared fixtures: the data beside the repository and the `retinaface` command line, whose
results the Python package must reproduce."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get("RETINAFACE_SHARED", REPO.parent / "shared"))
T1 = SHARED / "data" / "photos" / "t1.jpg"
VAL = SHARED / "data" / "widerface" / "val" / "images"


def cli_path():
    """The CLI: $RETINAFACE_BIN, else the workspace's debug or release build."""
    named = os.environ.get("RETINAFACE_BIN")
    if named:
        return Path(named)
    for profile in ("debug", "release"):
        p = REPO / "target" / profile / "retinaface"
        if p.is_file():
            return p
    found = shutil.which("retinaface")
    return Path(found) if found else None


@pytest.fixture(scope="session")
def cli():
    """Run the CLI with arguments; fails (never skips) when it has not been built."""
    path = cli_path()
    assert path is not None and path.is_file(), (
        "the retinaface binary is needed: `cargo build -p retinaface-cli` or set RETINAFACE_BIN"
    )

    def run(*args):
        done = subprocess.run([str(path), *map(str, args)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done

    return run


@pytest.fixture(scope="session")
def cli_json(cli, tmp_path_factory):
    """`retinaface detect PATH --json` as {file name: record}."""

    def run(path, *args):
        out = tmp_path_factory.mktemp("cli") / "faces.json"
        cli("detect", path, "--json", out, *args)
        return {Path(r["image"]).name: r for r in json.loads(out.read_text())}

    return run


@pytest.fixture(scope="session")
def data():
    assert T1.is_file() and VAL.is_dir(), f"the shared data is missing: {SHARED}"
    return SHARED / "data"


def val_images():
    return sorted(VAL.rglob("*.jpg"))


def assert_same_faces(faces, record, tol=1e-4):
    """A `Faces` result equals a CLI record: the same count, boxes and landmarks to `tol`
    pixels, scores to 1e-6."""
    import numpy as np

    expected = record["faces"]
    assert len(faces) == len(expected), (record.get("image"), len(faces), len(expected))
    if not expected:
        return
    boxes = np.array([f["box"] for f in expected], dtype=np.float64)
    scores = np.array([f["score"] for f in expected], dtype=np.float64)
    landmarks = np.array([f["landmarks"] for f in expected], dtype=np.float64)
    assert (faces.width, faces.height) == (record["width"], record["height"])
    np.testing.assert_allclose(faces.boxes, boxes, rtol=0, atol=tol)
    np.testing.assert_allclose(faces.scores, scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(faces.landmarks, landmarks, rtol=0, atol=tol)
