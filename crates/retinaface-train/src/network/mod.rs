//! RetinaFace in burn, built from the same [`ModelConfig`] as the detector and named as its
//! weight files are, so any weights the detector loads start a run and every run exports to
//! the detector's safetensors.

mod backbone;
mod calibrate;
mod export;
mod layers;
mod neck;

pub use backbone::{MobileNet, ResNet};
pub use calibrate::{calibrate_batch_norm, calibrated_tensors};
pub use export::{export_folded, export_unfolded};
pub use layers::{
    record_batch_norm_inputs, tensor, BnMode, ChannelStats, ConvBn, LayerBuilder, BN_EPS,
};
pub use neck::{upsample_nearest, Fpn, Ssh};

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use retinaface::config::{Backbone, ModelConfig};
use retinaface::model::ConvSpec;
use retinaface::weights::{NamedTensors, WeightsError};

/// The network's raw outputs for a batch, anchors in the detector's order.
#[derive(Debug, Clone)]
pub struct HeadOutput {
    /// `[B, N, 2]` class logits (background, face).
    pub class: Tensor<3>,
    /// `[B, N, 4]` box offsets.
    pub boxes: Tensor<3>,
    /// `[B, N, 10]` landmark offsets.
    pub landmarks: Tensor<3>,
}

/// Backbone → FPN → SSH per level → class / box / landmark heads per level.
#[derive(Module, Debug)]
pub struct RetinaFaceNet {
    pub mobilenet: Option<MobileNet>,
    pub resnet: Option<ResNet>,
    pub fpn: Fpn,
    pub ssh: Vec<Ssh>,
    pub class_heads: Vec<ConvBn>,
    pub box_heads: Vec<ConvBn>,
    pub landmark_heads: Vec<ConvBn>,
    /// Anchors per cell on each level.
    pub anchors: Vec<usize>,
}

/// A network with the configuration and the layer specs it was built from.
#[derive(Debug, Clone)]
pub struct Model {
    pub net: RetinaFaceNet,
    pub config: ModelConfig,
    /// Every convolution in build order: the names and shapes the export writes.
    pub specs: Vec<ConvSpec>,
    /// How the BatchNorm layers train.
    pub bn_mode: BnMode,
}

impl Model {
    /// A freshly initialised network (PyTorch's default initialisation, drawn from `seed`).
    pub fn scratch(config: &ModelConfig, device: &Device, seed: u64) -> Result<Self, WeightsError> {
        Self::build(config, LayerBuilder::scratch(device, seed))
    }

    /// A network holding `tensors` (the port's names, BatchNorm folded or not).
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
        let (mobilenet, resnet) = match config.backbone {
            Backbone::MobileNet025 => (Some(MobileNet::new(&mut b)?), None),
            Backbone::ResNet50 => (None, Some(ResNet::new(&mut b)?)),
        };
        let ch = config.fpn_channels;
        let slope = config.neck_slope();
        let stage_ch: Vec<usize> = config.anchors.steps[..config.backbone_levels()]
            .iter()
            .map(|&s| config.backbone_channels(s).unwrap_or(0))
            .collect();
        let fpn = Fpn::new(&mut b, &stage_ch, ch, slope, config.has_p6())?;
        let levels = config.levels();
        let ssh = (1..=levels)
            .map(|i| Ssh::new(&mut b, &format!("ssh{i}"), ch, slope))
            .collect::<Result<Vec<_>, _>>()?;
        let anchors: Vec<usize> = (0..levels).map(|l| config.anchors.per_cell(l)).collect();
        let mut heads = |name: &str, per: usize| {
            (0..levels)
                .map(|l| {
                    b.conv(ConvSpec::head(
                        &format!("{name}.{l}.conv1x1"),
                        ch,
                        anchors[l] * per,
                    ))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let class_heads = heads("ClassHead", 2)?;
        let box_heads = heads("BboxHead", 4)?;
        let landmark_heads = heads("LandmarkHead", 10)?;
        let bn_mode = b.bn_mode();
        let net = RetinaFaceNet {
            mobilenet,
            resnet,
            fpn,
            ssh,
            class_heads,
            box_heads,
            landmark_heads,
            anchors,
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
        for layer in self.layers() {
            if let Some(bn) = &layer.bn {
                bn.running_mean.value_sync();
                bn.running_var.value_sync();
            }
        }
    }

    /// `[B, 3, H, W]` BGR minus the mean → head outputs over all anchors.
    pub fn forward(&self, x: Tensor<4>) -> HeadOutput {
        let c = match (&self.mobilenet, &self.resnet) {
            (Some(m), _) => m.forward(x),
            (None, Some(r)) => r.forward(x),
            (None, None) => unreachable!("a network has one backbone"),
        };
        let backbone_levels = self.fpn.lateral.len();
        let stages = c[4 - backbone_levels..].to_vec();
        let pyramid = self.fpn.forward(stages);
        let context: Vec<Tensor<4>> = pyramid
            .into_iter()
            .zip(&self.ssh)
            .map(|(p, s)| s.forward(p))
            .collect();
        let head = |convs: &[ConvBn], per: usize| {
            let parts: Vec<Tensor<3>> = convs
                .iter()
                .zip(&context)
                .map(|(conv, x)| {
                    let y = conv.forward(x.clone());
                    let [b, c, h, w] = y.dims();
                    y.permute([0, 2, 3, 1]).reshape([b, h * w * c / per, per])
                })
                .collect();
            Tensor::cat(parts, 1)
        };
        HeadOutput {
            class: head(&self.class_heads, 2),
            boxes: head(&self.box_heads, 4),
            landmarks: head(&self.landmark_heads, 10),
        }
    }

    /// Every layer in build order (the order of [`Model::specs`]).
    pub fn layers(&self) -> Vec<&ConvBn> {
        let mut out = Vec::new();
        if let Some(m) = &self.mobilenet {
            m.layers(&mut out);
        }
        if let Some(r) = &self.resnet {
            r.layers(&mut out);
        }
        self.fpn.layers(&mut out);
        for s in &self.ssh {
            s.layers(&mut out);
        }
        out.extend(&self.class_heads);
        out.extend(&self.box_heads);
        out.extend(&self.landmark_heads);
        out
    }
}
