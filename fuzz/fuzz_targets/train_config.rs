//! Training configurations (TOML), validated, then the network description they imply.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some(text) = retinaface_fuzz::text(data) else {
        return;
    };
    let Ok(config) = retinaface_train::config::TrainConfig::parse(text, Path::new("run.toml"))
    else {
        return;
    };
    if config.validate().is_ok() {
        let model = config.model.model_config();
        let _ = retinaface::arch::Graph::new(&model);
        let _ = config.learning_rate(0.5);
        let _ = config.to_toml();
    }
});
