//! WIDER FACE's ground truth in its text form (wider_face_val_bbx_gt.txt).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Some(text) = retinaface_fuzz::text(data) {
        let _ = retinaface_eval::widerface::GroundTruth::parse_text(text, Path::new("fuzz.txt"));
    }
});
