//! FPN (three levels C3–C5 as the port, or P2–P6 as the paper), SSH context modules and the
//! 1×1 heads.

use super::layers::{ConvBn, LayerBuilder};
use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::{Int, Tensor, TensorData};
use retinaface::engine::Activation;
use retinaface::model::ConvSpec;
use retinaface::weights::WeightsError;

/// 1×1 laterals to a common width, nearest upsample + add top-down, 3×3 merges; P6 (when
/// configured) is a stride-2 3×3 convolution on C5.
#[derive(Module, Debug)]
pub struct Fpn {
    /// Finest first (`fpn.output1…`).
    pub lateral: Vec<ConvBn>,
    /// `merge[i]` merges level `i` (`fpn.merge{i+1}`); the coarsest backbone level has none.
    pub merge: Vec<ConvBn>,
    pub p6: Option<ConvBn>,
}

impl Fpn {
    pub fn new(
        b: &mut LayerBuilder,
        stage_ch: &[usize],
        ch: usize,
        slope: f32,
        p6: bool,
    ) -> Result<Self, WeightsError> {
        let act = Activation::leaky(slope);
        let n = stage_ch.len();
        let mut lateral = Vec::new();
        for (i, &c) in stage_ch.iter().enumerate() {
            let (conv, bn) = (
                format!("fpn.output{}.0", i + 1),
                format!("fpn.output{}.1", i + 1),
            );
            lateral.push(b.conv(ConvSpec::bn(&conv, &bn, c, ch, 1, 1, act))?);
        }
        // Built top-down (merge2 before merge1, as the port lists them), stored finest first.
        let mut merge = Vec::new();
        for i in (0..n - 1).rev() {
            let (conv, bn) = (
                format!("fpn.merge{}.0", i + 1),
                format!("fpn.merge{}.1", i + 1),
            );
            merge.push(b.conv(ConvSpec::bn(&conv, &bn, ch, ch, 3, 1, act))?);
        }
        merge.reverse();
        let p6 = if p6 {
            let c5 = stage_ch[n - 1];
            Some(b.conv(ConvSpec::bn("fpn.p6.0", "fpn.p6.1", c5, ch, 3, 2, act))?)
        } else {
            None
        };
        Ok(Fpn { lateral, merge, p6 })
    }

    /// Backbone maps (finest first) → pyramid levels (finest first).
    pub fn forward(&self, stages: Vec<Tensor<4>>) -> Vec<Tensor<4>> {
        let n = stages.len();
        let c5 = stages[n - 1].clone();
        let mut lat: Vec<Tensor<4>> = self
            .lateral
            .iter()
            .zip(stages)
            .map(|(l, x)| l.forward(x))
            .collect();
        for i in (0..n - 1).rev() {
            let [_, _, h, w] = lat[i].dims();
            let up = upsample_nearest(lat[i + 1].clone(), h, w);
            let merged = self.merge[i].forward(lat[i].clone() + up);
            lat[i] = merged;
        }
        if let Some(p6) = &self.p6 {
            lat.push(p6.forward(c5));
        }
        lat
    }

    /// In build order.
    pub fn layers<'s>(&'s self, out: &mut Vec<&'s ConvBn>) {
        out.extend(&self.lateral);
        out.extend(self.merge.iter().rev());
        out.extend(&self.p6);
    }
}

/// PyTorch's `interpolate(mode="nearest", size=(h, w))`: source index `floor(i · in / out)`.
pub fn upsample_nearest(x: Tensor<4>, h: usize, w: usize) -> Tensor<4> {
    let [_, _, ih, iw] = x.dims();
    let device = x.device();
    let index = |n_out: usize, n_in: usize| {
        let scale = n_in as f32 / n_out as f32;
        let idx: Vec<i64> = (0..n_out)
            .map(|i| ((i as f32 * scale).floor() as usize).min(n_in - 1) as i64)
            .collect();
        Tensor::<1, Int>::from_data(TensorData::new(idx, vec![n_out]), &device)
    };
    x.select(2, index(h, ih)).select(3, index(w, iw))
}

/// SSH: 3×3 (out/2) ‖ 5×5 as two 3×3 (out/4) ‖ 7×7 as three 3×3 sharing the first (out/4),
/// concatenated, ReLU.
#[derive(Module, Debug)]
pub struct Ssh {
    pub conv3: ConvBn,
    pub conv5_1: ConvBn,
    pub conv5_2: ConvBn,
    pub conv7_2: ConvBn,
    pub conv7_3: ConvBn,
}

impl Ssh {
    pub fn new(b: &mut LayerBuilder, p: &str, ch: usize, slope: f32) -> Result<Self, WeightsError> {
        let leaky = Activation::leaky(slope);
        let relu = Activation::Relu;
        let (half, quarter) = (ch / 2, ch / 4);
        let mut conv = |name: &str, ci: usize, co: usize, act: Activation| {
            let (c, n) = (format!("{p}.{name}.0"), format!("{p}.{name}.1"));
            b.conv(ConvSpec::bn(&c, &n, ci, co, 3, 1, act))
        };
        Ok(Ssh {
            conv3: conv("conv3X3", ch, half, relu)?,
            conv5_1: conv("conv5X5_1", ch, quarter, leaky)?,
            conv5_2: conv("conv5X5_2", quarter, quarter, relu)?,
            conv7_2: conv("conv7X7_2", quarter, quarter, leaky)?,
            conv7_3: conv("conv7x7_3", quarter, quarter, relu)?,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let c3 = self.conv3.forward_linear(x.clone());
        let c5_1 = self.conv5_1.forward(x);
        let c5 = self.conv5_2.forward_linear(c5_1.clone());
        let c7 = self.conv7_3.forward_linear(self.conv7_2.forward(c5_1));
        relu(Tensor::cat(vec![c3, c5, c7], 1))
    }

    pub fn layers<'s>(&'s self, out: &mut Vec<&'s ConvBn>) {
        out.extend([
            &self.conv3,
            &self.conv5_1,
            &self.conv5_2,
            &self.conv7_2,
            &self.conv7_3,
        ]);
    }
}
