//! The `retinaface_rs` Python module (its native part, `retinaface_rs._native`): the
//! library's detector, alignment and anonymisation on numpy arrays, files and bytes. Every
//! call releases the GIL while it decodes, detects or warps.

mod detector;
mod error;
mod faces;
mod image;
mod ops;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<detector::Detector>()?;
    m.add_class::<faces::Faces>()?;
    m.add_class::<faces::Face>()?;
    m.add_function(wrap_pyfunction!(ops::align, m)?)?;
    m.add_function(wrap_pyfunction!(ops::anonymize, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
