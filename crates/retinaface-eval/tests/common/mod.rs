//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The project's read-only `shared/` folder (beside the repository). Tests that need it
/// fail with this message rather than pass without it.
pub fn shared_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    assert!(
        dir.join("data/widerface/val/ground_truth/wider_face_val.mat")
            .is_file(),
        "the shared data folder is missing at {} (expected shared/ beside the repository, \
         holding data/widerface/val/ground_truth/*.mat)",
        dir.display()
    );
    dir
}

/// The official ground-truth folder.
pub fn gt_dir() -> PathBuf {
    shared_dir().join("data/widerface/val/ground_truth")
}

/// A fixture path under tests/fixtures.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A fresh temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "retinaface-eval-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A minimal little-endian MAT 5 writer: `(name, f64 column)` variables, uncompressed.
pub fn mat_with_doubles(vars: &[(&str, &[f64])]) -> Vec<u8> {
    fn tag(out: &mut Vec<u8>, dtype: u32, data: &[u8]) {
        out.extend_from_slice(&dtype.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
    }
    let mut f = b"MATLAB 5.0 MAT-file, Platform: test".to_vec();
    f.resize(116, b' ');
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&0x0100u16.to_le_bytes());
    f.extend_from_slice(b"IM");
    for (name, values) in vars {
        let mut m = Vec::new();
        tag(&mut m, 6, &[6, 0, 0, 0, 0, 0, 0, 0]);
        let mut dims = (values.len() as i32).to_le_bytes().to_vec();
        dims.extend_from_slice(&1i32.to_le_bytes());
        tag(&mut m, 5, &dims);
        tag(&mut m, 1, name.as_bytes());
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tag(&mut m, 9, &data);
        tag(&mut f, 14, &m);
    }
    f
}
