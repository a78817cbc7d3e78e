//! The network of one [`ModelConfig`], instantiated from its description ([`crate::arch`])
//! on engine ops. Weights arrive as [`NamedTensors`] with the description's names; BatchNorm
//! is folded into the convolutions here.
//!
//! Two plans run a description: the port's networks (MobileNet-0.25 or ResNet-50, three
//! levels, SSH, a head per level) get a fused plan — row pipelines, SSH layers sharing an
//! input run as one, buffers reused in place — that takes its layers from the description in
//! order; every other network runs op by op ([`interpreter`]).

mod builder;
mod interpreter;
mod mobilenet;
mod neck;
mod resnet;

pub use crate::arch::ConvSpec;
pub use builder::{folded, take};

use crate::arch::Graph;
use crate::config::{Backbone, ModelConfig};
use crate::engine::{Conv2d, Feature};
use crate::mesh::branch::BranchNet;
use crate::weights::{NamedTensors, WeightsError};
use builder::Builder;
use interpreter::Interpreter;
use neck::{Fpn, Ssh};

// One per network: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum BackboneNet {
    MobileNet(mobilenet::MobileNet),
    ResNet(resnet::ResNet),
}

/// The port's network with fused layers.
struct PortPlan {
    backbone: BackboneNet,
    fpn: Fpn,
    ssh: Vec<Ssh>,
    /// Per level: class, box and landmark 1×1 convolutions fused into one (see [`HeadLayout`]).
    heads: Vec<Conv2d>,
}

#[allow(clippy::large_enum_variant)]
enum Plan {
    Port(PortPlan),
    Graph(Interpreter),
}

/// A whole network, ready to run.
pub struct Network {
    config: ModelConfig,
    plan: Plan,
    /// The dense regression branch, for models with one.
    mesh: Option<BranchNet>,
    /// Per level, the width and height of each anchor of a cell (computed once, read for
    /// every candidate of every pass).
    anchor_shapes: Vec<Vec<(f32, f32)>>,
}

/// Where each quantity sits in a level's head output: per pixel, the score logits of every
/// anchor, then their box offsets, then (RetinaFace) their landmark offsets.
#[derive(Debug, Clone, Copy)]
pub struct HeadLayout {
    /// Anchors per cell.
    pub anchors: usize,
    /// Score values per anchor: 2 (softmax) or 1 (sigmoid).
    pub scores: usize,
    /// Whether ten landmark offsets follow.
    pub landmarks: bool,
}

impl HeadLayout {
    /// Offset of anchor `a`'s score logits.
    pub fn class(&self, a: usize) -> usize {
        self.scores * a
    }
    /// Offset of anchor `a`'s four box offsets.
    pub fn bbox(&self, a: usize) -> usize {
        self.scores * self.anchors + 4 * a
    }
    /// Offset of anchor `a`'s ten landmark offsets (when [`HeadLayout::landmarks`]).
    pub fn landmarks(&self, a: usize) -> usize {
        (self.scores + 4) * self.anchors + 10 * a
    }
    /// Values per pixel.
    pub fn width(&self) -> usize {
        self.anchors * (self.scores + 4 + if self.landmarks { 10 } else { 0 })
    }
}

/// Buffers of one forward pass, reused across calls: after the first image of a size, a pass
/// allocates nothing.
#[derive(Default)]
pub struct Workspace {
    pub(crate) input: Feature,
    pub(crate) ping: Feature,
    pub(crate) pong: Feature,
    pub(crate) t1: Feature,
    pub(crate) t2: Feature,
    pub(crate) spare: Feature,
    pub(crate) stages: [Feature; 3],
    /// Per FPN level, the lateral before its merge; per SSH level, its temporary.
    /// Each buffer always gets the same size, so no pass re-grows (and re-zeroes) one a
    /// smaller layer shrank: that zeroing was 7 % of a pass.
    pub(crate) lateral: [Feature; 2],
    pub(crate) ssh_tmp: [Feature; 3],
    /// Row rings of each backbone stage, one set per band.
    pub(crate) bands: [Vec<crate::engine::RowRings>; 3],
    /// FPN outputs, for the levels whose merge could not write into the stage map.
    pub(crate) pyramid: [Feature; 3],
    /// Whether pyramid level `l` lives in `stages[l]` rather than `pyramid[l]`.
    pub(crate) pyramid_in_stages: [bool; 3],
    /// SSH outputs of the levels without a lateral buffer to reuse.
    pub(crate) context: [Feature; 3],
    /// The head outputs per level (read them after [`Network::forward`]).
    pub heads: Vec<Feature>,
    pub(crate) scratch: Vec<f32>,
    /// The interpreter's values and its pool of free maps.
    pub(crate) values: Vec<Feature>,
    pub(crate) pool: Vec<Feature>,
    /// The mesh decoder's buffers (empty until a detection asks for meshes).
    pub(crate) mesh: crate::mesh::decoder::DecodeScratch,
}

impl Workspace {
    /// Bytes held by the buffers (their capacity).
    pub fn bytes(&self) -> usize {
        let f = |x: &Feature| x.data.capacity() * 4;
        let singles = [
            &self.input,
            &self.ping,
            &self.pong,
            &self.t1,
            &self.t2,
            &self.spare,
        ];
        singles.iter().map(|x| f(x)).sum::<usize>()
            + self
                .stages
                .iter()
                .chain(&self.lateral)
                .chain(&self.ssh_tmp)
                .chain(&self.pyramid)
                .chain(&self.context)
                .chain(&self.heads)
                .chain(&self.values)
                .chain(&self.pool)
                .map(f)
                .sum::<usize>()
            + self
                .bands
                .iter()
                .flatten()
                .map(|r| r.bytes())
                .sum::<usize>()
            + self.scratch.capacity() * 4
            + self.mesh.bytes()
    }
}

impl Network {
    /// Build the network of `config` from named tensors (BatchNorm folded when present).
    /// Every tensor is checked against the shape the description expects.
    pub fn new(config: &ModelConfig, tensors: &NamedTensors) -> Result<Self, WeightsError> {
        config.validate().map_err(WeightsError::Mismatch)?;
        let graph = Graph::new(config);
        // No layer of the description among the tensors: another network's file.
        if !graph
            .layers
            .iter()
            .any(|l| tensors.contains_key(&format!("{}.weight", l.name)))
        {
            let names: Vec<&str> = tensors.keys().take(3).map(String::as_str).collect();
            return Err(WeightsError::NotRetinaFace(format!(
                "none of its {} tensors has a RetinaFace layer's name (first: {})",
                tensors.len(),
                names.join(", ")
            )));
        }
        let mesh = graph
            .mesh
            .as_ref()
            .map(|branch| BranchNet::new(branch, tensors))
            .transpose()?;
        let plan = if config.is_port() {
            Plan::Port(PortPlan::new(config, &graph, tensors)?)
        } else {
            Plan::Graph(Interpreter::new(graph, tensors)?)
        };
        let anchor_shapes = (0..config.levels())
            .map(|l| config.anchors.shapes(l).collect())
            .collect();
        Ok(Network {
            config: config.clone(),
            plan,
            mesh,
            anchor_shapes,
        })
    }

    /// The layers of `config` in the order of the weight mapping.
    pub fn conv_specs(config: &ModelConfig) -> Vec<ConvSpec> {
        Graph::new(config).layers
    }

    /// The configuration this network was built for.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Layout of level `level`'s head output.
    pub fn head_layout(&self, level: usize) -> HeadLayout {
        HeadLayout {
            anchors: self.config.anchors.per_cell(level),
            scores: self.config.score_values(),
            landmarks: self.config.has_landmarks(),
        }
    }

    /// Width and height (pixels) of each anchor of a cell on `level`, in output order.
    pub fn anchor_shapes(&self, level: usize) -> &[(f32, f32)] {
        &self.anchor_shapes[level]
    }

    /// The dense regression branch, for models with one.
    pub fn mesh(&self) -> Option<&BranchNet> {
        self.mesh.as_ref()
    }

    /// Level `level`'s context features of the last [`Network::forward`] in `ws` (what its
    /// heads read): always kept for a network with the mesh branch.
    pub fn context<'a>(&self, ws: &'a Workspace, level: usize) -> Option<&'a Feature> {
        let f = match &self.plan {
            Plan::Port(_) if level < ws.lateral.len() => &ws.lateral[level],
            Plan::Port(_) => ws.context.get(level)?,
            Plan::Graph(g) => ws.values.get(g.context(level)?)?,
        };
        (!f.data.is_empty()).then_some(f)
    }

    /// Whether this network runs on the fused plan of the port's networks.
    pub fn is_fused(&self) -> bool {
        matches!(self.plan, Plan::Port(_))
    }

    /// Run on an NHWC input (BGR minus mean); results land in `ws.heads`.
    pub fn forward(&self, input: &Feature, ws: &mut Workspace) {
        match &self.plan {
            Plan::Port(p) => p.forward(input, ws),
            Plan::Graph(g) => {
                debug_assert_eq!(g.graph().levels.len(), self.config.levels());
                g.forward(input, ws)
            }
        }
    }
}

impl PortPlan {
    fn new(
        config: &ModelConfig,
        graph: &Graph,
        tensors: &NamedTensors,
    ) -> Result<Self, WeightsError> {
        let mut b = Builder::new(tensors, &graph.layers);
        let backbone = match config.backbone {
            Backbone::MobileNet025 => BackboneNet::MobileNet(mobilenet::MobileNet::new(&mut b)?),
            _ => BackboneNet::ResNet(resnet::ResNet::new(&mut b)?),
        };
        let fpn = Fpn::new(&mut b)?;
        let ssh = (0..config.levels())
            .map(|_| Ssh::new(&mut b))
            .collect::<Result<Vec<_>, _>>()?;
        let heads = Self::heads(config, &mut b)?;
        if !b.done() {
            return Err(WeightsError::Mismatch(
                "the fused plan left layers of the description unused".to_owned(),
            ));
        }
        Ok(PortPlan {
            backbone,
            fpn,
            ssh,
            heads,
        })
    }

    /// The class, box and landmark heads (listed head-major in the description),
    /// concatenated per level into one 1×1 convolution so each level's outputs come from one
    /// GEMM, already in decoding order.
    fn heads(config: &ModelConfig, b: &mut Builder) -> Result<Vec<Conv2d>, WeightsError> {
        let levels = config.levels();
        let mut parts: Vec<Vec<(Vec<f32>, Vec<f32>)>> = vec![Vec::new(); levels];
        for _head in 0..3 {
            for part in parts.iter_mut() {
                let (_, w, bias) = b.next_loaded()?;
                part.push((w, bias));
            }
        }
        Ok(parts
            .into_iter()
            .map(|part| {
                let weight: Vec<f32> = part.iter().flat_map(|(w, _)| w.iter().copied()).collect();
                let bias: Vec<f32> = part.iter().flat_map(|(_, b)| b.iter().copied()).collect();
                let cout = bias.len();
                Conv2d::from_oihw(
                    &weight,
                    &bias,
                    (cout, config.fpn_channels, 1),
                    1,
                    0,
                    false,
                    crate::engine::Activation::Identity,
                )
            })
            .collect())
    }

    fn forward(&self, input: &Feature, ws: &mut Workspace) {
        match &self.backbone {
            BackboneNet::MobileNet(m) => m.forward(input, ws),
            BackboneNet::ResNet(r) => r.forward(input, ws),
        }
        self.fpn.forward(ws);
        for (level, ssh) in self.ssh.iter().enumerate() {
            ssh.forward(level, ws);
        }
        ws.heads.resize_with(self.heads.len(), Feature::default);
        for (level, head) in self.heads.iter().enumerate() {
            let ctx = if level < ws.lateral.len() {
                &ws.lateral[level]
            } else {
                &ws.context[level]
            };
            head.forward(ctx, &mut ws.heads[level], &mut ws.scratch);
        }
    }
}

/// The folded convolutions of `config` under the port's names (`<conv>.weight`, `<conv>.bias`),
/// every shape checked: what `convert` writes, whatever the source format.
pub fn folded_tensors(
    config: &ModelConfig,
    tensors: &NamedTensors,
) -> Result<NamedTensors, WeightsError> {
    let mut out = NamedTensors::new();
    for spec in Network::conv_specs(config) {
        let (w, bias) = folded(tensors, &spec)?;
        out.insert(
            format!("{}.weight", spec.name),
            crate::weights::Tensor::new(spec.weight_shape(), w),
        );
        out.insert(
            format!("{}.bias", spec.name),
            crate::weights::Tensor::new(vec![spec.cout], bias),
        );
    }
    Ok(out)
}
