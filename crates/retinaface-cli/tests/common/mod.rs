//! Helpers shared by the CLI's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `../shared` beside the repository; tests fail (never skip) when it is missing.
pub fn shared() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    assert!(
        p.join("data").is_dir(),
        "../shared is missing at {}",
        p.display()
    );
    p
}

/// A fresh, empty folder for one test (named after the test binary, the case and the process).
pub fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "retinaface-{}-{name}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
