//! One layer with weights, as the weight files name and shape it.

use crate::engine::Activation;

/// How a layer's weights are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKind {
    /// A dense convolution (groups = 1).
    Dense,
    /// Depthwise: groups = channels (3×3 only).
    Depthwise,
    /// A deformable convolution: every tap samples the input bilinearly at an offset that a
    /// companion layer (`<name>.offset`, 2·k² channels, torchvision's `(dy, dx)` order)
    /// predicts from the same input.
    Deformable,
    /// A transposed convolution (PyTorch's `ConvTranspose2d`, weight `[cin, cout, k, k]`),
    /// kernel 2 and stride 2: every input pixel becomes a 2×2 block of the output.
    Transposed,
}

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
    pub kind: ConvKind,
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
            kind: ConvKind::Dense,
            act,
        }
    }

    /// A depthwise 3×3 followed by BatchNorm.
    pub fn depthwise(name: &str, bn: &str, ch: usize, stride: usize, act: Activation) -> Self {
        ConvSpec {
            kind: ConvKind::Depthwise,
            ..Self::bn(name, bn, ch, ch, 3, stride, act)
        }
    }

    /// A 1×1 head convolution with its own bias.
    pub fn head(name: &str, cin: usize, cout: usize) -> Self {
        Self::plain(name, cin, cout, 1, Activation::Identity)
    }

    /// A stride-1 convolution with its own bias and no BatchNorm, padding `k / 2`.
    pub fn plain(name: &str, cin: usize, cout: usize, k: usize, act: Activation) -> Self {
        ConvSpec {
            bn: None,
            ..Self::bn(name, "", cin, cout, k, 1, act)
        }
    }

    /// The companion layer predicting a deformable layer's offsets: same kernel, stride and
    /// padding, 2·k² outputs, its own bias.
    pub fn offsets(&self) -> ConvSpec {
        ConvSpec {
            name: format!("{}.offset", self.name),
            bn: None,
            cin: self.cin,
            cout: 2 * self.k * self.k,
            k: self.k,
            stride: self.stride,
            pad: self.pad,
            kind: ConvKind::Dense,
            act: Activation::Identity,
        }
    }

    /// The PyTorch weight shape: `[cout, cin / groups, k, k]`, or `[cin, cout, k, k]` for a
    /// transposed convolution.
    pub fn weight_shape(&self) -> Vec<usize> {
        match self.kind {
            ConvKind::Depthwise => vec![self.cout, 1, self.k, self.k],
            ConvKind::Transposed => vec![self.cin, self.cout, self.k, self.k],
            ConvKind::Dense | ConvKind::Deformable => vec![self.cout, self.cin, self.k, self.k],
        }
    }
}
