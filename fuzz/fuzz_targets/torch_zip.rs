//! PyTorch's zip checkpoints: the archive, `data.pkl` through the pickle machine, the storages.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Every input is read as a zip (the seeds are zips; the mutations keep the signature).
    let mut bytes = b"PK\x03\x04".to_vec();
    bytes.extend_from_slice(data.strip_prefix(b"PK\x03\x04").unwrap_or(data));
    retinaface_fuzz::build_network(retinaface::weights::torch::read(&bytes));
});
