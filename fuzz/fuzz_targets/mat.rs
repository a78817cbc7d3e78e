//! MATLAB v5 files (WIDER FACE's ground truth): tags, compression, cells and structs.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mat) = retinaface_eval::mat::MatFile::from_bytes(data) {
        for name in mat.names() {
            let _ = mat
                .get(name)
                .map(|a| (a.as_f64(), a.char_rows(), a.as_cell()));
        }
    }
});
