//! MobileNetV1 ×0.25 (`body.stage{1,2,3}`, described in [`crate::arch`]) as row pipelines.

use super::builder::Builder;
use super::Workspace;
use crate::engine::{stem_then_pairs, Conv2d, Feature};
use crate::weights::WeightsError;

/// The three stages; each ends at one of the FPN's inputs (strides 8, 16, 32).
pub(crate) struct MobileNet {
    stages: [Vec<Conv2d>; 3],
}

impl MobileNet {
    /// The description's `body.stage{1,2,3}` layers, in order: stage1 opens with the stem,
    /// then (depthwise, pointwise) pairs.
    pub fn new(b: &mut Builder) -> Result<Self, WeightsError> {
        let mut stages: [Vec<Conv2d>; 3] = Default::default();
        for (s, stage) in stages.iter_mut().enumerate() {
            let prefix = format!("body.stage{}.", s + 1);
            while b.peek().is_some_and(|l| l.name.starts_with(&prefix)) {
                stage.push(b.next_conv()?);
            }
            let pairs = stage.len() - usize::from(s == 0);
            if stage.is_empty() || pairs % 2 != 0 {
                return Err(WeightsError::Mismatch(format!(
                    "MobileNet stage {} has {} layers",
                    s + 1,
                    stage.len()
                )));
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
