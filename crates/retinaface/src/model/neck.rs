//! FPN over three backbone stages and the SSH context modules (described in [`crate::arch`]),
//! with the engine's buffer reuse and fused SSH layers.

use super::builder::Builder;
use super::Workspace;
use crate::engine::{add_upsampled_nearest, Activation, Conv2d};
use crate::weights::WeightsError;

/// 1×1 laterals to a common width, nearest upsample + add top-down, 3×3 merges.
pub(crate) struct Fpn {
    lateral: [Conv2d; 3],
    merge: [Conv2d; 2],
}

impl Fpn {
    /// The description's three laterals, then `fpn.merge2` and `fpn.merge1`.
    pub fn new(b: &mut Builder) -> Result<Self, WeightsError> {
        let lateral = [b.next_conv()?, b.next_conv()?, b.next_conv()?];
        let merge2 = b.next_conv()?;
        let merge1 = b.next_conv()?;
        Ok(Fpn {
            lateral,
            merge: [merge1, merge2],
        })
    }

    /// `ws.stages` → `ws.pyramid` (finest first).
    pub fn forward(&self, ws: &mut Workspace) {
        self.lateral[2].forward(&ws.stages[2], &mut ws.pyramid[2], &mut ws.scratch);
        ws.pyramid_in_stages[2] = false;
        for i in (0..2).rev() {
            let lat = &mut ws.lateral[i];
            self.lateral[i].forward(&ws.stages[i], lat, &mut ws.scratch);
            let above = if ws.pyramid_in_stages[i + 1] {
                &ws.stages[i + 1]
            } else {
                &ws.pyramid[i + 1]
            };
            add_upsampled_nearest(lat, above);
            // The stage map is dead once its lateral is made: when it has the pyramid's
            // shape, the merge writes there (one 8 MB map fewer at 1080p, no re-zeroing).
            let in_place = ws.stages[i].c == lat.c;
            ws.pyramid_in_stages[i] = in_place;
            let dst = if in_place {
                &mut ws.stages[i]
            } else {
                &mut ws.pyramid[i]
            };
            self.merge[i].forward(lat, dst, &mut ws.scratch);
        }
    }
}

/// A loaded layer: OIHW weights, bias, activation per output channel.
type Loaded = (Vec<f32>, Vec<f32>, Vec<Activation>);

/// SSH: 3×3 (out/2) ‖ 5×5 as two 3×3 (out/4) ‖ 7×7 as three 3×3 sharing the first (out/4),
/// concatenated, ReLU.
///
/// Layers that read the same input run as one: `conv3X3` ‖ `conv5X5_1` (64 → 32 + 16) and
/// `conv5X5_2` ‖ `conv7X7_2` (16 → 16 + 16), each with its own activation per output channel;
/// one Winograd input transform and one pass instead of two (the exported ONNX even computes
/// `conv5X5_1` twice). `conv5X5_2`'s output is copied into its channel slice at the end.
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
    /// The description's five layers of one module, in the port's order: `conv3X3`,
    /// `conv5X5_1`, `conv5X5_2`, `conv7X7_2`, `conv7x7_3`.
    pub fn new(b: &mut Builder) -> Result<Self, WeightsError> {
        // The module's input width, read by `conv3X3` and `conv5X5_1`.
        let cin = b.peek().map_or(0, |s| s.cin);
        let mut load = || {
            b.next_loaded()
                .map(|(spec, w, bias)| (w, bias, vec![spec.act; spec.cout]))
        };
        let (c3, c5_1, c5_2, c7_2, c7_3) = (load()?, load()?, load()?, load()?, load()?);
        let (half, quarter) = (c3.1.len(), c5_1.1.len());
        let fuse = |parts: &[&Loaded], ci: usize| {
            let cat = |f: &dyn Fn(&Loaded) -> Vec<f32>| {
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

    /// Pyramid level `level` → its context map (in `ws.lateral[level]` where there is one, else `ws.context[level]`).
    pub fn forward(&self, level: usize, ws: &mut Workspace) {
        let x = if ws.pyramid_in_stages[level] {
            &ws.stages[level]
        } else {
            &ws.pyramid[level]
        };
        // Levels with a lateral (dead after its merge, and of the output's shape) write there.
        let out = if level < ws.lateral.len() {
            &mut ws.lateral[level]
        } else {
            &mut ws.context[level]
        };
        let t = &mut ws.ssh_tmp[level];
        let (half, quarter) = (self.half, self.quarter);
        let oc = half + 2 * quarter;
        out.reshape(x.h, x.w, oc);
        // out = [conv3 | conv5_1 | (unset)]: conv5_1 borrows conv5_2's slot until the end.
        self.first
            .forward_into(x, &mut out.data, oc, 0, &mut ws.scratch);
        // t = [conv5_2 | conv7_2]
        t.reshape(x.h, x.w, 2 * quarter);
        self.second
            .forward_slice(out, half, &mut t.data, 2 * quarter, 0, &mut ws.scratch);
        self.conv7_3.forward_slice(
            t,
            quarter,
            &mut out.data,
            oc,
            half + quarter,
            &mut ws.scratch,
        );
        for (o, b) in out
            .data
            .chunks_exact_mut(oc)
            .zip(t.data.chunks_exact(2 * quarter))
        {
            o[half..half + quarter].copy_from_slice(&b[..quarter]);
        }
    }
}
