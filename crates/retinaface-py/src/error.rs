//! Rust errors as Python exceptions: files that cannot be read are `OSError`s (a missing one a
//! `FileNotFoundError`), everything the input or the options get wrong is a `ValueError`. The
//! message is the library's, which names the file.

use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyPermissionError, PyValueError};
use pyo3::PyErr;
use retinaface::error::{ImageError, WeightsError};
use retinaface::Error;

/// The Python exception for a library error.
pub fn to_py(e: Error) -> PyErr {
    let message = e.to_string();
    match &e {
        Error::Io { source, .. } => io_error(source.kind(), message),
        Error::Image(i) => image_error(i, message),
        Error::Weights(w) => weights_error(w, message),
        Error::InvalidOption(_) => PyValueError::new_err(message),
    }
}

/// The Python exception for an image error.
pub fn image_to_py(e: ImageError) -> PyErr {
    let message = e.to_string();
    image_error(&e, message)
}

fn image_error(e: &ImageError, message: String) -> PyErr {
    match e {
        ImageError::Io { source, .. } => io_error(source.kind(), message),
        ImageError::NotAFile { .. } | ImageError::FileTooLarge { .. } => {
            PyOSError::new_err(message)
        }
        ImageError::Decode { .. }
        | ImageError::TooLarge { .. }
        | ImageError::DecoderPanic { .. } => PyValueError::new_err(message),
    }
}

fn weights_error(e: &WeightsError, message: String) -> PyErr {
    match e {
        WeightsError::Io { source, .. } => io_error(source.kind(), message),
        WeightsError::Read(i) => image_error(i, message),
        WeightsError::InFile { source, .. } => weights_error(source, message),
        _ => PyValueError::new_err(message),
    }
}

fn io_error(kind: std::io::ErrorKind, message: String) -> PyErr {
    match kind {
        std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(message),
        std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(message),
        _ => PyOSError::new_err(message),
    }
}
