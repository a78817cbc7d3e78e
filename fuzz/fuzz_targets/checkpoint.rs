//! Training checkpoints: `state.json`, the model record and the optimiser record (burnpack),
//! read as `train --resume` reads them. The input is `len(state)` (u16 LE), `len(model)` (u32
//! LE), then the three files.
#![no_main]
use libfuzzer_sys::fuzz_target;
use retinaface_train::checkpoint::{self, CheckpointError};

fn parts(data: &[u8]) -> Option<[&[u8]; 3]> {
    let state_len = usize::from(u16::from_le_bytes(data.get(..2)?.try_into().ok()?));
    let model_len = u32::from_le_bytes(data.get(2..6)?.try_into().ok()?) as usize;
    let rest = &data[6..];
    let (state, rest) = rest.split_at(state_len.min(rest.len()));
    let (model, optim) = rest.split_at(model_len.min(rest.len()));
    Some([state, model, optim])
}

fuzz_target!(|data: &[u8]| {
    let Some([state, model, optim]) = parts(data) else {
        return;
    };
    let _ = checkpoint::parse_state(state);
    let results = [
        checkpoint::parse_model(model.to_vec()).map(|_| ()),
        checkpoint::load_optimizer(optim.to_vec(), burn::optim::SgdConfig::new().init())
            .map(|_| ()),
    ];
    for r in results {
        if let Err(CheckpointError::Panicked(message)) = r {
            retinaface_fuzz::caught_panic("burn's record parser", &message);
        }
    }
});
