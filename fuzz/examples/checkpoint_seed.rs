//! Write the checkpoint target's seed: a small `state.json`, the record of a one-layer module
//! and its optimiser state after one SGD step with momentum, framed as the target reads them.
//! `cargo run -p retinaface-fuzz --example checkpoint_seed -- fuzz/seeds/checkpoint/small`

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: checkpoint_seed OUT")?;
    let device = Device::flex().autodiff();
    let conv: Conv2d = Conv2dConfig::new([2, 2], [1, 1]).init(&device);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
        .init();
    let x = Tensor::<4>::ones([1, 2, 3, 3], &device);
    let loss = conv.forward(x).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &conv);
    let conv = optim.step(0.1, conv, grads);
    let state = br#"{"step":1,"epoch":0,"batch":1,"images":8,"bn_train":false}"#;
    let model = conv.into_record().into_bytes()?;
    let optim = optim.into_bytes()?;
    let mut seed = (state.len() as u16).to_le_bytes().to_vec();
    seed.extend_from_slice(&(model.len() as u32).to_le_bytes());
    seed.extend_from_slice(state);
    seed.extend_from_slice(&model);
    seed.extend_from_slice(&optim);
    std::fs::write(out, seed)?;
    Ok(())
}
