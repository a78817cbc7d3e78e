//! The network of a [`ModelConfig`], described once and independently of any backend: its
//! layers (names and weight shapes, in the order of the weight mapping) and the ops that
//! connect them. The inference engine ([`crate::model`]) and the trainer (burn) each
//! instantiate this same [`Graph`]; a new architecture is written here and nowhere else.
//!
//! ```text
//! input ─ backbone (MobileNet-0.25 | ResNet-50/101/152) ─ C2…C5
//!       ─ neck (FPN + SSH context, 3×3s optionally deformable | DF²S²'s fusion pyramid)
//!       ─ heads per level (1×1 per level or shared | DF²S²'s shared 4-conv subnets)
//! ```

mod backbone;
mod heads;
mod layer;
mod neck;

pub use layer::{ConvKind, ConvSpec};

use crate::config::{Family, ModelConfig};

/// A value of the graph: 0 is the input image (`[3, H, W]`, BGR minus the mean); value
/// `v > 0` is the output of `ops[v - 1]`.
pub type Value = usize;

/// One operation. Convolutions refer to a layer of [`Graph::layers`]; several ops may share a
/// layer (shared heads).
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `layers[layer]` (its BatchNorm and activation included) on `input`.
    Conv { layer: usize, input: Value },
    /// The deformable `layers[layer]` on `input`, sampling at the offsets that
    /// `layers[offsets]` computes from the same input.
    DeformConv {
        layer: usize,
        offsets: usize,
        input: Value,
    },
    /// The transposed `layers[layer]` on `input`, its output cropped to the size of `like`
    /// (a 2× upsampling of an odd-sized map is one row or column too large).
    ConvTranspose {
        layer: usize,
        input: Value,
        like: Value,
    },
    /// 3×3 max-pooling, stride 2, padding 1 (an `n`-pixel side becomes `ceil(n / 2)`).
    MaxPool { input: Value },
    /// `a + b`, then ReLU if `relu` (a residual connection).
    Add { a: Value, b: Value, relu: bool },
    /// `a + nearest(b)`, `b` upsampled to `a`'s size by PyTorch's `nearest` rule (the FPN's
    /// top-down pathway).
    UpsampleAdd { a: Value, b: Value },
    /// `a · b + a` element-wise (DF²S²'s F-block: `b` attends to `a`).
    Gate { a: Value, b: Value },
    /// Channel concatenation.
    Concat { inputs: Vec<Value> },
}

impl Op {
    /// The values this op reads.
    pub fn inputs(&self) -> Vec<Value> {
        match self {
            Op::Conv { input, .. } | Op::DeformConv { input, .. } | Op::MaxPool { input } => {
                vec![*input]
            }
            Op::ConvTranspose { input, like, .. } => vec![*input, *like],
            Op::Add { a, b, .. } | Op::UpsampleAdd { a, b } | Op::Gate { a, b } => vec![*a, *b],
            Op::Concat { inputs } => inputs.clone(),
        }
    }
}

/// What a pyramid level outputs: per pixel and anchor, score logits, box offsets and (for
/// RetinaFace) landmark offsets, each a value of `A · n` channels, anchor-major.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelHeads {
    pub score: Value,
    pub boxes: Value,
    pub landmarks: Option<Value>,
    /// Anchors per cell.
    pub anchors: usize,
}

/// The dense regression branch (SPEC §1.7): on each level's context features, a 1×1
/// convolution gives every anchor its P_ST, P_cam and P_ill (anchor-major, like the other
/// heads); the mesh decoder turns P_ST into a mesh. Its layers are kept out of
/// [`Graph::layers`] and [`Graph::ops`]: a detector evaluates them only at the anchors it
/// keeps, and networks without the branch are unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshBranch {
    /// The head layers: one per level (`MeshHead.<l>.conv1x1`) or one shared
    /// (`MeshHead.conv1x1`).
    pub heads: Vec<ConvSpec>,
    /// Per level, finest first: the index of its head layer and the context value it reads.
    pub levels: Vec<(usize, Value)>,
    /// Values per anchor (P_ST, P_cam, P_ill).
    pub per_anchor: usize,
    /// The decoder's sizes.
    pub decoder: crate::mesh::decoder::DecoderSpec,
}

/// A network: layers, ops in execution order, and the outputs per level.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// Every layer with weights, in the order of the weight mapping (the order the port's
    /// ONNX export lists its convolutions, for the port's networks).
    pub layers: Vec<ConvSpec>,
    pub ops: Vec<Op>,
    /// Per pyramid level, finest first.
    pub levels: Vec<LevelHeads>,
    /// Score values per anchor: 2 (softmax) or 1 (sigmoid).
    pub score_values: usize,
    /// DF²S²'s segmentation logits per level (one channel), for training only.
    pub segmentation: Vec<Value>,
    /// The dense regression branch, when the configuration has it.
    pub mesh: Option<MeshBranch>,
}

impl Graph {
    /// The network of `config` (which must be valid: see [`ModelConfig::validate`]).
    pub fn new(config: &ModelConfig) -> Self {
        let mut g = GraphBuilder::default();
        let c = backbone::build(&mut g, config);
        let levels = config.levels();
        let mut mesh = None;
        let (heads, segmentation) = match config.family {
            Family::RetinaFace => {
                let pyramid = neck::fpn(&mut g, config, &c);
                let context: Vec<Value> = pyramid
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| neck::ssh(&mut g, config, &format!("ssh{}", i + 1), p))
                    .collect();
                mesh = heads::mesh(config, &context);
                (heads::retinaface(&mut g, config, &context), Vec::new())
            }
            Family::Df2s2 => {
                let pyramid = neck::ffp(&mut g, config, &c);
                heads::df2s2(&mut g, config, &pyramid)
            }
        };
        debug_assert_eq!(heads.len(), levels);
        Graph {
            layers: g.layers,
            ops: g.ops,
            levels: heads,
            score_values: config.score_values(),
            segmentation,
            mesh,
        }
    }

    /// The values needed to compute `outputs`, as a mask over all values.
    pub fn needed(&self, outputs: &[Value]) -> Vec<bool> {
        let mut need = vec![false; self.ops.len() + 1];
        for &v in outputs {
            need[v] = true;
        }
        for v in (1..=self.ops.len()).rev() {
            if need[v] {
                for i in self.ops[v - 1].inputs() {
                    need[i] = true;
                }
            }
        }
        need
    }

    /// The head outputs of every level, in level order (score, boxes, landmarks).
    pub fn head_values(&self) -> Vec<Value> {
        self.levels
            .iter()
            .flat_map(|l| [Some(l.score), Some(l.boxes), l.landmarks])
            .flatten()
            .collect()
    }
}

/// Appends layers and ops.
#[derive(Default)]
pub(crate) struct GraphBuilder {
    layers: Vec<ConvSpec>,
    ops: Vec<Op>,
}

impl GraphBuilder {
    /// Add a layer; its index.
    fn layer(&mut self, spec: ConvSpec) -> usize {
        self.layers.push(spec);
        self.layers.len() - 1
    }

    /// Add an op; the value it produces.
    fn op(&mut self, op: Op) -> Value {
        self.ops.push(op);
        self.ops.len()
    }

    /// A new layer applied to `input`.
    fn conv(&mut self, spec: ConvSpec, input: Value) -> Value {
        let layer = self.layer(spec);
        self.op(Op::Conv { layer, input })
    }

    /// A new layer applied to `input`, deformable (with its offset layer right after it) when
    /// `deformable`.
    fn conv_maybe_deformable(&mut self, spec: ConvSpec, input: Value, deformable: bool) -> Value {
        if !deformable {
            return self.conv(spec, input);
        }
        let spec = ConvSpec {
            kind: ConvKind::Deformable,
            ..spec
        };
        let offsets = spec.offsets();
        let layer = self.layer(spec);
        let offsets = self.layer(offsets);
        self.op(Op::DeformConv {
            layer,
            offsets,
            input,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_layers_keep_the_weight_mapping_order() {
        let g = Graph::new(&ModelConfig::mobilenet025());
        let names: Vec<&str> = g.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names[0], "body.stage1.0.0");
        let fpn = names.iter().position(|n| n.starts_with("fpn")).unwrap();
        assert_eq!(
            &names[fpn..fpn + 5],
            [
                "fpn.output1.0",
                "fpn.output2.0",
                "fpn.output3.0",
                "fpn.merge2.0",
                "fpn.merge1.0"
            ]
        );
        assert_eq!(names.last(), Some(&"LandmarkHead.2.conv1x1"));
        assert_eq!(g.layers.len(), 27 + 5 + 15 + 9);
        assert_eq!(g.levels.len(), 3);
    }

    #[test]
    fn every_family_is_a_valid_graph() {
        for (_, config) in ModelConfig::families() {
            config.validate().unwrap();
            let g = Graph::new(&config);
            assert_eq!(g.levels.len(), config.levels());
            for (i, op) in g.ops.iter().enumerate() {
                assert!(op.inputs().iter().all(|&v| v <= i), "{op:?} reads ahead");
            }
            let need = g.needed(&g.head_values());
            assert!(need[0], "the heads depend on the input");
            let mut names: Vec<&str> = g.layers.iter().map(|l| l.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), g.layers.len(), "layer names are unique");
        }
        let paper = Graph::new(&ModelConfig::resnet50_paper());
        assert!(paper.layers.iter().any(|l| l.kind == ConvKind::Deformable));
        // The mesh branch adds heads on the context values and nothing else.
        for config in [
            ModelConfig::mobilenet025(),
            ModelConfig::mobilenet025_paper(),
        ] {
            let plain = Graph::new(&config);
            let meshed = Graph::new(&config.clone().with_mesh());
            assert_eq!((&meshed.layers, &meshed.ops), (&plain.layers, &plain.ops));
            let mesh = meshed.mesh.unwrap();
            assert_eq!(mesh.per_anchor, 128 + 7 + 9);
            assert_eq!(mesh.levels.len(), config.levels());
            assert_eq!(mesh.heads.len(), if config.shared_heads { 1 } else { 3 });
            for (l, &(head, context)) in mesh.levels.iter().enumerate() {
                let a = config.anchors.per_cell(l);
                assert_eq!(mesh.heads[head].cout, a * mesh.per_anchor);
                // The context a level's mesh head reads is what its score head reads.
                let Op::Conv { input, .. } = &plain.ops[plain.levels[l].score - 1] else {
                    panic!("a score head is a convolution")
                };
                assert_eq!(context, *input);
            }
            assert!(plain.mesh.is_none());
        }
        let df2s2 = Graph::new(&ModelConfig::df2s2_resnet50());
        assert_eq!(df2s2.segmentation.len(), 6);
        assert!(df2s2
            .levels
            .iter()
            .all(|l| l.landmarks.is_none() && l.anchors == 2));
    }
}
