//! FPN over three backbone stages and the SSH context modules.

use super::builder::{Builder, ConvSpec};
use super::Workspace;
use crate::engine::{add_upsampled_nearest, Activation, Conv2d};
use crate::weights::WeightsError;

/// 1×1 laterals to a common width, nearest upsample + add top-down, 3×3 merges.
pub(crate) struct Fpn {
    lateral: [Conv2d; 3],
    merge: [Conv2d; 2],
}

impl Fpn {
    pub fn new(
        b: &mut Builder,
        stage_ch: [usize; 3],
        ch: usize,
        slope: f32,
    ) -> Result<Self, WeightsError> {
        let act = Activation::leaky(slope);
        let mut lat = |i: usize| {
            b.conv(ConvSpec::bn(
                &format!("fpn.output{}.0", i + 1),
                &format!("fpn.output{}.1", i + 1),
                stage_ch[i],
                ch,
                1,
                1,
                act,
            ))
        };
        let lateral = [lat(0)?, lat(1)?, lat(2)?];
        // The port runs merge2 before merge1 (top-down); keep that order for the mapping.
        let merge2 = b.conv(ConvSpec::bn(
            "fpn.merge2.0",
            "fpn.merge2.1",
            ch,
            ch,
            3,
            1,
            act,
        ))?;
        let merge1 = b.conv(ConvSpec::bn(
            "fpn.merge1.0",
            "fpn.merge1.1",
            ch,
            ch,
            3,
            1,
            act,
        ))?;
        Ok(Fpn {
            lateral,
            merge: [merge1, merge2],
        })
    }

    /// `ws.stages` → `ws.pyramid` (finest first).
    pub fn forward(&self, ws: &mut Workspace) {
        self.lateral[2].forward(&ws.stages[2], &mut ws.pyramid[2], &mut ws.scratch);
        for i in (0..2).rev() {
            let lat = &mut ws.lateral[i];
            self.lateral[i].forward(&ws.stages[i], lat, &mut ws.scratch);
            add_upsampled_nearest(lat, &ws.pyramid[i + 1]);
            self.merge[i].forward(lat, &mut ws.pyramid[i], &mut ws.scratch);
        }
    }
}

/// SSH: 3×3 (out/2) ‖ 5×5 as two 3×3 (out/4) ‖ 7×7 as three 3×3 sharing the first (out/4),
/// concatenated, ReLU.
///
/// Layers that read the same input run as one: `conv3X3` ‖ `conv5X5_1` (64 → 32 + 16) and
/// `conv5X5_2` ‖ `conv7X7_2` (16 → 16 + 16), each with its own activation per output channel;
/// one Winograd input transform and one pass instead of two (the exported ONNX even computes
/// `conv5X5_1` twice). The branch ends are copied into their channel slices of the output.
pub(crate) struct Ssh {
    /// `conv3X3` (ReLU) ‖ `conv5X5_1` (leaky).
    first: Conv2d,
    /// `conv5X5_2` (ReLU) ‖ `conv7X7_2` (leaky).
    second: Conv2d,
    conv7_3: Conv2d,
    half: usize,
    quarter: usize,
}

impl Ssh {
    pub fn new(
        b: &mut Builder,
        p: &str,
        cin: usize,
        cout: usize,
        slope: f32,
    ) -> Result<Self, WeightsError> {
        let leaky = Activation::leaky(slope);
        // The branch ends have no activation of their own; the ReLU after the concatenation
        // is applied per branch, which is the same.
        let relu = Activation::Relu;
        let (half, quarter) = (cout / 2, cout / 4);
        // Loaded in the port's order (the weight mapping lists them so).
        let mut load = |name: &str, ci: usize, co: usize, act: Activation| {
            b.load(&ConvSpec::bn(
                &format!("{p}.{name}.0"),
                &format!("{p}.{name}.1"),
                ci,
                co,
                3,
                1,
                act,
            ))
            .map(|(w, bias)| (w, bias, vec![act; co]))
        };
        let c3 = load("conv3X3", cin, half, relu)?;
        let c5_1 = load("conv5X5_1", cin, quarter, leaky)?;
        let c5_2 = load("conv5X5_2", quarter, quarter, relu)?;
        let c7_2 = load("conv7X7_2", quarter, quarter, leaky)?;
        let c7_3 = load("conv7x7_3", quarter, quarter, relu)?;
        let fuse = |parts: &[&(Vec<f32>, Vec<f32>, Vec<Activation>)], ci: usize| {
            let cat = |f: &dyn Fn(&(Vec<f32>, Vec<f32>, Vec<Activation>)) -> Vec<f32>| {
                parts.iter().flat_map(|p| f(p)).collect::<Vec<f32>>()
            };
            let acts: Vec<Activation> = parts.iter().flat_map(|p| p.2.clone()).collect();
            Conv2d::with_activations(
                &cat(&|p| p.0.clone()),
                &cat(&|p| p.1.clone()),
                (acts.len(), ci, 3),
                1,
                1,
                false,
                &acts,
            )
        };
        Ok(Ssh {
            first: fuse(&[&c3, &c5_1], cin),
            second: fuse(&[&c5_2, &c7_2], quarter),
            conv7_3: fuse(&[&c7_3], quarter),
            half,
            quarter,
        })
    }

    /// `ws.pyramid[level]` → `ws.context[level]`.
    pub fn forward(&self, level: usize, ws: &mut Workspace) {
        let x = &ws.pyramid[level];
        let out = &mut ws.context[level];
        let [t1, t2] = &mut ws.ssh_tmp[level];
        let (half, quarter) = (self.half, self.quarter);
        let oc = half + 2 * quarter;
        out.reshape(x.h, x.w, oc);
        // t1 = [conv3 | conv5_1], t2 = [conv5_2 | conv7_2].
        self.first.forward(x, t1, &mut ws.scratch);
        t2.reshape(x.h, x.w, 2 * quarter);
        self.second
            .forward_slice(t1, half, &mut t2.data, 2 * quarter, 0, &mut ws.scratch);
        self.conv7_3.forward_slice(
            t2,
            quarter,
            &mut out.data,
            oc,
            half + quarter,
            &mut ws.scratch,
        );
        for ((o, a), b) in out
            .data
            .chunks_exact_mut(oc)
            .zip(t1.data.chunks_exact(half + quarter))
            .zip(t2.data.chunks_exact(2 * quarter))
        {
            o[..half].copy_from_slice(&a[..half]);
            o[half..half + quarter].copy_from_slice(&b[..quarter]);
        }
    }
}
