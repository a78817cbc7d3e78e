//! PyTorch's legacy checkpoints: the pickle machine, storages after the pickles, then the network.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The legacy reader is the one for anything that is not a zip.
    if !data.starts_with(b"PK") {
        retinaface_fuzz::build_network(retinaface::weights::torch::read(data));
    }
});
