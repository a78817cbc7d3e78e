//! Turns named tensors into engine layers: shape checks, BatchNorm folding, handing out the
//! description's layers in order.

use crate::arch::{ConvKind, ConvSpec};
use crate::engine::Conv2d;
use crate::weights::{NamedTensors, Tensor, WeightsError};

/// BatchNorm's epsilon in the port (PyTorch's default).
const BN_EPS: f32 = 1e-5;

/// Hands out the layers of a description in order (the fused plan of the port's network
/// walks them as its modules need them).
pub(crate) struct Builder<'a> {
    tensors: &'a NamedTensors,
    layers: &'a [ConvSpec],
    next: usize,
}

impl<'a> Builder<'a> {
    pub fn new(tensors: &'a NamedTensors, layers: &'a [ConvSpec]) -> Self {
        Builder {
            tensors,
            layers,
            next: 0,
        }
    }

    /// The next layer's spec, without taking it.
    pub fn peek(&self) -> Option<&'a ConvSpec> {
        self.layers.get(self.next)
    }

    /// The next layer's spec and its folded weight (OIHW) and bias.
    pub fn next_loaded(&mut self) -> Result<(&'a ConvSpec, Vec<f32>, Vec<f32>), WeightsError> {
        let spec = self
            .peek()
            .ok_or_else(|| WeightsError::Mismatch("the fused plan ran out of layers".to_owned()))?;
        self.next += 1;
        let (w, b) = folded(self.tensors, spec)?;
        Ok((spec, w, b))
    }

    /// The next layer as an engine convolution.
    pub fn next_conv(&mut self) -> Result<Conv2d, WeightsError> {
        let (spec, w, b) = self.next_loaded()?;
        Ok(conv(spec, &w, &b))
    }

    /// Whether every layer was handed out.
    pub fn done(&self) -> bool {
        self.next == self.layers.len()
    }
}

/// The engine convolution of a dense or depthwise `spec` with folded weights.
pub(crate) fn conv(spec: &ConvSpec, w: &[f32], b: &[f32]) -> Conv2d {
    Conv2d::from_oihw(
        w,
        b,
        (spec.cout, spec.cin, spec.k),
        spec.stride,
        spec.pad,
        spec.kind == ConvKind::Depthwise,
        spec.act,
    )
}

/// The folded weight (PyTorch layout) and bias of `spec` in `tensors`, whether they carry
/// BatchNorm separately (the port's checkpoints) or folded (ONNX, our safetensors).
pub fn folded(
    tensors: &NamedTensors,
    spec: &ConvSpec,
) -> Result<(Vec<f32>, Vec<f32>), WeightsError> {
    let shape = spec.weight_shape();
    let mut weight = take(tensors, &format!("{}.weight", spec.name), &shape)?
        .data
        .clone();
    let bias_name = format!("{}.bias", spec.name);
    let mut bias = match tensors.get(&bias_name) {
        Some(_) => take(tensors, &bias_name, &[spec.cout])?.data.clone(),
        None if spec.bn.is_some() => vec![0.0; spec.cout],
        None => return Err(missing(&bias_name, &[spec.cout])),
    };
    if let Some(bn) = &spec.bn {
        if spec.kind == ConvKind::Transposed {
            return Err(WeightsError::Mismatch(format!(
                "`{}`: BatchNorm after a transposed convolution is not supported",
                spec.name
            )));
        }
        // Folded files (ONNX, our safetensors) carry the bias and no BatchNorm.
        if tensors.contains_key(&format!("{bn}.running_mean")) {
            fold_bn(tensors, bn, spec.cout, &mut weight, &mut bias)?;
        } else if !tensors.contains_key(&bias_name) {
            return Err(missing(&format!("{bn}.running_mean"), &[spec.cout]));
        }
    }
    Ok((weight, bias))
}

fn missing(name: &str, shape: &[usize]) -> WeightsError {
    WeightsError::Missing {
        name: name.to_owned(),
        expected: shape.to_vec(),
    }
}

/// The tensor `name` of `tensors`, checked to have `shape` and only finite values.
pub fn take<'t>(
    tensors: &'t NamedTensors,
    name: &str,
    shape: &[usize],
) -> Result<&'t Tensor, WeightsError> {
    let t = tensors.get(name).ok_or_else(|| missing(name, shape))?;
    if t.shape != shape {
        return Err(WeightsError::Shape {
            name: name.to_owned(),
            expected: shape.to_vec(),
            found: t.shape.clone(),
        });
    }
    if let Some(bad) = t.data.iter().position(|v| !v.is_finite()) {
        return Err(WeightsError::Mismatch(format!(
            "tensor `{name}` holds a non-finite value at index {bad}"
        )));
    }
    Ok(t)
}

/// `w' = w·γ/√(σ²+ε)`, `b' = (b − μ)·γ/√(σ²+ε) + β`.
fn fold_bn(
    tensors: &NamedTensors,
    bn: &str,
    c: usize,
    weight: &mut [f32],
    bias: &mut [f32],
) -> Result<(), WeightsError> {
    let get = |p: &str| take(tensors, &format!("{bn}.{p}"), &[c]).map(|t| &t.data);
    let (gamma, beta, mean, var) = (
        get("weight")?,
        get("bias")?,
        get("running_mean")?,
        get("running_var")?,
    );
    let per = weight.len() / c;
    for o in 0..c {
        let scale = gamma[o] / (var[o] + BN_EPS).sqrt();
        weight[o * per..(o + 1) * per]
            .iter_mut()
            .for_each(|w| *w *= scale);
        bias[o] = (bias[o] - mean[o]) * scale + beta[o];
    }
    Ok(())
}
