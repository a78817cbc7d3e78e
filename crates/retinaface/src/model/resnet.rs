//! torchvision's ResNet-50 as the port uses it: `body.conv1`, `body.bn1`, `body.layer1…4`;
//! layer2–layer4 (strides 8, 16, 32) feed the FPN.

use super::builder::{Builder, ConvSpec};
use super::mobilenet::run_chain;
use super::Workspace;
use crate::engine::{max_pool_3x3_s2, Activation, Conv2d, Feature};
use crate::weights::WeightsError;

const RELU: Activation = Activation::Relu;

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
    pub fn new(b: &mut Builder) -> Result<Self, WeightsError> {
        let stem = b.conv(ConvSpec::bn("body.conv1", "body.bn1", 3, 64, 7, 2, RELU))?;
        let mut layers: [Vec<Bottleneck>; 4] = Default::default();
        let mut cin = 64;
        for (l, (&blocks, &width)) in [3usize, 4, 6, 3]
            .iter()
            .zip(&[64usize, 128, 256, 512])
            .enumerate()
        {
            let cout = width * 4;
            for i in 0..blocks {
                let p = format!("body.layer{}.{i}", l + 1);
                let stride = if i == 0 && l > 0 { 2 } else { 1 };
                let c = |n: usize| (format!("{p}.conv{n}"), format!("{p}.bn{n}"));
                let (c1, b1) = c(1);
                let (c2, b2) = c(2);
                let (c3, b3) = c(3);
                let convs = [
                    b.conv(ConvSpec::bn(&c1, &b1, cin, width, 1, 1, RELU))?,
                    b.conv(ConvSpec::bn(&c2, &b2, width, width, 3, stride, RELU))?,
                    b.conv(ConvSpec::bn(
                        &c3,
                        &b3,
                        width,
                        cout,
                        1,
                        1,
                        Activation::Identity,
                    ))?,
                ];
                let downsample = if i == 0 {
                    let spec = ConvSpec::bn(
                        &format!("{p}.downsample.0"),
                        &format!("{p}.downsample.1"),
                        cin,
                        cout,
                        1,
                        stride,
                        Activation::Identity,
                    );
                    Some(b.conv(spec)?)
                } else {
                    None
                };
                layers[l].push(Bottleneck { convs, downsample });
                cin = cout;
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
