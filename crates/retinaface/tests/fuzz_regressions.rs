//! Every input the fuzz campaign found crashing a parser (fuzz/regressions/<target>/) is now
//! that file's error: read here through the same functions the targets call.

use std::path::{Path, PathBuf};

fn findings(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn onnx_findings_are_errors() {
    let found = findings("onnx");
    assert!(!found.is_empty());
    for (p, bytes) in found {
        let r = retinaface::weights::onnx::read(&bytes);
        assert!(r.is_err(), "{} was accepted", p.display());
        // Through the sniffing entry point too (its guard must not be what saves it).
        assert!(!matches!(
            retinaface::weights::read_bytes(&bytes),
            Err(retinaface::error::WeightsError::ParserPanic(_))
        ));
    }
}
