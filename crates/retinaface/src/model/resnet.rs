//! torchvision's ResNet as the port uses it (`body.conv1`, `body.layer1…4`, described in
//! [`crate::arch`]); layer2–layer4 (strides 8, 16, 32) feed the FPN.

use super::builder::Builder;
use super::mobilenet::run_chain;
use super::Workspace;
use crate::engine::{max_pool_3x3_s2, Conv2d, Feature};
use crate::weights::WeightsError;

/// A bottleneck: 1×1 → 3×3 (stride here, v1.5) → 1×1, plus the identity or a projection.
struct Bottleneck {
    convs: [Conv2d; 3],
    downsample: Option<Conv2d>,
}

pub(crate) struct ResNet {
    stem: Conv2d,
    layers: [Vec<Bottleneck>; 4],
}

impl ResNet {
    /// The description's `body.conv1` then `body.layer{1..4}.{i}` bottlenecks, in order.
    pub fn new(b: &mut Builder) -> Result<Self, WeightsError> {
        let stem = b.next_conv()?;
        let mut layers: [Vec<Bottleneck>; 4] = Default::default();
        for (l, layer) in layers.iter_mut().enumerate() {
            loop {
                let prefix = format!("body.layer{}.{}.", l + 1, layer.len());
                if !b.peek().is_some_and(|s| s.name.starts_with(&prefix)) {
                    break;
                }
                let convs = [b.next_conv()?, b.next_conv()?, b.next_conv()?];
                let downsample = if b
                    .peek()
                    .is_some_and(|s| s.name == format!("{prefix}downsample.0"))
                {
                    Some(b.next_conv()?)
                } else {
                    None
                };
                layer.push(Bottleneck { convs, downsample });
            }
            if layer.is_empty() {
                return Err(WeightsError::Mismatch(format!(
                    "ResNet layer{} is empty",
                    l + 1
                )));
            }
        }
        Ok(ResNet { stem, layers })
    }

    pub fn forward(&self, input: &Feature, ws: &mut Workspace) {
        let mut x = std::mem::take(&mut ws.ping);
        let mut y = std::mem::take(&mut ws.spare);
        self.stem.forward(input, &mut ws.t1, &mut ws.scratch);
        max_pool_3x3_s2(&ws.t1, &mut x);
        for (l, layer) in self.layers.iter().enumerate() {
            for block in layer {
                block.forward(&x, &mut y, ws);
                std::mem::swap(&mut x, &mut y);
            }
            if l >= 1 {
                ws.stages[l - 1].clone_from(&x);
            }
        }
        ws.ping = x;
        ws.spare = y;
    }
}

impl Bottleneck {
    fn forward(&self, x: &Feature, out: &mut Feature, ws: &mut Workspace) {
        run_chain(&self.convs, x, out, &mut ws.t1, &mut ws.t2, &mut ws.scratch);
        let identity: &Feature = match &self.downsample {
            Some(d) => {
                d.forward(x, &mut ws.pong, &mut ws.scratch);
                &ws.pong
            }
            None => x,
        };
        for (o, &i) in out.data.iter_mut().zip(&identity.data) {
            *o = (*o + i).max(0.0);
        }
    }
}
