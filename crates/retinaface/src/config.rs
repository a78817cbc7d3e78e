//! The model configuration: the one source of truth for the network's shape, its anchors and
//! its box coding, read by the inference engine and the trainer alike.

use serde::{Deserialize, Serialize};

/// The feature extractor in front of the FPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backbone {
    /// MobileNetV1 with width multiplier 0.25 (stages end at 64 / 128 / 256 channels).
    #[serde(rename = "mobilenet0.25")]
    MobileNet025,
    /// torchvision's ResNet-50 (stages C3–C5: 512 / 1024 / 2048 channels).
    #[serde(rename = "resnet50")]
    ResNet50,
    /// torchvision's ResNet-101 (the ResNet-50 layout with 23 blocks in layer3).
    #[serde(rename = "resnet101")]
    ResNet101,
    /// torchvision's ResNet-152 (8 blocks in layer2, 36 in layer3).
    #[serde(rename = "resnet152")]
    ResNet152,
}

impl Backbone {
    /// Bottleneck blocks per ResNet layer (`layer1…layer4`); `None` for MobileNet.
    pub fn resnet_blocks(self) -> Option<[usize; 4]> {
        match self {
            Backbone::MobileNet025 => None,
            Backbone::ResNet50 => Some([3, 4, 6, 3]),
            Backbone::ResNet101 => Some([3, 4, 23, 3]),
            Backbone::ResNet152 => Some([3, 8, 36, 3]),
        }
    }
}

/// The detector family: what follows the backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// RetinaFace: FPN (C3–C5, or C2–C5 plus P6), SSH context modules, 1×1 heads with
    /// softmax scores, boxes and five landmarks.
    #[default]
    #[serde(rename = "retinaface")]
    RetinaFace,
    /// DF²S²: feature-fusion pyramid (transposed-convolution attention, max-pooled top levels),
    /// shared four-convolution subnets with sigmoid scores and boxes, no landmarks, and a
    /// segmentation head used in training only.
    #[serde(rename = "df2s2")]
    Df2s2,
}

impl Family {
    fn is_retinaface(&self) -> bool {
        *self == Family::RetinaFace
    }
}

fn square() -> Vec<f32> {
    vec![1.0]
}

fn is_square(r: &[f32]) -> bool {
    r == [1.0]
}

/// Anchor layout: one level per step, square anchors of the given sizes (in input pixels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnchorConfig {
    /// Feature stride of each level.
    pub steps: Vec<usize>,
    /// Anchor side lengths per level.
    pub sizes: Vec<Vec<f32>>,
    /// Aspect ratios (height / width, area kept) of every size; anchors per cell = sizes ×
    /// ratios, ordered size-major. Square only unless given.
    #[serde(default = "square", skip_serializing_if = "is_square")]
    pub ratios: Vec<f32>,
}

impl AnchorConfig {
    /// The port's anchors: steps 8/16/32, sizes [16,32] [64,128] [256,512].
    pub fn port() -> Self {
        AnchorConfig {
            steps: vec![8, 16, 32],
            sizes: vec![vec![16.0, 32.0], vec![64.0, 128.0], vec![256.0, 512.0]],
            ratios: square(),
        }
    }

    /// The paper's anchors: P2–P6 (steps 4…64), three sizes per level a third of an octave
    /// apart, from 16 px on P2 to 406 px on P6 (102,300 anchors at 640×640, 75 % on P2).
    pub fn paper() -> Self {
        let steps = vec![4, 8, 16, 32, 64];
        let sizes = steps
            .iter()
            .map(|&s| {
                (0..3)
                    .map(|k| (4 * s) as f32 * 2f32.powf(k as f32 / 3.0))
                    .collect()
            })
            .collect();
        AnchorConfig {
            steps,
            sizes,
            ratios: square(),
        }
    }

    /// DF²S²'s anchors: six levels (steps 4…128), one size of 4× the step, aspect ratios 1
    /// and 1.5 (the taller box for profile faces).
    pub fn df2s2() -> Self {
        let steps = vec![4, 8, 16, 32, 64, 128];
        let sizes = steps.iter().map(|&s| vec![(4 * s) as f32]).collect();
        AnchorConfig {
            steps,
            sizes,
            ratios: vec![1.0, 1.5],
        }
    }

    /// Anchors per cell on `level`.
    pub fn per_cell(&self, level: usize) -> usize {
        self.sizes[level].len() * self.ratios.len()
    }

    /// Width and height of every anchor of a cell on `level`, in output order.
    pub fn shapes(&self, level: usize) -> impl Iterator<Item = (f32, f32)> + '_ {
        self.sizes[level].iter().flat_map(move |&s| {
            self.ratios.iter().map(move |&r| {
                let k = r.sqrt();
                (s / k, s * k)
            })
        })
    }
}

/// Everything that fixes the network and the meaning of its outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// RetinaFace or DF²S² (not written for RetinaFace, so files of the port's networks keep
    /// the bytes they had before families existed).
    #[serde(default, skip_serializing_if = "Family::is_retinaface")]
    pub family: Family,
    pub backbone: Backbone,
    /// FPN, SSH and head width.
    pub fpn_channels: usize,
    pub anchors: AnchorConfig,
    /// Box-coding variances (centre, size).
    pub variances: [f32; 2],
    /// Per-channel input mean, in BGR order, subtracted from 0–255 pixels.
    pub mean_bgr: [f32; 3],
    /// Deformable 3×3 convolutions in the FPN merges and the context modules (the paper's
    /// heavy RetinaFace).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deformable: bool,
    /// One set of 1×1 heads shared by every level (the paper's) instead of one per level (the
    /// port's). DF²S²'s subnets are always shared.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared_heads: bool,
    /// The dense regression branch (SPEC §1.7): per-anchor mesh, camera and light
    /// parameters and the mesh decoder (RetinaFace only). Files without it load as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<crate::mesh::decoder::DecoderSpec>,
}

impl ModelConfig {
    /// The port's MobileNet-0.25 RetinaFace (the embedded default model).
    pub fn mobilenet025() -> Self {
        ModelConfig {
            family: Family::RetinaFace,
            backbone: Backbone::MobileNet025,
            fpn_channels: 64,
            anchors: AnchorConfig::port(),
            variances: [0.1, 0.2],
            mean_bgr: [104.0, 117.0, 123.0],
            deformable: false,
            shared_heads: false,
            mesh: None,
        }
    }

    /// The port's ResNet-50 RetinaFace.
    pub fn resnet50() -> Self {
        ModelConfig {
            backbone: Backbone::ResNet50,
            fpn_channels: 256,
            ..Self::mobilenet025()
        }
    }

    /// The paper's ResNet-50 RetinaFace: FPN P2–P6 (P6 from a stride-2 3×3 convolution on
    /// C5) with three anchors per cell, deformable 3×3 convolutions in the FPN merges and the
    /// context modules, one set of heads shared by every level.
    pub fn resnet50_paper() -> Self {
        ModelConfig {
            anchors: AnchorConfig::paper(),
            deformable: true,
            shared_heads: true,
            ..Self::resnet50()
        }
    }

    /// This network with the dense regression branch (SPEC §1.7's decoder sizes).
    pub fn with_mesh(self) -> Self {
        ModelConfig {
            mesh: Some(crate::mesh::decoder::DecoderSpec::default()),
            ..self
        }
    }

    /// The paper's design on the light backbone (64 channels), trainable on a CPU.
    pub fn mobilenet025_paper() -> Self {
        ModelConfig {
            anchors: AnchorConfig::paper(),
            deformable: true,
            shared_heads: true,
            ..Self::mobilenet025()
        }
    }

    /// DF²S² on ResNet-50: a 256-wide feature-fusion pyramid over C2–C5 plus two max-pooled
    /// levels, shared subnets of 256 channels.
    pub fn df2s2_resnet50() -> Self {
        ModelConfig {
            family: Family::Df2s2,
            anchors: AnchorConfig::df2s2(),
            ..Self::resnet50()
        }
    }

    /// DF²S² on MobileNet-0.25, 64 channels wide, so that it trains on a CPU.
    pub fn df2s2_mobilenet025() -> Self {
        ModelConfig {
            family: Family::Df2s2,
            anchors: AnchorConfig::df2s2(),
            ..Self::mobilenet025()
        }
    }

    /// The networks the project ships configs for (`configs/`): the port's two, the paper's
    /// RetinaFace on both backbones, DF²S² on both backbones.
    pub fn families() -> [(&'static str, ModelConfig); 6] {
        [
            ("mobilenet0.25-port", Self::mobilenet025()),
            ("resnet50-port", Self::resnet50()),
            ("resnet50-paper", Self::resnet50_paper()),
            ("mobilenet0.25-paper", Self::mobilenet025_paper()),
            ("df2s2-resnet50", Self::df2s2_resnet50()),
            ("df2s2-mobilenet0.25", Self::df2s2_mobilenet025()),
        ]
    }

    /// Output channels of the backbone at stride `step` (4, 8, 16 or 32): the C2…C5 maps.
    pub fn backbone_channels(&self, step: usize) -> Option<usize> {
        let c = match (self.backbone, step) {
            (Backbone::MobileNet025, 4) => 32,
            (Backbone::MobileNet025, 8) => 64,
            (Backbone::MobileNet025, 16) => 128,
            (Backbone::MobileNet025, 32) => 256,
            (_, 4) => 256,
            (_, 8) => 512,
            (_, 16) => 1024,
            (_, 32) => 2048,
            _ => return None,
        };
        Some(c)
    }

    /// The pyramid's levels read from the backbone (steps up to 32), finest first.
    pub fn backbone_levels(&self) -> usize {
        self.anchors.steps.iter().filter(|&&s| s <= 32).count()
    }

    /// Whether the coarsest level is P6, a stride-2 3×3 convolution on C5 (the paper's FPN).
    pub fn has_p6(&self) -> bool {
        self.anchors.steps.last() == Some(&64)
    }

    /// Whether this is the port's network (three levels, steps 8/16/32, SSH, a 1×1 head per
    /// level, MobileNet-0.25 or ResNet-50), for which the engine has a fused plan.
    pub fn is_port(&self) -> bool {
        self.family == Family::RetinaFace
            && self.anchors.steps == [8, 16, 32]
            && !self.deformable
            && !self.shared_heads
            && matches!(self.backbone, Backbone::MobileNet025 | Backbone::ResNet50)
    }

    /// Whether the heads predict five landmarks per anchor.
    pub fn has_landmarks(&self) -> bool {
        self.family == Family::RetinaFace
    }

    /// Score values per anchor: 2 softmax logits (RetinaFace) or 1 sigmoid logit (DF²S²).
    pub fn score_values(&self) -> usize {
        match self.family {
            Family::RetinaFace => 2,
            Family::Df2s2 => 1,
        }
    }

    /// A one-line summary: family, backbone, levels, anchors and heads.
    pub fn summary(&self) -> String {
        let family = match self.family {
            Family::RetinaFace => "RetinaFace",
            Family::Df2s2 => "DF²S²",
        };
        let backbone = match self.backbone {
            Backbone::MobileNet025 => "MobileNet-0.25",
            Backbone::ResNet50 => "ResNet-50",
            Backbone::ResNet101 => "ResNet-101",
            Backbone::ResNet152 => "ResNet-152",
        };
        let steps = &self.anchors.steps;
        let levels = steps
            .iter()
            .map(|s| format!("P{}", s.trailing_zeros()))
            .collect::<Vec<_>>()
            .join(" ");
        let sizes = self
            .anchors
            .sizes
            .iter()
            .map(|l| {
                l.iter()
                    .map(|s| format!("{}", s.round()))
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect::<Vec<_>>()
            .join(", ");
        let ratios = self
            .anchors
            .ratios
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let heads = match (self.family, self.shared_heads) {
            (Family::Df2s2, _) => "shared 4-conv subnets, sigmoid score + box".to_owned(),
            (_, true) => "shared 1×1 heads, softmax score + box + 5 landmarks".to_owned(),
            (_, false) => "1×1 heads per level, softmax score + box + 5 landmarks".to_owned(),
        };
        let neck = match self.family {
            Family::RetinaFace if self.deformable => "FPN + SSH, deformable 3×3",
            Family::RetinaFace => "FPN + SSH",
            Family::Df2s2 => "feature-fusion pyramid",
        };
        format!(
            "{family} {backbone}, {neck} ({} channels); levels {levels} (steps {steps:?}); \
             anchor sizes {sizes}, ratios {ratios} ({} per cell on the first level); heads: {heads}",
            self.fpn_channels,
            self.anchors.per_cell(0)
        )
    }

    /// Slope of the FPN and SSH activations: the port uses LeakyReLU 0.1 up to 64 channels
    /// and plain ReLU above.
    pub fn neck_slope(&self) -> f32 {
        if self.fpn_channels <= 64 {
            0.1
        } else {
            0.0
        }
    }

    /// Number of pyramid levels (and anchor levels).
    pub fn levels(&self) -> usize {
        self.anchors.steps.len()
    }

    /// Check internal consistency: the steps are consecutive powers of two, from 4 or 8 up to
    /// 32 (C3–C5 or C2–C5) or 64 (plus P6; DF²S²: up to 128, max-pooled), one size list per
    /// step, positive sizes and ratios.
    pub fn validate(&self) -> Result<(), String> {
        let steps = &self.anchors.steps;
        let top_ok = match self.family {
            Family::RetinaFace => matches!(steps.last(), Some(32 | 64)),
            Family::Df2s2 => matches!(steps.last(), Some(32 | 64 | 128)),
        };
        let pyramid_ok = matches!(steps.first(), Some(4 | 8))
            && top_ok
            && steps.windows(2).all(|w| w[1] == 2 * w[0]);
        if !pyramid_ok {
            return Err(format!(
                "anchor steps {steps:?} must be consecutive powers of two from 4 or 8 to 32 or 64 \
                 (128 for DF²S²)"
            ));
        }
        let positive = |v: &f32| v.is_finite() && *v > 0.0;
        if self.anchors.ratios.is_empty() || !self.anchors.ratios.iter().all(positive) {
            return Err(format!(
                "anchor ratios {:?} must be positive",
                self.anchors.ratios
            ));
        }
        if !self.anchors.sizes.iter().flatten().all(positive) {
            return Err("anchor sizes must be positive".into());
        }
        if self.anchors.sizes.len() != steps.len() {
            return Err(format!(
                "{} anchor size lists for {} steps",
                self.anchors.sizes.len(),
                steps.len()
            ));
        }
        if !self.fpn_channels.is_multiple_of(4) || self.fpn_channels == 0 {
            return Err(format!(
                "fpn_channels {} must be a positive multiple of 4",
                self.fpn_channels
            ));
        }
        if self.anchors.sizes.iter().any(|s| s.is_empty()) {
            return Err("every anchor level needs at least one size".into());
        }
        let shared = self.shared_heads || self.family == Family::Df2s2;
        if shared
            && (0..self.levels()).any(|l| self.anchors.per_cell(l) != self.anchors.per_cell(0))
        {
            return Err(
                "shared heads need the same number of anchors per cell on every level".into(),
            );
        }
        if self.family == Family::Df2s2 && self.deformable {
            return Err("DF²S² has no deformable convolutions".into());
        }
        if let Some(decoder) = &self.mesh {
            if self.family != Family::RetinaFace {
                return Err("the mesh branch belongs to RetinaFace".into());
            }
            decoder.validate(crate::mesh::hierarchy::Hierarchy::canonical())?;
        }
        Ok(())
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self::mobilenet025()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mesh_branch_is_optional_in_files() {
        // Without the branch a configuration is written as before: no `mesh` key.
        let plain = serde_json::to_string(&ModelConfig::mobilenet025()).unwrap();
        assert!(!plain.contains("mesh"));
        let back: ModelConfig = serde_json::from_str(&plain).unwrap();
        assert_eq!(back, ModelConfig::mobilenet025());
        let meshed = ModelConfig::mobilenet025_paper().with_mesh();
        meshed.validate().unwrap();
        let json = serde_json::to_string(&meshed).unwrap();
        assert!(
            json.contains(r#""mesh":{"latent":128,"channels":[16,32,64],"order":6}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), meshed);
        // RetinaFace only, and sizes that fit the hierarchy.
        assert!(ModelConfig::df2s2_mobilenet025()
            .with_mesh()
            .validate()
            .is_err());
        let mut wrong = ModelConfig::mobilenet025().with_mesh();
        if let Some(d) = wrong.mesh.as_mut() {
            d.channels = vec![8, 8];
        }
        assert!(wrong.validate().unwrap_err().contains("levels"));
    }
}
