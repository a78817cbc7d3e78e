//! What Python hands over as an image, turned into RGB pixels: numpy arrays (any strides; gray,
//! RGB or RGBA, or BGR/BGRA with `color="bgr"`), objects that convert to arrays (PIL images),
//! paths and encoded bytes. Arrays are copied while the GIL is held, so the caller may change
//! them once the call returns; files and bytes are decoded after the GIL is released.

use image::RgbImage;
use numpy::{
    dtype, Ix3, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};
use retinaface::error::ImageError;
use retinaface::input;
use std::path::PathBuf;

/// The channel order of arrays, in and out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    Rgb,
    Bgr,
}

impl Color {
    /// Put packed RGB pixels in this order, or back (the swap is its own inverse).
    pub fn reorder(self, pixels: &mut [u8]) {
        if self == Color::Bgr {
            pixels.chunks_exact_mut(3).for_each(|px| px.swap(0, 2));
        }
    }

    /// `"rgb"` or `"bgr"` (OpenCV's order), any case.
    pub fn parse(text: &str) -> PyResult<Color> {
        match text.to_ascii_lowercase().as_str() {
            "rgb" | "rgba" => Ok(Color::Rgb),
            "bgr" | "bgra" => Ok(Color::Bgr),
            _ => Err(PyValueError::new_err(format!(
                "color must be \"rgb\" or \"bgr\", got {text:?}"
            ))),
        }
    }
}

/// An image ready to leave the GIL.
pub enum Source {
    /// Pixels copied from an array.
    Pixels(RgbImage),
    /// An encoded image in memory; `name` appears in errors.
    Encoded { bytes: Vec<u8>, name: PathBuf },
    /// A file to read and decode.
    File(PathBuf),
}

impl Source {
    /// Take `obj` as an image: an array, bytes, a path, or anything numpy turns into an array.
    pub fn extract(obj: &Bound<'_, PyAny>, color: Color) -> PyResult<Source> {
        let py = obj.py();
        if let Ok(array) = obj.cast::<PyUntypedArray>() {
            return Ok(Source::Pixels(from_array(array, color)?));
        }
        if let Ok(bytes) = obj.cast::<PyBytes>() {
            return Ok(Source::Encoded {
                bytes: bytes.as_bytes().to_vec(),
                name: PathBuf::from("<bytes>"),
            });
        }
        if let Ok(bytes) = obj.cast::<PyByteArray>() {
            return Ok(Source::Encoded {
                bytes: bytes.to_vec(),
                name: PathBuf::from("<bytearray>"),
            });
        }
        if obj.is_instance_of::<PyString>() || obj.hasattr("__fspath__")? {
            return Ok(Source::File(obj.extract::<PathBuf>()?));
        }
        // PIL images and other array-likes.
        if obj.hasattr("__array_interface__")? || obj.hasattr("__array__")? {
            let array = py.import("numpy")?.call_method1("asarray", (obj,))?;
            if let Ok(array) = array.cast::<PyUntypedArray>() {
                return Ok(Source::Pixels(from_array(array, color)?));
            }
        }
        Err(PyTypeError::new_err(format!(
            "image must be a uint8 numpy array (H, W, 3), a path or encoded bytes, not {}",
            obj.get_type().name()?
        )))
    }

    /// The RGB pixels: decoded (EXIF orientation applied) within `max_pixels` for files and
    /// bytes. Runs without the GIL.
    pub fn into_image(self, max_pixels: u64) -> Result<RgbImage, ImageError> {
        match self {
            Source::Pixels(img) => Ok(img),
            Source::Encoded { bytes, name } => input::decode_bytes(&bytes, &name, max_pixels),
            Source::File(path) => {
                let bytes = input::read_input_file(&path, input::DEFAULT_MAX_FILE_BYTES)?;
                input::decode_bytes(&bytes, &path, max_pixels)
            }
        }
    }
}

/// Copy a uint8 array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) into RGB pixels
/// (alpha dropped, gray repeated).
pub fn from_array(array: &Bound<'_, PyUntypedArray>, color: Color) -> PyResult<RgbImage> {
    let py = array.py();
    let found = array.dtype();
    if !found.is_equiv_to(&dtype::<u8>(py)) {
        return Err(PyTypeError::new_err(format!(
            "image must be a uint8 array, got dtype {}; scale float images to 0..255 and \
             convert with .astype(numpy.uint8)",
            found.str()?
        )));
    }
    let shape = array.shape().to_vec();
    let (h, w, c) = match shape[..] {
        [h, w] => (h, w, 1),
        [h, w, c] if matches!(c, 1 | 3 | 4) => (h, w, c),
        _ => {
            return Err(PyValueError::new_err(format!(
                "image must have shape (H, W, 3) (or (H, W), (H, W, 1), (H, W, 4)), got {shape:?}"
            )))
        }
    };
    let (width, height) = match (u32::try_from(w), u32::try_from(h)) {
        (Ok(w), Ok(h)) if (w as u64) * (h as u64) <= u32::MAX as u64 / 3 => (w, h),
        _ => {
            return Err(PyValueError::new_err(format!(
                "image of {h}×{w} pixels is too large"
            )))
        }
    };
    let typed = array.cast::<PyArrayDyn<u8>>()?;
    let readonly = typed.try_readonly()?;
    let view = readonly.as_array();
    let view = if c == 1 && view.ndim() == 2 {
        view.insert_axis(numpy::ndarray::Axis(2))
    } else {
        view
    };
    let view = view
        .into_dimensionality::<Ix3>()
        .map_err(|e| PyValueError::new_err(format!("image array: {e}")))?;
    let (r, b) = match color {
        Color::Rgb => (0, 2),
        Color::Bgr => (2, 0),
    };
    if let (Some(all), 3) = (view.as_slice(), c) {
        // The common case, a contiguous RGB or BGR array: one copy.
        let mut pixels = all.to_vec();
        color.reorder(&mut pixels);
        return RgbImage::from_raw(width, height, pixels)
            .ok_or_else(|| PyValueError::new_err("image array: inconsistent size"));
    }
    let mut pixels = Vec::with_capacity(h * w * 3);
    let mut push = |px: &[u8]| match c {
        1 => pixels.extend_from_slice(&[px[0], px[0], px[0]]),
        _ => pixels.extend_from_slice(&[px[r], px[1], px[b]]),
    };
    match view.as_slice() {
        // Contiguous: one pass over the buffer.
        Some(all) => all.chunks_exact(c).for_each(&mut push),
        None => {
            let mut px = [0u8; 4];
            for row in view.outer_iter() {
                for p in row.outer_iter() {
                    for (k, v) in p.iter().enumerate() {
                        px[k] = *v;
                    }
                    push(&px[..c]);
                }
            }
        }
    }
    RgbImage::from_raw(width, height, pixels)
        .ok_or_else(|| PyValueError::new_err("image array: inconsistent size"))
}

/// RGB pixels as an (H, W, 3) array in `color`'s order.
pub fn to_array<'py>(
    py: Python<'py>,
    img: RgbImage,
    color: Color,
) -> PyResult<Bound<'py, numpy::PyArray3<u8>>> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut raw = img.into_raw();
    color.reorder(&mut raw);
    let array = numpy::ndarray::Array3::from_shape_vec((h, w, 3), raw)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(numpy::PyArray3::from_owned_array(py, array))
}
