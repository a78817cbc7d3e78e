//! The network of one [`ModelConfig`]: backbone, FPN, SSH context modules and heads, composed
//! from engine ops. Weights arrive as [`NamedTensors`] with the port's names; BatchNorm is
//! folded into the convolutions here.

mod builder;
mod mobilenet;
mod neck;
mod resnet;

pub use builder::{folded, take, ConvSpec};

use crate::config::{Backbone, ModelConfig};
use crate::engine::{Conv2d, Feature};
use crate::weights::{NamedTensors, WeightsError};
use builder::Builder;
use neck::{Fpn, Ssh};

/// Values per anchor in the fused head output: 2 class logits, 4 box offsets, 10 landmark offsets.
pub const HEAD_VALUES: usize = 16;

// One per network: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum BackboneNet {
    MobileNet(mobilenet::MobileNet),
    ResNet(resnet::ResNet),
}

/// The whole RetinaFace network, ready to run.
pub struct Network {
    config: ModelConfig,
    backbone: BackboneNet,
    fpn: Fpn,
    ssh: Vec<Ssh>,
    /// Per level: class, box and landmark 1×1 convolutions fused into one (see [`HeadLayout`]).
    heads: Vec<Conv2d>,
}

/// Where each quantity sits in a level's fused head output (per pixel, `A · 16` values).
#[derive(Debug, Clone, Copy)]
pub struct HeadLayout {
    /// Anchors per cell.
    pub anchors: usize,
}

impl HeadLayout {
    /// Offset of anchor `a`'s two class logits.
    pub fn class(&self, a: usize) -> usize {
        2 * a
    }
    /// Offset of anchor `a`'s four box offsets.
    pub fn bbox(&self, a: usize) -> usize {
        2 * self.anchors + 4 * a
    }
    /// Offset of anchor `a`'s ten landmark offsets.
    pub fn landmarks(&self, a: usize) -> usize {
        6 * self.anchors + 10 * a
    }
    /// Values per pixel.
    pub fn width(&self) -> usize {
        HEAD_VALUES * self.anchors
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
    /// The fused head outputs per level (read them after [`Network::forward`]).
    pub heads: [Feature; 3],
    pub(crate) scratch: Vec<f32>,
}

impl Network {
    /// Build the network of `config` from named tensors (BatchNorm folded when present).
    /// Every tensor is checked against the shape the config expects.
    pub fn new(config: &ModelConfig, tensors: &NamedTensors) -> Result<Self, WeightsError> {
        config.validate().map_err(WeightsError::Mismatch)?;
        if !config.is_port_pyramid() {
            return Err(WeightsError::Mismatch(format!(
                "the inference engine runs the three-level pyramid (steps 8/16/32); this model's \
                 steps are {:?}",
                config.anchors.steps
            )));
        }
        let mut b = Builder::new(Some(tensors));
        Self::build(config, &mut b)
    }

    /// The convolutions of `config` in forward order, as the weight mapping sees them.
    pub fn conv_specs(config: &ModelConfig) -> Vec<ConvSpec> {
        let mut b = Builder::new(None);
        // Without tensors the builder cannot fail.
        let _ = Self::build(config, &mut b);
        b.into_specs()
    }

    fn build(config: &ModelConfig, b: &mut Builder) -> Result<Self, WeightsError> {
        let backbone = match config.backbone {
            Backbone::MobileNet025 => BackboneNet::MobileNet(mobilenet::MobileNet::new(b)?),
            Backbone::ResNet50 => BackboneNet::ResNet(resnet::ResNet::new(b)?),
        };
        let slope = config.neck_slope();
        let ch = config.fpn_channels;
        let fpn = Fpn::new(b, config.stage_channels(), ch, slope)?;
        let ssh = (1..=config.levels())
            .map(|i| Ssh::new(b, &format!("ssh{i}"), ch, ch, slope))
            .collect::<Result<Vec<_>, _>>()?;
        let heads = Self::build_heads(config, b)?;
        Ok(Network {
            config: config.clone(),
            backbone,
            fpn,
            ssh,
            heads,
        })
    }

    /// The port's separate class / box / landmark heads, concatenated per level into one 1×1
    /// convolution so each level's outputs come from one GEMM, already in decoding order.
    fn build_heads(config: &ModelConfig, b: &mut Builder) -> Result<Vec<Conv2d>, WeightsError> {
        let ch = config.fpn_channels;
        let mut parts: Vec<Vec<(Vec<f32>, Vec<f32>)>> = vec![Vec::new(); config.levels()];
        for (head, per_anchor) in [("ClassHead", 2), ("BboxHead", 4), ("LandmarkHead", 10)] {
            for (level, part) in parts.iter_mut().enumerate() {
                let a = config.anchors.per_cell(level);
                let spec = ConvSpec::head(&format!("{head}.{level}.conv1x1"), ch, a * per_anchor);
                part.push(b.load(&spec)?);
            }
        }
        Ok(parts
            .into_iter()
            .enumerate()
            .map(|(level, part)| {
                let a = config.anchors.per_cell(level);
                let weight: Vec<f32> = part.iter().flat_map(|(w, _)| w.iter().copied()).collect();
                let bias: Vec<f32> = part.iter().flat_map(|(_, b)| b.iter().copied()).collect();
                Conv2d::from_oihw(
                    &weight,
                    &bias,
                    (a * HEAD_VALUES, ch, 1),
                    1,
                    0,
                    false,
                    crate::engine::Activation::Identity,
                )
            })
            .collect())
    }

    /// The configuration this network was built for.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Layout of level `level`'s fused head output.
    pub fn head_layout(&self, level: usize) -> HeadLayout {
        HeadLayout {
            anchors: self.config.anchors.per_cell(level),
        }
    }

    /// Run on an NHWC input (BGR minus mean); results land in `ws.heads`.
    pub fn forward(&self, input: &Feature, ws: &mut Workspace) {
        match &self.backbone {
            BackboneNet::MobileNet(m) => m.forward(input, ws),
            BackboneNet::ResNet(r) => r.forward(input, ws),
        }
        self.fpn.forward(ws);
        for (level, ssh) in self.ssh.iter().enumerate() {
            ssh.forward(level, ws);
        }
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
    let mut b = Builder::new(Some(tensors));
    let mut out = NamedTensors::new();
    for spec in Network::conv_specs(config) {
        let (w, bias) = b.load(&spec)?;
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
