//! label.txt (the port's training annotations: boxes and five landmarks per face).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Some(text) = retinaface_fuzz::text(data) {
        let _ = retinaface_eval::landmarks::LabelFile::parse(text, Path::new("label.txt"));
    }
});
