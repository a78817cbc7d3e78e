//! The backbones, laid out and named as the port's weight files have them: MobileNetV1 ×0.25
//! (`body.stage{1,2,3}`) and torchvision's ResNet-50 (`body.conv1`, `body.layer1…4`).

use super::layers::{ConvBn, LayerBuilder};
use burn::module::Module;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::Tensor;
use retinaface::engine::Activation;
use retinaface::model::ConvSpec;
use retinaface::weights::WeightsError;

/// MobileNetV1 ×0.25 with LeakyReLU 0.1.
#[derive(Module, Debug)]
pub struct MobileNet {
    /// Each stage's layers in order: stage1 opens with the stem, then (depthwise, pointwise)
    /// pairs.
    pub stages: Vec<Vec<ConvBn>>,
}

/// Index in stage1 after which the map is at stride 4 (C2): the stem and three blocks.
const C2_AFTER: usize = 6;

impl MobileNet {
    pub fn new(b: &mut LayerBuilder) -> Result<Self, WeightsError> {
        let act = Activation::Leaky(0.1);
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
        let mut stages = Vec::new();
        for (s, list) in blocks.iter().enumerate() {
            let stage = format!("body.stage{}", s + 1);
            let mut layers = Vec::new();
            let first = usize::from(s == 0);
            if s == 0 {
                let (c, n) = (format!("{stage}.0.0"), format!("{stage}.0.1"));
                layers.push(b.conv(ConvSpec::bn(&c, &n, 3, 8, 3, 2, act))?);
            }
            for (i, &(cin, cout, stride)) in list.iter().enumerate() {
                let p = format!("{stage}.{}", i + first);
                let (dw, dwn) = (format!("{p}.0"), format!("{p}.1"));
                let (pw, pwn) = (format!("{p}.3"), format!("{p}.4"));
                layers.push(b.conv(ConvSpec::depthwise(&dw, &dwn, cin, stride, act))?);
                layers.push(b.conv(ConvSpec::bn(&pw, &pwn, cin, cout, 1, 1, act))?);
            }
            stages.push(layers);
        }
        Ok(MobileNet { stages })
    }

    /// The C2…C5 maps (strides 4, 8, 16, 32).
    pub fn forward(&self, mut x: Tensor<4>) -> [Tensor<4>; 4] {
        let mut c2 = None;
        for (i, layer) in self.stages[0].iter().enumerate() {
            x = layer.forward(x);
            if i == C2_AFTER {
                c2 = Some(x.clone());
            }
        }
        let c3 = x;
        let c4 = self.stages[1].iter().fold(c3.clone(), |x, l| l.forward(x));
        let c5 = self.stages[2].iter().fold(c4.clone(), |x, l| l.forward(x));
        [c2.unwrap_or_else(|| c3.clone()), c3, c4, c5]
    }

    pub fn layers<'s>(&'s self, out: &mut Vec<&'s ConvBn>) {
        out.extend(self.stages.iter().flatten());
    }
}

/// A bottleneck: 1×1 → 3×3 (stride here, v1.5) → 1×1, plus the identity or a projection.
#[derive(Module, Debug)]
pub struct Bottleneck {
    pub convs: Vec<ConvBn>,
    pub downsample: Option<ConvBn>,
}

/// torchvision's ResNet-50.
#[derive(Module, Debug)]
pub struct ResNet {
    pub stem: ConvBn,
    pub layers: Vec<Vec<Bottleneck>>,
}

impl ResNet {
    pub fn new(b: &mut LayerBuilder) -> Result<Self, WeightsError> {
        let relu = Activation::Relu;
        let stem = b.conv(ConvSpec::bn("body.conv1", "body.bn1", 3, 64, 7, 2, relu))?;
        let mut layers = Vec::new();
        let mut cin = 64;
        for (l, (&blocks, &width)) in [3usize, 4, 6, 3]
            .iter()
            .zip(&[64usize, 128, 256, 512])
            .enumerate()
        {
            let cout = width * 4;
            let mut layer = Vec::new();
            for i in 0..blocks {
                let p = format!("body.layer{}.{i}", l + 1);
                let stride = if i == 0 && l > 0 { 2 } else { 1 };
                let names = |n: usize| (format!("{p}.conv{n}"), format!("{p}.bn{n}"));
                let ((c1, b1), (c2, b2), (c3, b3)) = (names(1), names(2), names(3));
                let convs = vec![
                    b.conv(ConvSpec::bn(&c1, &b1, cin, width, 1, 1, relu))?,
                    b.conv(ConvSpec::bn(&c2, &b2, width, width, 3, stride, relu))?,
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
                    let (d, dn) = (format!("{p}.downsample.0"), format!("{p}.downsample.1"));
                    let spec = ConvSpec::bn(&d, &dn, cin, cout, 1, stride, Activation::Identity);
                    Some(b.conv(spec)?)
                } else {
                    None
                };
                layer.push(Bottleneck { convs, downsample });
                cin = cout;
            }
            layers.push(layer);
        }
        Ok(ResNet { stem, layers })
    }

    /// The C2…C5 maps (layer1…layer4).
    pub fn forward(&self, x: Tensor<4>) -> [Tensor<4>; 4] {
        let x = self.stem.forward(x);
        let pool = MaxPoolOptions::new([3, 3])
            .with_stride([2, 2])
            .with_padding([1, 1]);
        let mut x = max_pool2d(x, pool);
        let mut out = Vec::with_capacity(4);
        for layer in &self.layers {
            for block in layer {
                let y = block.convs.iter().fold(x.clone(), |y, c| c.forward(y));
                let identity = match &block.downsample {
                    Some(d) => d.forward(x),
                    None => x,
                };
                x = burn::tensor::activation::relu(y + identity);
            }
            out.push(x.clone());
        }
        let [c2, c3, c4, c5]: [Tensor<4>; 4] = match out.try_into() {
            Ok(a) => a,
            Err(_) => unreachable!("ResNet-50 has four layers"),
        };
        [c2, c3, c4, c5]
    }

    pub fn layers<'s>(&'s self, out: &mut Vec<&'s ConvBn>) {
        out.push(&self.stem);
        for block in self.layers.iter().flatten() {
            out.extend(&block.convs);
            out.extend(&block.downsample);
        }
    }
}
