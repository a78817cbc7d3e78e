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

/// Run the binary (with the embedded model, whatever the environment says), any exit status.
pub fn retinaface(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_retinaface"))
        .args(args)
        .env_remove("RETINAFACE_MODEL")
        .output()
        .unwrap()
}

/// The faces `detect` finds above `threshold` in one photo (its JSON record's `faces`).
pub fn detected_faces(path: &Path, threshold: f32) -> Vec<serde_json::Value> {
    let out = retinaface(&[
        "detect",
        s(path),
        "--threshold",
        &threshold.to_string(),
        "--json",
        "-",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json[0]["faces"].as_array().unwrap().clone()
}
