//! WIDER FACE prediction files (name, count, then one box and score per line).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Some(text) = retinaface_fuzz::text(data) {
        let _ = retinaface_eval::widerface::parse_prediction_text(text, Path::new("fuzz.txt"));
    }
});
