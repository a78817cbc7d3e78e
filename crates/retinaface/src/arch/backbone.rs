//! The backbones, laid out and named as the port's weight files have them: MobileNetV1 ×0.25
//! (`body.stage{1,2,3}`) and torchvision's ResNets (`body.conv1`, `body.layer1…4`).

use super::{ConvSpec, GraphBuilder, Op, Value};
use crate::config::{Backbone, ModelConfig};
use crate::engine::Activation;

/// The C2…C5 maps (strides 4, 8, 16, 32) of `config`'s backbone.
pub(super) fn build(g: &mut GraphBuilder, config: &ModelConfig) -> [Value; 4] {
    match config.backbone.resnet_blocks() {
        None => mobilenet(g),
        Some(blocks) => resnet(g, blocks),
    }
}

/// `(input channels, output channels, stride)` of each depthwise-separable block, per stage.
const MOBILENET_BLOCKS: [&[(usize, usize, usize)]; 3] = [
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

/// Blocks of stage1 that run at stride 2 or 4: C2 is the output of the third.
const MOBILENET_C2_BLOCKS: usize = 3;

/// MobileNetV1 ×0.25 with LeakyReLU 0.1: a 3×3 stride-2 stem to 8 channels, then
/// depthwise-separable blocks (`<block>.0` depthwise, `<block>.3` pointwise).
fn mobilenet(g: &mut GraphBuilder) -> [Value; 4] {
    let act = Activation::Leaky(0.1);
    debug_assert_eq!(Backbone::MobileNet025.resnet_blocks(), None);
    let mut x = g.conv(
        ConvSpec::bn("body.stage1.0.0", "body.stage1.0.1", 3, 8, 3, 2, act),
        0,
    );
    let mut c = [0; 4];
    for (s, blocks) in MOBILENET_BLOCKS.iter().enumerate() {
        let stage = format!("body.stage{}", s + 1);
        // stage1's index 0 is the stem.
        let first = usize::from(s == 0);
        for (i, &(cin, cout, stride)) in blocks.iter().enumerate() {
            let p = format!("{stage}.{}", i + first);
            let dw = ConvSpec::depthwise(&format!("{p}.0"), &format!("{p}.1"), cin, stride, act);
            x = g.conv(dw, x);
            let pw = ConvSpec::bn(&format!("{p}.3"), &format!("{p}.4"), cin, cout, 1, 1, act);
            x = g.conv(pw, x);
            if s == 0 && i + 1 == MOBILENET_C2_BLOCKS {
                c[0] = x;
            }
        }
        c[s + 1] = x;
    }
    c
}

/// torchvision's ResNet (v1.5: the stride on the 3×3) with `blocks` bottlenecks per layer.
fn resnet(g: &mut GraphBuilder, blocks: [usize; 4]) -> [Value; 4] {
    let relu = Activation::Relu;
    let id = Activation::Identity;
    let stem = g.conv(ConvSpec::bn("body.conv1", "body.bn1", 3, 64, 7, 2, relu), 0);
    let mut x = g.op(Op::MaxPool { input: stem });
    let mut c = [0; 4];
    let mut cin = 64;
    for (l, (&n, width)) in blocks.iter().zip([64usize, 128, 256, 512]).enumerate() {
        let cout = width * 4;
        for i in 0..n {
            let p = format!("body.layer{}.{i}", l + 1);
            let stride = if i == 0 && l > 0 { 2 } else { 1 };
            let spec = |n: usize, ci: usize, co: usize, k: usize, s: usize, act: Activation| {
                ConvSpec::bn(
                    &format!("{p}.conv{n}"),
                    &format!("{p}.bn{n}"),
                    ci,
                    co,
                    k,
                    s,
                    act,
                )
            };
            let y = g.conv(spec(1, cin, width, 1, 1, relu), x);
            let y = g.conv(spec(2, width, width, 3, stride, relu), y);
            let y = g.conv(spec(3, width, cout, 1, 1, id), y);
            let identity = if i == 0 {
                let d = ConvSpec::bn(
                    &format!("{p}.downsample.0"),
                    &format!("{p}.downsample.1"),
                    cin,
                    cout,
                    1,
                    stride,
                    id,
                );
                g.conv(d, x)
            } else {
                x
            };
            x = g.op(Op::Add {
                a: y,
                b: identity,
                relu: true,
            });
            cin = cout;
        }
        c[l] = x;
    }
    c
}
