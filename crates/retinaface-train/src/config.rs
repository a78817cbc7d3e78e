//! A training run's configuration, read from TOML (`configs/*.toml`); what is not in the file
//! comes from the port's configuration, and command-line flags override both.

use crate::data::AugmentConfig;
use crate::loss::LossConfig;
use crate::matching::MatchConfig;
use crate::TrainError;
use retinaface::config::{AnchorConfig, Backbone, Family, ModelConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The port's MobileNet-0.25 recipe, the defaults of every run.
pub const PORT_CONFIG: &str = include_str!("../../../configs/mobilenet0.25-port.toml");

/// Which pyramid (and anchors) the network has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pyramid {
    /// C3–C5, steps 8/16/32, sizes [16,32] [64,128] [256,512].
    Port,
    /// P2–P6, steps 4…64, three sizes per level (16 to 406 px).
    Paper,
    /// DF²S²'s six levels, steps 4…128, one size of 4× the step, ratios 1 and 1.5.
    Df2s2,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// `retinaface` (default) or `df2s2`.
    #[serde(default)]
    pub family: Family,
    pub backbone: Backbone,
    /// The family's own when absent (`port` for RetinaFace, `df2s2` for DF²S²).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pyramid: Option<Pyramid>,
    /// FPN/SSH/head width; the backbone's usual one (64 or 256) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fpn_channels: Option<usize>,
    /// Deformable 3×3 convolutions in the FPN merges and the context modules.
    #[serde(default)]
    pub deformable: bool,
    /// One set of heads shared by every level.
    #[serde(default)]
    pub shared_heads: bool,
    /// The dense regression branch (mesh, camera and light per anchor; SPEC §1.7).
    #[serde(default)]
    pub mesh: bool,
}

impl ModelSection {
    /// The detector's model configuration.
    pub fn model_config(&self) -> ModelConfig {
        let mut c = match self.backbone {
            Backbone::MobileNet025 => ModelConfig::mobilenet025(),
            other => ModelConfig {
                backbone: other,
                ..ModelConfig::resnet50()
            },
        };
        c.family = self.family;
        if let Some(ch) = self.fpn_channels {
            c.fpn_channels = ch;
        }
        let pyramid = self.pyramid.unwrap_or(match self.family {
            Family::RetinaFace => Pyramid::Port,
            Family::Df2s2 => Pyramid::Df2s2,
        });
        c.anchors = match pyramid {
            Pyramid::Port => AnchorConfig::port(),
            Pyramid::Paper => AnchorConfig::paper(),
            Pyramid::Df2s2 => AnchorConfig::df2s2(),
        };
        c.deformable = self.deformable;
        c.shared_heads = self.shared_heads;
        c.mesh = self
            .mesh
            .then(retinaface::mesh::decoder::DecoderSpec::default);
        c
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub images: PathBuf,
    /// label.txt or the WIDER text ground truth; `label.txt` beside `images` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<PathBuf>,
    pub image_size: usize,
    /// 0 = all.
    pub max_images: usize,
}

impl DataSection {
    pub fn labels_path(&self) -> PathBuf {
        self.labels.clone().unwrap_or_else(|| {
            let parent = self.images.parent().unwrap_or(Path::new("."));
            parent.join("label.txt")
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f32,
    /// Epochs of linear warm-up from `warmup_start_lr` to `lr` (0 = none).
    pub warmup_epochs: f64,
    pub warmup_start_lr: f64,
    /// How the rate falls after the warm-up.
    #[serde(default)]
    pub schedule: Schedule,
    /// Epochs at which the rate is multiplied by `gamma` (`schedule = "step"`).
    pub decay_epochs: Vec<usize>,
    pub gamma: f64,
    pub epochs: usize,
    /// Images per forward pass.
    pub batch: usize,
    /// Forward passes whose gradients are summed before one update.
    pub accumulate: usize,
    /// The mesh branch's learning rate. The branch (its heads and decoder) trains with Adam,
    /// the rest with SGD: its term enters the loss at λ3 = 0.01, so under the detection
    /// weights' SGD its parameters would move a hundredth as fast as the rest (measured in
    /// docs/mesh.md: L_pixel stayed flat). Follows the same warm-up and decay, scaled.
    #[serde(default = "default_mesh_lr")]
    pub mesh_lr: f64,
}

fn default_mesh_lr() -> f64 {
    1e-3
}

/// The learning rate's course after the warm-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// `lr`, multiplied by `gamma` at each of `decay_epochs` (the port's and the paper's).
    #[default]
    Step,
    /// Half a cosine from `lr` at the end of the warm-up to 0 at the end of the last epoch;
    /// `decay_epochs` and `gamma` are not used. A run that ends at a small rate ends near the
    /// average of where its last steps went, not at one noisy step of a large rate.
    Cosine,
}

/// The device a run trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

/// How BatchNorm trains. Weights without statistics (folded files) first get those of the
/// first training batch, whatever the setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchNormSetting {
    /// `frozen` from a weights file with BatchNorm statistics (the `.pth` files, checkpoints),
    /// `train` from scratch and from folded weights (ONNX, the detector's safetensors).
    Auto,
    /// Batch statistics, running averages updated, γ and β learn (PyTorch's `train()`).
    Train,
    /// Statistics and affine map fixed, folded into the convolutions.
    Frozen,
}

/// Whether the backbone's layers (`body.*`) learn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackboneSetting {
    /// `frozen` when fine-tuning a weights file whose BatchNorm is frozen (`init` a file with
    /// BatchNorm statistics: the `.pth` files, checkpoints), `train` otherwise (from scratch,
    /// from a backbone file given as `init_backbone`, from folded weights).
    #[default]
    Auto,
    /// Every layer learns.
    Train,
    /// The backbone's weights stay as the file has them; the layers after it learn.
    Frozen,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// `scratch` or a weights file.
    pub init: String,
    /// With `init = "scratch"`: the backbone's weights from this file (any file the detector
    /// loads, of a network with the same backbone), the other layers drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_backbone: Option<String>,
    pub out: PathBuf,
    pub seed: u64,
    /// Optimiser steps between checkpoints (0 = only at the end).
    pub checkpoint_every: usize,
    pub device: DeviceKind,
    pub batch_norm: BatchNormSetting,
    /// Whether the backbone learns (files written before this setting: `auto`).
    #[serde(default)]
    pub backbone: BackboneSetting,
    /// Train the mesh branch only: every detection weight (and BatchNorm statistic) stays as
    /// `init` has it, and the loss is the branch's term alone.
    #[serde(default)]
    pub freeze_detection: bool,
}

/// Everything a run needs; written as `config.toml` beside its checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelSection,
    pub data: DataSection,
    pub augment: AugmentConfig,
    pub matching: MatchConfig,
    pub loss: LossConfig,
    pub optim: OptimSection,
    pub run: RunSection,
}

impl Default for TrainConfig {
    fn default() -> Self {
        // The embedded file is part of the build and covered by a test.
        match toml::from_str(PORT_CONFIG) {
            Ok(c) => c,
            Err(e) => panic!("configs/mobilenet0.25-port.toml is invalid: {e}"),
        }
    }
}

impl TrainConfig {
    /// Read a TOML file; sections and keys it leaves out keep the port's values.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parse TOML text over the port's defaults; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, TrainError> {
        let err = |reason: String| TrainError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let mut base: toml::Table = toml::from_str(PORT_CONFIG).map_err(|e| err(e.to_string()))?;
        let over: toml::Table = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        for (section, value) in over {
            match (base.get_mut(&section), value) {
                (Some(toml::Value::Table(b)), toml::Value::Table(o)) => b.extend(o),
                (_, v) => {
                    base.insert(section, v);
                }
            }
        }
        let config: TrainConfig = toml::Value::Table(base)
            .try_into()
            .map_err(|e: toml::de::Error| err(e.to_string()))?;
        config.validate().map_err(|e| err(e.to_string()))?;
        Ok(config)
    }

    /// Check the values make a run.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: &str| Err(TrainError::Invalid(m.to_owned()));
        let s = self.data.image_size;
        if !(32..=4096).contains(&s) || !s.is_multiple_of(32) {
            return bad("image_size must be a multiple of 32 between 32 and 4096");
        }
        let o = &self.optim;
        if o.batch == 0 || o.accumulate == 0 || o.epochs == 0 {
            return bad("batch, accumulate and epochs must be at least 1");
        }
        if !(o.lr > 0.0 && o.lr.is_finite()) || o.warmup_start_lr < 0.0 || o.gamma <= 0.0 {
            return bad("lr must be positive, warmup_start_lr ≥ 0 and gamma > 0");
        }
        if !(0.0..1.0).contains(&o.momentum) || o.weight_decay < 0.0 {
            return bad("momentum must be in [0, 1) and weight_decay ≥ 0");
        }
        let m = &self.matching;
        if !(m.negative_iou <= m.positive_iou && m.positive_iou > 0.0 && m.positive_iou <= 1.0) {
            return bad("matching needs 0 < negative_iou ≤ positive_iou ≤ 1");
        }
        if self.loss.negatives_per_positive < 0.0 {
            return bad("negatives_per_positive must be ≥ 0");
        }
        if self.run.init_backbone.is_some() && self.run.init != "scratch" {
            return bad(
                "init_backbone starts the backbone of a run from scratch: init must be \"scratch\"",
            );
        }
        let l = &self.loss;
        if !(l.focal_alpha >= 0.0 && l.focal_alpha <= 1.0 && l.focal_gamma >= 0.0) {
            return bad("focal_alpha must be in [0, 1] and focal_gamma ≥ 0");
        }
        if !(l.segmentation_weight >= 0.0 && l.segmentation_weight.is_finite()) {
            return bad("segmentation_weight must be ≥ 0");
        }
        if !(o.mesh_lr > 0.0 && o.mesh_lr.is_finite()) {
            return bad("mesh_lr must be positive");
        }
        if self.run.backbone == BackboneSetting::Frozen {
            if self.run.init == "scratch" && self.run.init_backbone.is_none() {
                return bad("backbone = frozen keeps pretrained weights: init or init_backbone must name a weights file");
            }
            if self.run.batch_norm == BatchNormSetting::Train {
                return bad("backbone = frozen keeps its BatchNorm frozen too: batch_norm must be auto or frozen");
            }
        }
        if self.run.freeze_detection {
            if !self.model.mesh || l.mesh_weight <= 0.0 {
                return bad("freeze_detection trains the mesh branch alone: it needs [model] mesh = true and mesh_weight > 0");
            }
            if self.run.init == "scratch" {
                return bad("freeze_detection keeps the detection weights of init: init must be a weights file");
            }
            if self.run.batch_norm == BatchNormSetting::Train {
                return bad(
                    "freeze_detection keeps BatchNorm frozen: batch_norm must be auto or frozen",
                );
            }
        }
        if !(0.0..=1.0).contains(&self.augment.flip) {
            return bad("flip is a probability");
        }
        if self
            .augment
            .crop_scales
            .iter()
            .any(|&c| !(c > 0.0 && c <= 1.0))
        {
            return bad("crop_scales must be in (0, 1]");
        }
        self.model
            .model_config()
            .validate()
            .map_err(TrainError::Invalid)
    }

    /// The mesh branch's learning rate at `epoch`: [`TrainConfig::learning_rate`]'s schedule
    /// scaled to `mesh_lr`.
    pub fn mesh_learning_rate(&self, epoch: f64) -> f64 {
        self.learning_rate(epoch) / self.optim.lr * self.optim.mesh_lr
    }

    /// The learning rate at fractional epoch `epoch`: linear warm-up, then the schedule.
    pub fn learning_rate(&self, epoch: f64) -> f64 {
        let o = &self.optim;
        if epoch < o.warmup_epochs {
            return o.warmup_start_lr + (o.lr - o.warmup_start_lr) * epoch / o.warmup_epochs;
        }
        if o.schedule == Schedule::Cosine {
            let span = o.epochs as f64 - o.warmup_epochs;
            if span <= 0.0 {
                return o.lr;
            }
            let t = ((epoch - o.warmup_epochs) / span).clamp(0.0, 1.0);
            return o.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
        }
        let steps = o
            .decay_epochs
            .iter()
            .filter(|&&d| epoch >= d as f64)
            .count();
        o.lr * o.gamma.powi(steps as i32)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_configs_parse_and_differ_where_the_recipes_do() {
        let port = TrainConfig::default();
        assert_eq!(port.model.model_config(), ModelConfig::mobilenet025());
        assert_eq!(port.matching, MatchConfig::port());
        assert_eq!(port.loss, LossConfig::port());
        let paper = TrainConfig::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/resnet50-paper.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(paper.model.model_config(), ModelConfig::resnet50_paper());
        assert_eq!(paper.matching, MatchConfig::paper());
        assert_eq!(paper.loss, LossConfig::paper());
        // lr 1e-3 → 1e-2 over 5 epochs, ÷10 at 55 and 68.
        assert!((paper.learning_rate(0.0) - 1e-3).abs() < 1e-12);
        assert!((paper.learning_rate(2.5) - 5.5e-3).abs() < 1e-12);
        assert!((paper.learning_rate(10.0) - 1e-2).abs() < 1e-12);
        assert!((paper.learning_rate(55.0) - 1e-3).abs() < 1e-12);
        assert!((paper.learning_rate(70.0) - 1e-4).abs() < 1e-12);

        // The fine-tuning recipe: up to 1e-4 over a fifth of an epoch, a cosine down to 0 at
        // the end of the run, and the port's network, matching and loss.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut fine = TrainConfig::load(&dir.join("mobilenet0.25-finetune.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fine.model, port.model);
        assert_eq!((fine.matching, fine.loss), (port.matching, port.loss));
        assert_eq!(fine.optim.schedule, Schedule::Cosine);
        fine.optim.epochs = 2;
        let w = fine.optim.warmup_epochs;
        assert!(fine.learning_rate(0.0).abs() < 1e-12);
        assert!((fine.learning_rate(w / 2.0) - 5e-5).abs() < 1e-12);
        assert!((fine.learning_rate(w) - 1e-4).abs() < 1e-12);
        assert!((fine.learning_rate(w + (2.0 - w) / 2.0) - 5e-5).abs() < 1e-12);
        assert!(fine.learning_rate(2.0).abs() < 1e-12);
        let rates: Vec<f64> = (0..=40)
            .map(|i| fine.learning_rate(i as f64 / 20.0))
            .collect();
        let peak = rates.iter().position(|&r| (r - 1e-4).abs() < 1e-12);
        assert!(rates.windows(2).enumerate().all(|(i, p)| {
            if peak.is_some_and(|k| i < k) {
                p[0] <= p[1]
            } else {
                p[0] >= p[1]
            }
        }));

        for (file, want) in [
            (
                "mobilenet0.25-paper.toml",
                ModelConfig::mobilenet025_paper(),
            ),
            ("df2s2-resnet50.toml", ModelConfig::df2s2_resnet50()),
            (
                "df2s2-mobilenet0.25.toml",
                ModelConfig::df2s2_mobilenet025(),
            ),
        ] {
            let c = TrainConfig::load(&dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(c.model.model_config(), want, "{file}");
        }
    }

    #[test]
    fn a_partial_file_keeps_the_defaults_and_bad_values_are_refused() {
        let c = TrainConfig::parse("[optim]\nbatch = 4\n", Path::new("x.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.optim.batch, 4);
        assert_eq!(c.optim.epochs, 250);
        for bad in [
            "[optim]\nbatch = 0\n",
            "[data]\nimage_size = 100\n",
            "[optim]\nbogus = 1\n",
            "[model]\nbackbone = \"vgg\"\n",
        ] {
            let e = TrainConfig::parse(bad, Path::new("bad.toml"));
            assert!(matches!(e, Err(TrainError::Config { .. })), "{bad}: {e:?}");
        }
    }
}
