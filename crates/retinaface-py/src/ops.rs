//! `align` and `anonymize`: functions of an image and its faces.

use crate::error::image_to_py;
use crate::faces::Faces;
use crate::image::{to_array, Color, Source};
use numpy::ndarray::{Array3, Array4};
use numpy::{PyArray3, PyArray4, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use retinaface::anonymize::{self as mask, Mode, Shape};
use retinaface::{align as engine_align, Face};

/// ArcFace-aligned crops (InsightFace's `norm_crop`): the similarity transform that takes
/// each face's five landmarks onto the ArcFace template scaled to `size`, and a bilinear warp
/// with a black border, exactly as `retinaface align` writes them.
///
///   image: anything `Detector.detect` takes.
///   landmarks: a `Faces` result, or an array-like of shape (N, 5, 2) or (5, 2).
///   size: the crop's side, 16 to 4096.
///
/// Returns a uint8 array (N, size, size, 3) in the channel order of `color`; with
/// `return_transforms=True` also the (N, 2, 3) float64 matrices (source → crop pixels).
#[pyfunction]
#[pyo3(signature = (image, landmarks, size=112, color="rgb", return_transforms=false))]
pub fn align<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    landmarks: &Bound<'py, PyAny>,
    size: u32,
    color: &str,
    return_transforms: bool,
) -> PyResult<Bound<'py, PyAny>> {
    if !(16..=4096).contains(&size) {
        return Err(PyValueError::new_err(format!(
            "size {size} is outside 16..=4096"
        )));
    }
    let color = Color::parse(color)?;
    let source = Source::extract(image, color)?;
    let points = landmark_list(landmarks)?;
    let (crops, matrices) = py.detach(|| -> PyResult<_> {
        let img = source
            .into_image(retinaface::input::DEFAULT_MAX_PIXELS)
            .map_err(image_to_py)?;
        let side = size as usize;
        let mut crops = Array4::<u8>::zeros((points.len(), side, side, 3));
        let mut matrices = Array3::<f64>::zeros((points.len(), 2, 3));
        for (k, lm) in points.iter().enumerate() {
            let face = Face {
                bbox: [0.0; 4],
                score: 1.0,
                landmarks: Some(*lm),
            };
            let Some((crop, m)) = engine_align::align_face(&img, &face, size) else {
                continue;
            };
            let mut raw = crop.into_raw();
            color.reorder(&mut raw);
            if let Some(dst) = crops
                .index_axis_mut(numpy::ndarray::Axis(0), k)
                .as_slice_mut()
            {
                dst.copy_from_slice(&raw);
            }
            for (r, row) in m.iter().enumerate() {
                for (c, v) in row.iter().enumerate() {
                    matrices[[k, r, c]] = *v;
                }
            }
        }
        Ok((crops, matrices))
    })?;
    let crops = PyArray4::from_owned_array(py, crops).into_any();
    if return_transforms {
        let matrices = PyArray3::from_owned_array(py, matrices).into_any();
        Ok((crops, matrices).into_pyobject(py)?.into_any())
    } else {
        Ok(crops)
    }
}

/// A copy of the image with every face hidden, every other pixel unchanged (as
/// `retinaface anonymize`).
///
///   image: anything `Detector.detect` takes.
///   faces: a `Faces` result, or boxes as an array-like of shape (N, 4) (x1, y1, x2, y2).
///   mode: "blur", "pixelate", "solid" (black) or "none".
///   shape: "ellipse" or "box", inside the box enlarged by `scale` around its centre.
///
/// Returns a uint8 array (H, W, 3) in the channel order of `color`.
#[pyfunction]
#[pyo3(signature = (image, faces, mode="blur", shape="ellipse", scale=1.3, color="rgb"))]
pub fn anonymize<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    faces: &Bound<'py, PyAny>,
    mode: &str,
    shape: &str,
    scale: f32,
    color: &str,
) -> PyResult<Bound<'py, PyArray3<u8>>> {
    let options = mask::Options {
        mode: match mode {
            "blur" => Mode::Blur,
            "pixelate" => Mode::Pixelate,
            "solid" => Mode::Solid,
            "none" => Mode::None,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "mode must be \"blur\", \"pixelate\", \"solid\" or \"none\", got {mode:?}"
                )))
            }
        },
        shape: match shape {
            "ellipse" => Shape::Ellipse,
            "box" => Shape::Box,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "shape must be \"ellipse\" or \"box\", got {shape:?}"
                )))
            }
        },
        mask_scale: scale,
    };
    if !(scale.is_finite() && (0.1..=10.0).contains(&scale)) {
        return Err(PyValueError::new_err(format!(
            "scale {scale} is outside 0.1..=10"
        )));
    }
    let color = Color::parse(color)?;
    let source = Source::extract(image, color)?;
    let boxes = box_list(faces)?;
    let img = py.detach(|| -> PyResult<_> {
        let mut img = source
            .into_image(retinaface::input::DEFAULT_MAX_PIXELS)
            .map_err(image_to_py)?;
        mask::anonymize(&mut img, &boxes, &options);
        Ok(img)
    })?;
    to_array(py, img, color)
}

/// Landmarks from a `Faces` result or an (N, 5, 2) / (5, 2) array-like.
fn landmark_list(obj: &Bound<'_, PyAny>) -> PyResult<Vec<[[f32; 2]; 5]>> {
    if let Ok(faces) = obj.cast::<Faces>() {
        let faces = faces.get();
        return faces
            .faces
            .iter()
            .map(|f| {
                f.landmarks.ok_or_else(|| {
                    PyValueError::new_err("alignment needs landmarks, and these faces have none")
                })
            })
            .collect();
    }
    let values = floats(obj, &[5, 2], "landmarks")?;
    Ok(values
        .chunks_exact(10)
        .map(|c| std::array::from_fn(|k| [c[2 * k], c[2 * k + 1]]))
        .collect())
}

/// Boxes from a `Faces` result or an (N, 4) / (4,) array-like.
fn box_list(obj: &Bound<'_, PyAny>) -> PyResult<Vec<[f32; 4]>> {
    if let Ok(faces) = obj.cast::<Faces>() {
        return Ok(faces.get().faces.iter().map(|f| f.bbox).collect());
    }
    let values = floats(obj, &[4], "boxes")?;
    Ok(values
        .chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect())
}

/// The finite float32 values of an array-like of shape (N, *inner) or inner, row-major.
fn floats(obj: &Bound<'_, PyAny>, inner: &[usize], what: &str) -> PyResult<Vec<f32>> {
    let py = obj.py();
    let numpy = py.import("numpy")?;
    let array = numpy
        .call_method1("asarray", (obj, numpy.getattr("float32")?))
        .map_err(|e| PyValueError::new_err(format!("{what} must be numbers: {}", e.value(py))))?;
    let array = array.cast_into::<numpy::PyArrayDyn<f32>>()?;
    let shape = array.shape().to_vec();
    let rows = if shape == inner {
        1
    } else if shape.len() == inner.len() + 1 && shape[1..] == *inner {
        shape[0]
    } else {
        let want: Vec<String> = inner.iter().map(|d| d.to_string()).collect();
        return Err(PyValueError::new_err(format!(
            "{what} must have shape (N, {}), got {shape:?}",
            want.join(", ")
        )));
    };
    let values: Vec<f32> = array.readonly().as_array().iter().copied().collect();
    if values.iter().any(|v| !v.is_finite()) {
        return Err(PyValueError::new_err(format!(
            "{what} must be finite numbers"
        )));
    }
    debug_assert_eq!(values.len(), rows * inner.iter().product::<usize>());
    Ok(values)
}
