//! Turns named tensors into engine layers: shape checks, BatchNorm folding, spec recording.

use crate::engine::{Activation, Conv2d};
use crate::weights::{NamedTensors, Tensor, WeightsError};

/// BatchNorm's epsilon in the port (PyTorch's default).
const BN_EPS: f32 = 1e-5;

/// One convolution as the weight files name and shape it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvSpec {
    /// Module path of the convolution (`body.stage1.0.0`); its tensors are `<name>.weight`
    /// and, if it has one, `<name>.bias`.
    pub name: String,
    /// Module path of the BatchNorm that follows it in the unfolded layout, if any.
    pub bn: Option<String>,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    /// Depthwise (groups = channels).
    pub depthwise: bool,
    pub act: Activation,
}

impl ConvSpec {
    /// A convolution followed by BatchNorm, padding `k / 2`.
    pub fn bn(
        name: &str,
        bn: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        act: Activation,
    ) -> Self {
        ConvSpec {
            name: name.to_owned(),
            bn: Some(bn.to_owned()),
            cin,
            cout,
            k,
            stride,
            pad: k / 2,
            depthwise: false,
            act,
        }
    }

    /// A depthwise 3×3 followed by BatchNorm.
    pub fn depthwise(name: &str, bn: &str, ch: usize, stride: usize, act: Activation) -> Self {
        ConvSpec {
            depthwise: true,
            ..Self::bn(name, bn, ch, ch, 3, stride, act)
        }
    }

    /// A 1×1 head convolution with its own bias.
    pub fn head(name: &str, cin: usize, cout: usize) -> Self {
        ConvSpec {
            bn: None,
            ..Self::bn(name, "", cin, cout, 1, 1, Activation::Identity)
        }
    }

    /// The PyTorch weight shape `[cout, cin / groups, k, k]`.
    pub fn weight_shape(&self) -> Vec<usize> {
        let cin = if self.depthwise { 1 } else { self.cin };
        vec![self.cout, cin, self.k, self.k]
    }
}

/// Hands out layers in forward order, recording each spec.
pub(crate) struct Builder<'a> {
    tensors: Option<&'a NamedTensors>,
    specs: Vec<ConvSpec>,
}

impl<'a> Builder<'a> {
    /// Without tensors the builder makes zero layers (to list the specs).
    pub fn new(tensors: Option<&'a NamedTensors>) -> Self {
        Builder {
            tensors,
            specs: Vec::new(),
        }
    }

    pub fn into_specs(self) -> Vec<ConvSpec> {
        self.specs
    }

    /// An engine layer for `spec`.
    pub fn conv(&mut self, spec: ConvSpec) -> Result<Conv2d, WeightsError> {
        let (w, b) = self.load(&spec)?;
        let shape = (spec.cout, spec.cin, spec.k);
        Ok(Conv2d::from_oihw(
            &w,
            &b,
            shape,
            spec.stride,
            spec.pad,
            spec.depthwise,
            spec.act,
        ))
    }

    /// Folded weight (OIHW) and bias of `spec`.
    pub fn load(&mut self, spec: &ConvSpec) -> Result<(Vec<f32>, Vec<f32>), WeightsError> {
        self.specs.push(spec.clone());
        let shape = spec.weight_shape();
        let Some(tensors) = self.tensors else {
            return Ok((vec![0.0; shape.iter().product()], vec![0.0; spec.cout]));
        };
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
            // Folded files (ONNX, our safetensors) carry the bias and no BatchNorm.
            if tensors.contains_key(&format!("{bn}.running_mean")) {
                fold_bn(tensors, bn, spec.cout, &mut weight, &mut bias)?;
            } else if !tensors.contains_key(&bias_name) {
                return Err(missing(&format!("{bn}.running_mean"), &[spec.cout]));
            }
        }
        Ok((weight, bias))
    }
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

/// The folded weight (OIHW) and bias of `spec` in `tensors`, whether they carry BatchNorm
/// separately (the port's checkpoints) or folded (ONNX, our safetensors).
pub fn folded(
    tensors: &NamedTensors,
    spec: &ConvSpec,
) -> Result<(Vec<f32>, Vec<f32>), WeightsError> {
    Builder::new(Some(tensors)).load(spec)
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
