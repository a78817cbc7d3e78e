//! safetensors weights and the model configuration stored in their metadata.
#![no_main]
use libfuzzer_sys::fuzz_target;
use retinaface::weights::safetensors;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(config)) = safetensors::read_config(data) {
        // A stored config is validated before use; a valid one must describe a network.
        if config.validate().is_ok() {
            let _ = retinaface::arch::Graph::new(&config);
        }
    }
    retinaface_fuzz::build_network(safetensors::read(data));
});
