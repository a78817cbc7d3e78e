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
}

/// Anchor layout: one level per step, square anchors of the given sizes (in input pixels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnchorConfig {
    /// Feature stride of each level.
    pub steps: Vec<usize>,
    /// Anchor side lengths per level (anchors per cell = sizes per level).
    pub sizes: Vec<Vec<f32>>,
}

impl AnchorConfig {
    /// The port's anchors: steps 8/16/32, sizes [16,32] [64,128] [256,512].
    pub fn port() -> Self {
        AnchorConfig {
            steps: vec![8, 16, 32],
            sizes: vec![vec![16.0, 32.0], vec![64.0, 128.0], vec![256.0, 512.0]],
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
        AnchorConfig { steps, sizes }
    }

    /// Anchors per cell on `level`.
    pub fn per_cell(&self, level: usize) -> usize {
        self.sizes[level].len()
    }
}

/// Everything that fixes the network and the meaning of its outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub backbone: Backbone,
    /// FPN, SSH and head width.
    pub fpn_channels: usize,
    pub anchors: AnchorConfig,
    /// Box-coding variances (centre, size).
    pub variances: [f32; 2],
    /// Per-channel input mean, in BGR order, subtracted from 0–255 pixels.
    pub mean_bgr: [f32; 3],
}

impl ModelConfig {
    /// The port's MobileNet-0.25 RetinaFace (the embedded default model).
    pub fn mobilenet025() -> Self {
        ModelConfig {
            backbone: Backbone::MobileNet025,
            fpn_channels: 64,
            anchors: AnchorConfig::port(),
            variances: [0.1, 0.2],
            mean_bgr: [104.0, 117.0, 123.0],
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
    /// C5) with three anchors per cell.
    pub fn resnet50_paper() -> Self {
        ModelConfig {
            anchors: AnchorConfig::paper(),
            ..Self::resnet50()
        }
    }

    /// Output channels of the backbone stages the FPN reads, finest first.
    pub fn stage_channels(&self) -> [usize; 3] {
        match self.backbone {
            Backbone::MobileNet025 => [64, 128, 256],
            Backbone::ResNet50 => [512, 1024, 2048],
        }
    }

    /// Output channels of the backbone at stride `step` (4, 8, 16 or 32): the C2…C5 maps.
    pub fn backbone_channels(&self, step: usize) -> Option<usize> {
        let c = match (self.backbone, step) {
            (Backbone::MobileNet025, 4) => 32,
            (Backbone::MobileNet025, 8) => 64,
            (Backbone::MobileNet025, 16) => 128,
            (Backbone::MobileNet025, 32) => 256,
            (Backbone::ResNet50, 4) => 256,
            (Backbone::ResNet50, 8) => 512,
            (Backbone::ResNet50, 16) => 1024,
            (Backbone::ResNet50, 32) => 2048,
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

    /// Whether this is the port's three-level pyramid (steps 8/16/32), the one the inference
    /// engine runs.
    pub fn is_port_pyramid(&self) -> bool {
        self.anchors.steps == [8, 16, 32]
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
    /// 32 (C3–C5 or C2–C5) or 64 (plus P6), one size list per step.
    pub fn validate(&self) -> Result<(), String> {
        let steps = &self.anchors.steps;
        let pyramid_ok = matches!(steps.first(), Some(4 | 8))
            && matches!(steps.last(), Some(32 | 64))
            && steps.windows(2).all(|w| w[1] == 2 * w[0]);
        if !pyramid_ok {
            return Err(format!(
                "anchor steps {steps:?} must be consecutive powers of two from 4 or 8 to 32 or 64"
            ));
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
        Ok(())
    }

    /// Guess the configuration from weight names and shapes (ResNet-50 has `body.layer1…`).
    pub fn infer(tensors: &crate::weights::NamedTensors) -> Self {
        if tensors.keys().any(|k| k.starts_with("body.layer")) {
            Self::resnet50()
        } else {
            Self::mobilenet025()
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self::mobilenet025()
    }
}
