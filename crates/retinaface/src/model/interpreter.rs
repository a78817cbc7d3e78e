//! Any [`Graph`] run op by op: the engine's plan for every network without a fused one (the
//! paper's RetinaFace, DF²S², ResNet-101/152). Maps are freed into a pool after their last
//! use, so memory follows the widest point of the network, not its sum.

use super::builder::{conv, folded};
use super::Workspace;
use crate::arch::{ConvKind, Graph, Op, Value};
use crate::engine::{
    add_upsampled_nearest, gate, max_pool_3x3_s2, Conv2d, ConvTranspose2x2, DeformConv2d, Feature,
};
use crate::weights::{NamedTensors, WeightsError};

enum Layer {
    Conv(Conv2d),
    Deform(DeformConv2d),
    Transposed(ConvTranspose2x2),
}

pub(crate) struct Interpreter {
    graph: Graph,
    layers: Vec<Layer>,
    /// Whether each value feeds a head output (the segmentation branch does not).
    needed: Vec<bool>,
    /// Per value, the last op that reads it (`usize::MAX` for head outputs).
    last_use: Vec<usize>,
    /// Per level, the values concatenated into its head output.
    heads: Vec<Vec<Value>>,
    /// Per level, the context value the mesh branch reads (kept after a pass), for networks
    /// with the branch.
    context: Vec<Value>,
}

impl Interpreter {
    pub fn new(graph: Graph, tensors: &NamedTensors) -> Result<Self, WeightsError> {
        let layers = graph
            .layers
            .iter()
            .map(|spec| {
                let (w, b) = folded(tensors, spec)?;
                Ok(match spec.kind {
                    ConvKind::Dense | ConvKind::Depthwise => Layer::Conv(conv(spec, &w, &b)),
                    ConvKind::Deformable => Layer::Deform(DeformConv2d::from_oihw(
                        &w,
                        &b,
                        (spec.cout, spec.cin, spec.k),
                        spec.stride,
                        spec.pad,
                        spec.act,
                    )),
                    ConvKind::Transposed if spec.k == 2 && spec.stride == 2 && spec.pad == 0 => {
                        Layer::Transposed(ConvTranspose2x2::from_iohw(
                            &w, &b, spec.cin, spec.cout, spec.act,
                        ))
                    }
                    ConvKind::Transposed => {
                        return Err(WeightsError::Mismatch(format!(
                            "`{}`: the engine runs 2×2 stride-2 transposed convolutions only",
                            spec.name
                        )))
                    }
                })
            })
            .collect::<Result<Vec<_>, WeightsError>>()?;
        let outputs = graph.head_values();
        let needed = graph.needed(&outputs);
        let mut last_use = vec![0; graph.ops.len() + 1];
        for (i, op) in graph.ops.iter().enumerate() {
            if needed[i + 1] {
                for v in op.inputs() {
                    last_use[v] = i;
                }
            }
        }
        let context: Vec<Value> = graph
            .mesh
            .iter()
            .flat_map(|m| m.levels.iter().map(|&(_, v)| v))
            .collect();
        for &v in outputs.iter().chain(&context) {
            last_use[v] = usize::MAX;
        }
        let heads = graph
            .levels
            .iter()
            .map(|l| {
                [Some(l.score), Some(l.boxes), l.landmarks]
                    .into_iter()
                    .flatten()
                    .collect()
            })
            .collect();
        Ok(Interpreter {
            graph,
            layers,
            needed,
            last_use,
            heads,
            context,
        })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The value holding level `level`'s context features after a pass (networks with the
    /// mesh branch).
    pub fn context(&self, level: usize) -> Option<Value> {
        self.context.get(level).copied()
    }

    /// Run on an NHWC input; each level's outputs land in `ws.heads[level]` as
    /// `[score | boxes | landmarks]` per pixel.
    pub fn forward(&self, input: &Feature, ws: &mut Workspace) {
        let n = self.graph.ops.len();
        ws.values.resize_with(n + 1, Feature::default);
        // The previous pass's kept context maps go back to the pool.
        for &v in &self.context {
            let kept = std::mem::take(&mut ws.values[v]);
            if kept.data.capacity() > 0 {
                ws.pool.push(kept);
            }
        }
        for (i, op) in self.graph.ops.iter().enumerate() {
            let v = i + 1;
            if !self.needed[v] {
                continue;
            }
            let mut out = ws.pool.pop().unwrap_or_default();
            self.run(op, input, ws, &mut out);
            ws.values[v] = out;
            for r in op.inputs() {
                if r != 0 && self.last_use[r] == i {
                    let dead = std::mem::take(&mut ws.values[r]);
                    ws.pool.push(dead);
                }
            }
        }
        ws.heads.resize_with(self.heads.len(), Feature::default);
        for (parts, dst) in self.heads.iter().zip(ws.heads.iter_mut()) {
            concat(parts.iter().map(|&v| &ws.values[v]), dst);
        }
        // Head outputs go back to the pool for the next pass.
        for &v in self.heads.iter().flatten() {
            let dead = std::mem::take(&mut ws.values[v]);
            ws.pool.push(dead);
        }
    }

    fn run(&self, op: &Op, input: &Feature, ws: &mut Workspace, out: &mut Feature) {
        let values = &ws.values;
        let get = |v: Value| if v == 0 { input } else { &values[v] };
        match op {
            Op::Conv { layer, input } => match &self.layers[*layer] {
                Layer::Conv(c) => c.forward(get(*input), out, &mut ws.scratch),
                _ => unreachable!("a Conv op names a convolution layer"),
            },
            Op::DeformConv {
                layer,
                offsets,
                input,
            } => {
                let (Layer::Deform(d), Layer::Conv(o)) =
                    (&self.layers[*layer], &self.layers[*offsets])
                else {
                    unreachable!("a DeformConv op names a deformable layer and its offsets")
                };
                let x = get(*input);
                o.forward(x, &mut ws.t1, &mut ws.scratch);
                d.forward(x, &ws.t1, out, &mut ws.t2, &mut ws.scratch);
            }
            Op::ConvTranspose { layer, input, like } => {
                let Layer::Transposed(t) = &self.layers[*layer] else {
                    unreachable!("a ConvTranspose op names a transposed layer")
                };
                let like = get(*like);
                t.forward(
                    get(*input),
                    (like.h, like.w),
                    out,
                    &mut ws.t1,
                    &mut ws.scratch,
                );
            }
            Op::MaxPool { input } => max_pool_3x3_s2(get(*input), out),
            Op::Add { a, b, relu } => {
                copy(get(*a), out);
                for (o, &x) in out.data.iter_mut().zip(&get(*b).data) {
                    *o += x;
                    if *relu {
                        *o = o.max(0.0);
                    }
                }
            }
            Op::UpsampleAdd { a, b } => {
                copy(get(*a), out);
                add_upsampled_nearest(out, get(*b));
            }
            Op::Gate { a, b } => {
                copy(get(*a), out);
                gate(out, get(*b));
            }
            Op::Concat { inputs } => concat(inputs.iter().map(|&v| get(v)), out),
        }
    }
}

/// Maps of one size concatenated along the channels into `out`.
fn concat<'f>(parts: impl Iterator<Item = &'f Feature> + Clone, out: &mut Feature) {
    let c: usize = parts.clone().map(|p| p.c).sum();
    let Some(first) = parts.clone().next() else {
        return;
    };
    out.reshape(first.h, first.w, c);
    let mut at = 0;
    for p in parts {
        assert_eq!(
            (p.h, p.w),
            (first.h, first.w),
            "concatenated maps differ in size"
        );
        for (d, s) in out.data.chunks_exact_mut(c).zip(p.data.chunks_exact(p.c)) {
            d[at..at + p.c].copy_from_slice(s);
        }
        at += p.c;
    }
}

fn copy(src: &Feature, dst: &mut Feature) {
    dst.reshape(src.h, src.w, src.c);
    dst.data.copy_from_slice(&src.data);
}
