//! ONNX weights: the protobuf reader, the initializer mapping, then the network's shape checks.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    retinaface_fuzz::build_network(retinaface::weights::onnx::read(data));
});
