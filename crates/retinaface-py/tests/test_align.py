"""`align` and `anonymize` reproduce `retinaface align` and `retinaface anonymize` pixel for
pixel."""

import json

import numpy as np
import pytest
import retinaface_rs as rf
from conftest import T1
from PIL import Image


def test_align_equals_the_cli_crops(cli, tmp_path):
    cli("align", T1, "--out", tmp_path)
    transforms = json.loads((tmp_path / "transforms.json").read_text())
    faces = rf.Detector().detect(T1)
    crops, matrices = rf.align(T1, faces, return_transforms=True)
    assert crops.shape == (6, 112, 112, 3) and crops.dtype == np.uint8
    for k in range(6):
        expected = np.asarray(Image.open(tmp_path / f"t1_{k}.png").convert("RGB"))
        np.testing.assert_array_equal(crops[k], expected)
        np.testing.assert_allclose(matrices[k], np.array(transforms[f"t1_{k}.png"]), atol=1e-9)
    # Landmarks as a plain array, BGR in and out, another size.
    image = np.asarray(Image.open(T1).convert("RGB"))
    bgr = rf.align(image[:, :, ::-1], faces.landmarks.tolist(), color="bgr")
    np.testing.assert_array_equal(bgr[:, :, :, ::-1], crops)
    one = rf.align(image, faces.landmarks[0], size=224)
    assert one.shape == (1, 224, 224, 3)


def test_align_refuses_bad_landmarks():
    image = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(ValueError, match=r"shape \(N, 5, 2\)"):
        rf.align(image, np.zeros((3, 4, 2)))
    with pytest.raises(ValueError, match="finite"):
        rf.align(image, np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match="size"):
        rf.align(image, np.zeros((5, 2)), size=8)
    assert rf.align(image, np.zeros((0, 5, 2))).shape == (0, 112, 112, 3)


def test_anonymize_equals_the_cli(cli, tmp_path):
    # PNG in and out, so the CLI's output is lossless.
    png = tmp_path / "in" / "t1.png"
    png.parent.mkdir()
    Image.open(T1).convert("RGB").save(png)
    for mode in ("blur", "pixelate", "solid"):
        out = tmp_path / mode
        cli("anonymize", png, "--out", out, "--mode", mode, "--threshold", "0.5")
        expected = np.asarray(Image.open(out / "t1.png").convert("RGB"))
        faces = rf.Detector().detect(png)
        hidden = rf.anonymize(png, faces, mode=mode)
        np.testing.assert_array_equal(hidden, expected)
    original = np.asarray(Image.open(png))
    boxes = rf.anonymize(original, [[10, 10, 50, 50]], mode="solid", shape="box", scale=1.0)
    assert (boxes[10:50, 10:50] == 0).all()
    assert np.array_equal(boxes[60:], original[60:])
    assert np.array_equal(original, np.asarray(Image.open(png)))  # the input is untouched
    with pytest.raises(ValueError, match="mode"):
        rf.anonymize(original, [], mode="smudge")
