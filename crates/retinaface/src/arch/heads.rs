//! The heads: RetinaFace's 1×1 score / box / landmark convolutions, DF²S²'s shared subnets.

use super::{ConvSpec, GraphBuilder, LevelHeads, Value};
use crate::config::ModelConfig;
use crate::engine::Activation;

/// RetinaFace: `ClassHead`, `BboxHead` and `LandmarkHead` 1×1 convolutions, one per level
/// (`<Head>.<level>.conv1x1`, the port) or one shared by all (`<Head>.conv1x1`, the paper).
pub(super) fn retinaface(
    g: &mut GraphBuilder,
    config: &ModelConfig,
    context: &[Value],
) -> Vec<LevelHeads> {
    let ch = config.fpn_channels;
    let levels = context.len();
    let mut outputs: Vec<[Value; 3]> = vec![[0; 3]; levels];
    for (k, (head, per)) in [("ClassHead", 2), ("BboxHead", 4), ("LandmarkHead", 10)]
        .into_iter()
        .enumerate()
    {
        if config.shared_heads {
            let a = config.anchors.per_cell(0);
            let layer = g.layer(ConvSpec::head(&format!("{head}.conv1x1"), ch, a * per));
            for (l, &x) in context.iter().enumerate() {
                outputs[l][k] = g.op(super::Op::Conv { layer, input: x });
            }
        } else {
            for (l, &x) in context.iter().enumerate() {
                let a = config.anchors.per_cell(l);
                let spec = ConvSpec::head(&format!("{head}.{l}.conv1x1"), ch, a * per);
                outputs[l][k] = g.conv(spec, x);
            }
        }
    }
    outputs
        .into_iter()
        .enumerate()
        .map(|(l, [score, boxes, landmarks])| LevelHeads {
            score,
            boxes,
            landmarks: Some(landmarks),
            anchors: config.anchors.per_cell(l),
        })
        .collect()
}

/// The mesh branch's heads on the context features: 1×1 convolutions with P_ST, P_cam and
/// P_ill for every anchor, per level or shared like the other heads.
pub(super) fn mesh(config: &ModelConfig, context: &[Value]) -> Option<super::MeshBranch> {
    let decoder = config.mesh.clone()?;
    let per = crate::mesh::anchor_params(&decoder);
    let ch = config.fpn_channels;
    let (heads, levels) = if config.shared_heads {
        let a = config.anchors.per_cell(0);
        let spec = ConvSpec::head("MeshHead.conv1x1", ch, a * per);
        (vec![spec], context.iter().map(|&x| (0, x)).collect())
    } else {
        let heads = (0..context.len())
            .map(|l| {
                let a = config.anchors.per_cell(l);
                ConvSpec::head(&format!("MeshHead.{l}.conv1x1"), ch, a * per)
            })
            .collect();
        (
            heads,
            context.iter().enumerate().map(|(l, &x)| (l, x)).collect(),
        )
    };
    Some(super::MeshBranch {
        heads,
        levels,
        per_anchor: per,
        decoder,
    })
}

/// Convolutions in each DF²S² subnet before its output layer.
const SUBNET_DEPTH: usize = 4;

/// DF²S²: two subnets shared by every level, each four 3×3 convolutions with ReLU
/// (`cls_subnet.{j}`, `box_subnet.{j}`) then a 3×3 output (`cls_score`: A sigmoid logits;
/// `box_pred`: 4·A offsets); the segmentation head (`seg_pred`, one logit, training only)
/// reads the classification subnet's features. The heads and the segmentation logits.
pub(super) fn df2s2(
    g: &mut GraphBuilder,
    config: &ModelConfig,
    pyramid: &[Value],
) -> (Vec<LevelHeads>, Vec<Value>) {
    let ch = config.fpn_channels;
    let a = config.anchors.per_cell(0);
    let relu = Activation::Relu;
    let id = Activation::Identity;
    let tower = |g: &mut GraphBuilder, name: &str| -> Vec<usize> {
        (0..SUBNET_DEPTH)
            .map(|j| g.layer(ConvSpec::plain(&format!("{name}.{j}"), ch, ch, 3, relu)))
            .collect()
    };
    let cls_tower = tower(g, "cls_subnet");
    let cls_score = g.layer(ConvSpec::plain("cls_score", ch, a, 3, id));
    let box_tower = tower(g, "box_subnet");
    let box_pred = g.layer(ConvSpec::plain("box_pred", ch, 4 * a, 3, id));
    let seg_pred = g.layer(ConvSpec::plain("seg_pred", ch, 1, 3, id));
    let run = |g: &mut GraphBuilder, layers: &[usize], mut x: Value| {
        for &layer in layers {
            x = g.op(super::Op::Conv { layer, input: x });
        }
        x
    };
    let mut heads = Vec::new();
    let mut seg = Vec::new();
    for &p in pyramid {
        let cls = run(g, &cls_tower, p);
        let score = run(g, &[cls_score], cls);
        let boxes = run(g, &box_tower, p);
        let boxes = run(g, &[box_pred], boxes);
        seg.push(run(g, &[seg_pred], cls));
        heads.push(LevelHeads {
            score,
            boxes,
            landmarks: None,
            anchors: a,
        });
    }
    (heads, seg)
}
