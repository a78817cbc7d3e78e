//! What joins the backbone to the heads: RetinaFace's FPN and SSH context modules, DF²S²'s
//! feature-fusion pyramid.

use super::{ConvKind, ConvSpec, GraphBuilder, Op, Value};
use crate::config::ModelConfig;
use crate::engine::Activation;

/// The backbone maps the pyramid reads (steps up to 32), finest first, and their channels.
fn inputs(config: &ModelConfig, c: &[Value; 4]) -> Vec<(Value, usize)> {
    config.anchors.steps[..config.backbone_levels()]
        .iter()
        .map(|&s| {
            let idx = s.trailing_zeros() as usize - 2;
            (c[idx], config.backbone_channels(s).unwrap_or(0))
        })
        .collect()
}

/// 1×1 convolutions with BatchNorm bringing each backbone map to the neck's width
/// (`<prefix>{i}.0`, `<prefix>{i}.1`, finest first).
fn laterals(
    g: &mut GraphBuilder,
    config: &ModelConfig,
    stages: &[(Value, usize)],
    prefix: &str,
) -> Vec<Value> {
    let act = Activation::leaky(config.neck_slope());
    let ch = config.fpn_channels;
    stages
        .iter()
        .enumerate()
        .map(|(i, &(x, cin))| {
            let (conv, bn) = (
                format!("{prefix}{}.0", i + 1),
                format!("{prefix}{}.1", i + 1),
            );
            g.conv(ConvSpec::bn(&conv, &bn, cin, ch, 1, 1, act), x)
        })
        .collect()
}

/// FPN: 1×1 laterals (`fpn.output{i}`) to a common width, nearest upsample + add top-down,
/// 3×3 merges (`fpn.merge{i}`; deformable in the paper's network); P6 (when the steps reach
/// 64) a stride-2 3×3 convolution on C5 (`fpn.p6`). Pyramid levels, finest first.
pub(super) fn fpn(g: &mut GraphBuilder, config: &ModelConfig, c: &[Value; 4]) -> Vec<Value> {
    let act = Activation::leaky(config.neck_slope());
    let ch = config.fpn_channels;
    let stages = inputs(config, c);
    let n = stages.len();
    let mut p = laterals(g, config, &stages, "fpn.output");
    // Top-down (merge2 before merge1, as the port lists them).
    for i in (0..n - 1).rev() {
        let sum = g.op(Op::UpsampleAdd {
            a: p[i],
            b: p[i + 1],
        });
        let (conv, bn) = (
            format!("fpn.merge{}.0", i + 1),
            format!("fpn.merge{}.1", i + 1),
        );
        let spec = ConvSpec::bn(&conv, &bn, ch, ch, 3, 1, act);
        p[i] = g.conv_maybe_deformable(spec, sum, config.deformable);
    }
    if config.has_p6() {
        let (c5, cin) = stages[n - 1];
        p.push(g.conv(ConvSpec::bn("fpn.p6.0", "fpn.p6.1", cin, ch, 3, 2, act), c5));
    }
    p
}

/// SSH on one level: 3×3 (out/2) ‖ 5×5 as two 3×3 (out/4) ‖ 7×7 as three 3×3 sharing the
/// first (out/4), concatenated, ReLU (applied by each branch's last layer, which is the same).
pub(super) fn ssh(g: &mut GraphBuilder, config: &ModelConfig, p: &str, x: Value) -> Value {
    let leaky = Activation::leaky(config.neck_slope());
    let relu = Activation::Relu;
    let ch = config.fpn_channels;
    let (half, quarter) = (ch / 2, ch / 4);
    let mut conv = |name: &str, ci: usize, co: usize, act: Activation, input: Value| {
        let (c, n) = (format!("{p}.{name}.0"), format!("{p}.{name}.1"));
        let spec = ConvSpec::bn(&c, &n, ci, co, 3, 1, act);
        g.conv_maybe_deformable(spec, input, config.deformable)
    };
    let c3 = conv("conv3X3", ch, half, relu, x);
    let c5_1 = conv("conv5X5_1", ch, quarter, leaky, x);
    let c5 = conv("conv5X5_2", quarter, quarter, relu, c5_1);
    let c7_2 = conv("conv7X7_2", quarter, quarter, leaky, c5_1);
    let c7 = conv("conv7x7_3", quarter, quarter, relu, c7_2);
    g.op(Op::Concat {
        inputs: vec![c3, c5, c7],
    })
}

/// DF²S²'s feature-fusion pyramid: 1×1 laterals (`ffp.lateral{i}`) to a common width, then
/// top-down F-blocks `φ_i ← φ_i · Ψ(φ_{i+1}) + φ_i` with Ψ (`ffp.up{i}`) a stride-2 transposed
/// convolution that doubles the resolution; the levels above C5 (steps 64, 128) by successive
/// stride-2 max-pools of the last. Levels, finest first.
pub(super) fn ffp(g: &mut GraphBuilder, config: &ModelConfig, c: &[Value; 4]) -> Vec<Value> {
    let ch = config.fpn_channels;
    let stages = inputs(config, c);
    let n = stages.len();
    let mut phi = laterals(g, config, &stages, "ffp.lateral");
    for i in (0..n - 1).rev() {
        let up = ConvSpec {
            name: format!("ffp.up{}", i + 1),
            bn: None,
            cin: ch,
            cout: ch,
            k: 2,
            stride: 2,
            pad: 0,
            kind: ConvKind::Transposed,
            act: Activation::Identity,
        };
        let layer = g.layer(up);
        let psi = g.op(Op::ConvTranspose {
            layer,
            input: phi[i + 1],
            like: phi[i],
        });
        phi[i] = g.op(Op::Gate { a: phi[i], b: psi });
    }
    while phi.len() < config.levels() {
        let top = phi[phi.len() - 1];
        phi.push(g.op(Op::MaxPool { input: top }));
    }
    phi
}
