//! The network in burn, instantiated from the same description ([`retinaface::arch::Graph`])
//! as the detector's engine and named as its weight files are, so any weights the detector
//! loads start a run and every run exports to the detector's safetensors.

mod calibrate;
mod deform;
mod export;
mod interpreter;
mod layers;
mod mesh;

pub use calibrate::{calibrate_batch_norm, calibrated_tensors};
pub use deform::deform_conv2d;
pub use export::{export_folded, export_unfolded};
pub use interpreter::upsample_nearest;
pub use layers::{
    record_batch_norm_inputs, record_layer_inputs, tensor, BnMode, ChannelStats, ConvBn,
    LayerBuilder, BN_EPS,
};
pub(crate) use layers::{values, BACKBONE};
pub use mesh::MeshDecoder;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use retinaface::arch::{Graph, Value};
use retinaface::config::ModelConfig;
use retinaface::model::ConvSpec;
use retinaface::weights::{NamedTensors, WeightsError};
use std::sync::Arc;

/// The network's raw outputs for a batch, anchors in the detector's order.
#[derive(Debug, Clone)]
pub struct HeadOutput {
    /// `[B, N, S]` score logits: S = 2 (background, face; softmax) or 1 (face; sigmoid).
    pub class: Tensor<3>,
    /// `[B, N, 4]` box offsets.
    pub boxes: Tensor<3>,
    /// `[B, N, 10]` landmark offsets, for networks with a landmark head.
    pub landmarks: Option<Tensor<3>>,
    /// Per level, `[B, 1, H, W]` segmentation logits (DF²S², when asked for).
    pub segmentation: Vec<Tensor<4>>,
    /// `[B, N, P]` mesh branch parameters per anchor (P_ST, P_cam, P_ill), for networks with
    /// the branch.
    pub mesh: Option<Tensor<3>>,
    /// Anchors per level, finest first (they sum to N).
    pub levels: Vec<usize>,
}

/// The layers of a description with their weights; the description itself is shared.
#[derive(Module, Debug)]
pub struct RetinaFaceNet {
    /// One per layer of the description, in its order.
    pub layers: Vec<ConvBn>,
    /// The mesh branch's heads (one per head layer of [`retinaface::arch::MeshBranch`]).
    pub mesh_heads: Vec<ConvBn>,
    /// The mesh branch's decoder.
    pub mesh_decoder: Option<MeshDecoder>,
    #[module(skip)]
    pub graph: Arc<Graph>,
}

/// A network with the configuration and the layer specs it was built from.
#[derive(Debug, Clone)]
pub struct Model {
    pub net: RetinaFaceNet,
    pub config: ModelConfig,
    /// Every layer in build order: the names and shapes the export writes.
    pub specs: Vec<ConvSpec>,
    /// How the BatchNorm layers train.
    pub bn_mode: BnMode,
}

impl Model {
    /// A freshly initialised network (PyTorch's default initialisation, drawn from `seed`).
    pub fn scratch(config: &ModelConfig, device: &Device, seed: u64) -> Result<Self, WeightsError> {
        Self::build(config, LayerBuilder::scratch(device, seed))
    }

    /// A network holding `tensors` (the description's names, BatchNorm folded or not).
    pub fn from_tensors(
        config: &ModelConfig,
        tensors: &NamedTensors,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        Self::build(config, LayerBuilder::from_tensors(device, tensors))
    }

    /// Build with a prepared layer builder (to force a BatchNorm mode, say).
    pub fn build(config: &ModelConfig, mut b: LayerBuilder) -> Result<Self, WeightsError> {
        config.validate().map_err(WeightsError::Mismatch)?;
        let graph = Graph::new(config);
        let layers = graph
            .layers
            .iter()
            .map(|spec| b.conv(spec.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        // The mesh branch after every other layer (so networks without it draw the same
        // numbers): from the file when it holds the branch, else drawn with the outputs near
        // zero, i.e. the canonical face, seen frontally and lit from the camera.
        let (mut mesh_heads, mut mesh_decoder) = (Vec::new(), None);
        if let Some(branch) = &graph.mesh {
            for spec in &branch.heads {
                b = b.with_bias_prior(&spec.name, 0.0);
                mesh_heads.push(b.conv_or_drawn(spec.clone())?);
            }
            let stored = b.tensors().filter(|t| {
                t.contains_key(&format!("{}.fc.weight", retinaface::mesh::decoder::PREFIX))
            });
            let seed = b.next_seed();
            mesh_decoder = Some(MeshDecoder::new(
                &branch.decoder,
                stored,
                &b.device(),
                seed,
            )?);
        }
        let bn_mode = b.bn_mode();
        let net = RetinaFaceNet {
            layers,
            mesh_heads,
            mesh_decoder,
            graph: Arc::new(graph),
        };
        Ok(Model {
            net,
            config: config.clone(),
            specs: b.into_specs(),
            bn_mode,
        })
    }
}

impl RetinaFaceNet {
    /// Brings every BatchNorm's running statistics up to date. The framework keeps a layer's
    /// latest update pending until its next forward, and what a record or an export reads
    /// is the value before it: without this, checkpoints and exports lag one step behind.
    pub fn sync_running_stats(&self) {
        for layer in &self.layers {
            if let Some(bn) = &layer.bn {
                bn.running_mean.value_sync();
                bn.running_var.value_sync();
            }
        }
    }

    /// `[B, 3, H, W]` BGR minus the mean → head outputs over all anchors.
    pub fn forward(&self, x: Tensor<4>) -> HeadOutput {
        self.forward_with(x, false)
    }

    /// As [`RetinaFaceNet::forward`], with the segmentation logits when `segmentation` (and
    /// the network has a segmentation head).
    pub fn forward_with(&self, x: Tensor<4>, segmentation: bool) -> HeadOutput {
        let g = &self.graph;
        let mut outputs = g.head_values();
        if segmentation {
            outputs.extend(&g.segmentation);
        }
        if let Some(branch) = &g.mesh {
            outputs.extend(branch.levels.iter().map(|&(_, context)| context));
        }
        let values = interpreter::run(g, &self.layers, x, &outputs);
        let get = |v: Value| match &values[v] {
            Some(t) => t.clone(),
            None => unreachable!("head output {v} was not computed"),
        };
        // `[B, A·per, H, W]` per level → `[B, H·W·A, per]`, levels concatenated.
        let head = |pick: &dyn Fn(&retinaface::arch::LevelHeads) -> Option<Value>, per: usize| {
            let parts: Vec<Tensor<3>> = g
                .levels
                .iter()
                .filter_map(pick)
                .map(|v| {
                    let y = get(v);
                    let [b, c, h, w] = y.dims();
                    y.permute([0, 2, 3, 1]).reshape([b, h * w * c / per, per])
                })
                .collect();
            (!parts.is_empty()).then(|| Tensor::cat(parts, 1))
        };
        let s = g.score_values;
        let (Some(class), Some(boxes)) = (head(&|l| Some(l.score), s), head(&|l| Some(l.boxes), 4))
        else {
            unreachable!("a network has at least one level")
        };
        let levels = g
            .levels
            .iter()
            .map(|l| {
                let [_, c, h, w] = get(l.score).dims();
                h * w * c / s
            })
            .collect();
        let mesh = g.mesh.as_ref().map(|branch| {
            let parts: Vec<Tensor<3>> = branch
                .levels
                .iter()
                .map(|&(head, context)| {
                    let y = self.mesh_heads[head].forward(get(context));
                    let [b, c, h, w] = y.dims();
                    let per = branch.per_anchor;
                    y.permute([0, 2, 3, 1]).reshape([b, h * w * c / per, per])
                })
                .collect();
            Tensor::cat(parts, 1)
        });
        HeadOutput {
            mesh,
            levels,
            class,
            boxes,
            landmarks: head(&|l| l.landmarks, 10),
            segmentation: if segmentation {
                g.segmentation.iter().map(|&v| get(v)).collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Every layer in build order (the order of [`Model::specs`]): the description's, then
    /// the mesh heads.
    pub fn layers(&self) -> Vec<&ConvBn> {
        self.layers.iter().chain(&self.mesh_heads).collect()
    }
}
