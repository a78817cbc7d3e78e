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
        for i in 0..3 {
            self.lateral[i].forward(&ws.stages[i], &mut ws.t1, &mut ws.scratch);
            std::mem::swap(&mut ws.t1, &mut ws.pyramid[i]);
        }
        for i in (0..2).rev() {
            let (lo, hi) = ws.pyramid.split_at_mut(i + 1);
            add_upsampled_nearest(&mut lo[i], &hi[0]);
            self.merge[i].forward(&lo[i], &mut ws.t1, &mut ws.scratch);
            std::mem::swap(&mut ws.t1, &mut lo[i]);
        }
    }
}

/// SSH: 3×3 (out/2) ‖ 5×5 as two 3×3 (out/4) ‖ 7×7 as three 3×3 sharing the first (out/4),
/// concatenated, ReLU. Each branch writes its channel slice of the output directly.
pub(crate) struct Ssh {
    conv3: Conv2d,
    conv5_1: Conv2d,
    conv5_2: Conv2d,
    conv7_2: Conv2d,
    conv7_3: Conv2d,
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
        let mut c = |name: &str, ci: usize, co: usize, act: Activation| {
            b.conv(ConvSpec::bn(
                &format!("{p}.{name}.0"),
                &format!("{p}.{name}.1"),
                ci,
                co,
                3,
                1,
                act,
            ))
        };
        Ok(Ssh {
            conv3: c("conv3X3", cin, half, relu)?,
            conv5_1: c("conv5X5_1", cin, quarter, leaky)?,
            conv5_2: c("conv5X5_2", quarter, quarter, relu)?,
            conv7_2: c("conv7X7_2", quarter, quarter, leaky)?,
            conv7_3: c("conv7x7_3", quarter, quarter, relu)?,
        })
    }

    /// `ws.pyramid[level]` → `ws.context[level]`.
    pub fn forward(&self, level: usize, ws: &mut Workspace) {
        let x = &ws.pyramid[level];
        let out = &mut ws.context[level];
        let (half, quarter) = (self.conv3.cout, self.conv5_2.cout);
        let oc = half + 2 * quarter;
        out.reshape(x.h, x.w, oc);
        self.conv3
            .forward_into(x, &mut out.data, oc, 0, &mut ws.scratch);
        self.conv5_1.forward(x, &mut ws.t1, &mut ws.scratch);
        self.conv5_2
            .forward_into(&ws.t1, &mut out.data, oc, half, &mut ws.scratch);
        self.conv7_2.forward(&ws.t1, &mut ws.t2, &mut ws.scratch);
        self.conv7_3
            .forward_into(&ws.t2, &mut out.data, oc, half + quarter, &mut ws.scratch);
    }
}
