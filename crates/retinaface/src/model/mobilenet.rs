//! MobileNetV1 ×0.25, the port's layout: `body.stage{1,2,3}`, LeakyReLU 0.1 throughout.

use super::builder::{Builder, ConvSpec};
use super::Workspace;
use crate::engine::{stem_then_pairs, Activation, Conv2d, Feature};
use crate::weights::WeightsError;

const SLOPE: Activation = Activation::Leaky(0.1);

/// The three stages; each ends at one of the FPN's inputs (strides 8, 16, 32).
pub(crate) struct MobileNet {
    stages: [Vec<Conv2d>; 3],
}

impl MobileNet {
    pub fn new(b: &mut Builder) -> Result<Self, WeightsError> {
        // (input channels, output channels, stride) of each depthwise-separable block.
        let blocks: [&[(usize, usize, usize)]; 3] = [
            &[
                (8, 16, 1),
                (16, 32, 2),
                (32, 32, 1),
                (32, 64, 2),
                (64, 64, 1),
            ],
            &[
                (64, 128, 2),
                (128, 128, 1),
                (128, 128, 1),
                (128, 128, 1),
                (128, 128, 1),
                (128, 128, 1),
            ],
            &[(128, 256, 2), (256, 256, 1)],
        ];
        let mut stages: [Vec<Conv2d>; 3] = Default::default();
        for (s, list) in blocks.iter().enumerate() {
            let stage = format!("body.stage{}", s + 1);
            // stage1 opens with a plain 3×3 stride-2 convolution to 8 channels.
            let first = usize::from(s == 0);
            if s == 0 {
                stages[0].push(b.conv(ConvSpec::bn(
                    &format!("{stage}.0.0"),
                    &format!("{stage}.0.1"),
                    3,
                    8,
                    3,
                    2,
                    SLOPE,
                ))?);
            }
            for (i, &(cin, cout, stride)) in list.iter().enumerate() {
                let p = format!("{stage}.{}", i + first);
                stages[s].push(b.conv(ConvSpec::depthwise(
                    &format!("{p}.0"),
                    &format!("{p}.1"),
                    cin,
                    stride,
                    SLOPE,
                ))?);
                stages[s].push(b.conv(ConvSpec::bn(
                    &format!("{p}.3"),
                    &format!("{p}.4"),
                    cin,
                    cout,
                    1,
                    1,
                    SLOPE,
                ))?);
            }
        }
        Ok(MobileNet { stages })
    }

    pub fn forward(&self, input: &Feature, ws: &mut Workspace) {
        for (s, stage) in self.stages.iter().enumerate() {
            let (done, rest) = ws.stages.split_at_mut(s);
            let src = if s == 0 { input } else { &done[s - 1] };
            // stage1 opens with the stem; the rest are (depthwise, pointwise) pairs. All run
            // row by row through rings: no map inside a stage is stored whole.
            let (stem, pairs) = if s == 0 {
                (Some(&stage[0]), &stage[1..])
            } else {
                (None, &stage[..])
            };
            stem_then_pairs(stem, pairs, src, &mut rest[0], &mut ws.bands[s]);
        }
    }
}

/// Run `convs` in sequence from `input` into `out`, through the two temporaries.
pub(crate) fn run_chain<'t>(
    convs: &[Conv2d],
    input: &Feature,
    out: &mut Feature,
    mut a: &'t mut Feature,
    mut b: &'t mut Feature,
    scratch: &mut Vec<f32>,
) {
    match convs {
        [] => {}
        [only] => only.forward(input, out, scratch),
        [first, middle @ .., last] => {
            first.forward(input, a, scratch);
            for conv in middle {
                conv.forward(a, b, scratch);
                std::mem::swap(&mut a, &mut b);
            }
            last.forward(a, out, scratch);
        }
    }
}
