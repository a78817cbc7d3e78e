//! BatchNorm statistics and weight scales for a network that came from folded weights (ONNX,
//! the detector's safetensors), so that its BatchNorm can train as the port trains it.
//!
//! Why: a folded file has no statistics, so its BatchNorm starts as an identity. Trained with
//! frozen statistics the network diverges within a few steps (loss 4.5 → 90 → 826 → 8·10⁷ at
//! lr 1e-3, 4.5 → 16 → 42 at lr 1e-5, on the 581 training images), while the port's own
//! checkpoint, BatchNorm training, stays stable at lr 1e-3. Training BatchNorm with identity
//! statistics instead changes the function (batch statistics are not the identity's).
//! Calibrating gives every BatchNorm the statistics of real data, rescales the weights to the
//! usual spread and folds the old affine map into γ and β: with running statistics the
//! function is unchanged exactly, and in training the batch statistics are close to the
//! calibrated ones.

use super::layers::{record_batch_norm_inputs, BnMode, ChannelStats, BN_EPS};
use super::{export_unfolded, LayerBuilder, Model};
use burn::tensor::Tensor;
use retinaface::model::ConvSpec;
use retinaface::weights::{NamedTensors, WeightsError};

/// The unfolded tensors of `model` with each BatchNorm recomputed from its input's statistics
/// on `images` (`[B, 3, H, W]`, BGR minus the mean), the network's function kept.
pub fn calibrated_tensors(model: &Model, images: Tensor<4>) -> Result<NamedTensors, WeightsError> {
    let stats = record_batch_norm_inputs(|| {
        let _ = model.net.forward(images);
    });
    let mut tensors = export_unfolded(model)?;
    for (spec, layer) in model.specs.iter().zip(model.net.layers()) {
        let Some(bn) = &spec.bn else { continue };
        let found = stats
            .get(&layer.conv.weight.id)
            .ok_or_else(|| WeightsError::Mismatch(format!("no statistics recorded for `{bn}`")))?;
        recompute(&mut tensors, spec, bn, found)?;
    }
    Ok(tensors)
}

/// A network like `model` whose BatchNorm carries calibrated statistics, in `mode`.
pub fn calibrate_batch_norm(
    model: &Model,
    images: Tensor<4>,
    mode: BnMode,
) -> Result<Model, WeightsError> {
    let device = images.device();
    let tensors = calibrated_tensors(model, images)?;
    let b = LayerBuilder::from_tensors(&device, &tensors).with_bn_mode(mode);
    Model::build(&model.config, b)
}

/// The layer computes `a·z + c` with `z = w·x`, `a = γ₀/√(σ₀² + ε)` and `c = β₀ − a·μ₀`.
/// Each output channel's weights are divided by `k` so that their spread is that of PyTorch's
/// initialisation; `z̃ = z/k` then has the statistics `μ̃ = μ/k`, `σ̃² = σ²/k²`, and
/// `γ = a·k·√(σ̃² + ε)`, `β = c + a·μ` give the same map.
///
/// The rescaling matters as much as the statistics. Folding shrinks a layer whose output
/// varies a lot to tiny weights: the pretrained stem, which sees pixels, has |w| = 0.016 and
/// a gradient of norm 1.1·10³ on a batch, so one SGD step at lr 1e-4 wipes it out, while the
/// same step on weights of the usual spread is a small one.
fn recompute(
    tensors: &mut NamedTensors,
    spec: &ConvSpec,
    bn: &str,
    stats: &ChannelStats,
) -> Result<(), WeightsError> {
    let get = |t: &NamedTensors, p: &str| {
        t.get(&format!("{bn}.{p}"))
            .map(|t| t.data.clone())
            .ok_or_else(|| WeightsError::Missing {
                name: format!("{bn}.{p}"),
                expected: vec![stats.mean.len()],
            })
    };
    let (g0, b0, m0, v0) = (
        get(tensors, "weight")?,
        get(tensors, "bias")?,
        get(tensors, "running_mean")?,
        get(tensors, "running_var")?,
    );
    let c = g0.len();
    if stats.mean.len() != c || stats.var.len() != c {
        return Err(WeightsError::Mismatch(format!(
            "`{bn}`: {} statistics for {c} channels",
            stats.mean.len()
        )));
    }
    let wname = format!("{}.weight", spec.name);
    let weight = tensors
        .get_mut(&wname)
        .ok_or_else(|| WeightsError::Missing {
            name: wname.clone(),
            expected: spec.weight_shape(),
        })?;
    let fan_in = weight.data.len() / c;
    let target = 1.0 / (3.0 * fan_in as f32).sqrt();
    let eps = BN_EPS as f32;
    let (mut gamma, mut beta) = (vec![0.0; c], vec![0.0; c]);
    let (mut mean, mut var) = (vec![0.0; c], vec![0.0; c]);
    for o in 0..c {
        let w = &mut weight.data[o * fan_in..(o + 1) * fan_in];
        let rms = (w.iter().map(|v| v * v).sum::<f32>() / fan_in as f32).sqrt();
        let k = if rms > 0.0 && rms.is_finite() {
            rms / target
        } else {
            1.0
        };
        w.iter_mut().for_each(|v| *v /= k);
        let a = g0[o] / (v0[o] + eps).sqrt();
        let shift = b0[o] - a * m0[o];
        mean[o] = stats.mean[o] / k;
        var[o] = stats.var[o] / (k * k);
        gamma[o] = a * k * (var[o] + eps).sqrt();
        beta[o] = shift + a * stats.mean[o];
    }
    let mut set = |p: &str, data: Vec<f32>| {
        if let Some(t) = tensors.get_mut(&format!("{bn}.{p}")) {
            t.data = data;
        }
    };
    set("weight", gamma);
    set("bias", beta);
    set("running_mean", mean);
    set("running_var", var);
    Ok(())
}
