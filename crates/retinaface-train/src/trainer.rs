//! The training loop: SGD with momentum and weight decay, warm-up then step decay, gradient
//! accumulation, checkpoints with exact resume, a JSON-lines metrics log, and the export that
//! `retinaface detect` loads.

use crate::checkpoint;
use crate::config::{BackboneSetting, BatchNormSetting, DeviceKind, TrainConfig};
use crate::data::{Batch, Dataset, Loader};
use crate::loss::multibox_loss;
use crate::network::{
    calibrate_batch_norm, export_folded, export_unfolded, tensor, BnMode, LayerBuilder, Model,
    BACKBONE,
};
use crate::render::loss::{chosen_anchors, BatchInputs, BranchTerm};
use crate::TrainError;
use burn::module::Module;
use burn::module::ParamGroup;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::Device;
use retinaface::config::Family;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Where a run stands; saved with every checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Optimiser steps done.
    pub step: usize,
    /// The next batch to load.
    pub epoch: usize,
    pub batch: usize,
    /// Images trained on so far.
    pub images: usize,
    /// Whether BatchNorm trains (fixed at the start of the run).
    pub bn_train: bool,
}

/// One optimiser step, as the progress bar and the metrics log see it.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: usize,
    pub steps: usize,
    pub epoch: usize,
    pub lr: f64,
    pub loss: f32,
    pub class: f32,
    pub boxes: f32,
    pub landmarks: f32,
    /// DF²S²'s segmentation term (0 without one).
    pub segmentation: f32,
    /// The mesh branch's L_pixel (0 without one).
    pub mesh: f32,
    /// The mesh branch's landmark term (0 without one, or with its weight at 0).
    pub mesh_landmarks: f32,
    pub positives: usize,
    pub images: usize,
    pub images_per_s: f64,
    pub elapsed_s: f64,
    /// Images of this step that could not be read (skipped), with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// A run: the model, the optimiser, the data and where they stand.
pub struct Trainer {
    pub config: TrainConfig,
    model: Model,
    optim: ModuleOptimizer,
    loader: Arc<Loader>,
    device: Device,
    progress: Progress,
    out: PathBuf,
    /// The mesh branch's L_pixel, for networks with the branch and λ3 > 0.
    mesh_term: Option<BranchTerm>,
}

/// The device of `kind`, with autodiff.
pub fn device(kind: DeviceKind) -> Result<Device, TrainError> {
    match kind {
        DeviceKind::Cpu => Ok(Device::flex().autodiff()),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => Ok(Device::cuda(0).autodiff()),
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => Err(TrainError::Device(
            "this build has no CUDA backend: build with `--features cuda`".into(),
        )),
    }
}

/// The mesh branch's parameters: its heads and decoder (`RetinaFaceNet::mesh_heads`,
/// `RetinaFaceNet::mesh_decoder`).
fn branch_group() -> ParamGroup {
    ParamGroup::from_any_predicates(vec!["mesh_heads", "mesh_decoder"])
}

/// SGD with momentum and weight decay; Adam for the mesh branch (see `OptimSection::mesh_lr`).
fn optimizer(config: &TrainConfig) -> ModuleOptimizer {
    let o = &config.optim;
    SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new()
                .with_momentum(o.momentum)
                .with_dampening(0.0),
        ))
        .with_weight_decay(Some(WeightDecayConfig::new(o.weight_decay)))
        .init()
        // ε at PyTorch's 1e-8, not burn's 1e-5: the branch's gradients come through λ3 =
        // 0.01 and a mean over every rendered pixel, small enough that ε = 1e-5 damped its
        // steps (measured: docs/mesh.md).
        .with_group(
            branch_group(),
            AdamConfig::new().with_epsilon(1e-8).build(),
            None,
        )
}

/// With `freeze_detection`, the detection layers take no gradient: the optimiser never
/// touches them and the backward pass stops at the mesh heads. With a frozen backbone
/// ([`backbone_frozen`]), its layers take none: the backward pass stops after it.
fn freeze(config: &TrainConfig, mut model: Model) -> Result<Model, TrainError> {
    if config.run.freeze_detection {
        model.net.layers = model.net.layers.no_grad();
    }
    if backbone_frozen(config, model.bn_mode)? {
        let graph = model.net.graph.clone();
        for (spec, layer) in graph.layers.iter().zip(model.net.layers.iter_mut()) {
            if spec.name.starts_with(BACKBONE) {
                *layer = layer.clone().no_grad();
            }
        }
    }
    Ok(model)
}

/// Whether the run's backbone is frozen, given the BatchNorm mode its model was built with.
fn backbone_frozen(config: &TrainConfig, bn: BnMode) -> Result<bool, TrainError> {
    match config.run.backbone {
        BackboneSetting::Train => Ok(false),
        BackboneSetting::Auto => Ok(config.run.init != "scratch" && bn == BnMode::Frozen),
        BackboneSetting::Frozen if bn == BnMode::Train => Err(TrainError::Invalid(
            "backbone = frozen keeps its BatchNorm frozen too, but this run's BatchNorm trains \
             (weights without statistics train it: set batch_norm = \"frozen\")"
                .into(),
        )),
        BackboneSetting::Frozen => Ok(true),
    }
}

const CHECKPOINTS: &str = "checkpoints";

impl Trainer {
    /// A new run from `config.run.init`; writes `config.toml` into the output folder.
    pub fn new(config: TrainConfig) -> Result<Self, TrainError> {
        config.validate()?;
        let device = device(config.run.device)?;
        let model_config = config.model.model_config();
        let loader = Arc::new(make_loader(&config)?);
        let model = match (
            config.run.init.as_str(),
            config.run.init_backbone.as_deref(),
        ) {
            ("scratch", None) => {
                let mode = match config.run.batch_norm {
                    BatchNormSetting::Frozen => BnMode::Frozen,
                    BatchNormSetting::Auto | BatchNormSetting::Train => BnMode::Train,
                };
                let b = LayerBuilder::scratch(&device, config.run.seed).with_bn_mode(mode);
                Model::build(&model_config, new_layers(b, &config))?
            }
            ("scratch", Some(path)) => {
                let path = Path::new(path);
                let tensors = read_weights(path)?;
                let b = LayerBuilder::backbone_from(&device, &tensors, config.run.seed);
                from_file(&config, &loader, path, new_layers(b, &config), true)?
            }
            (path, _) => {
                let path = Path::new(path);
                let tensors = read_weights(path)?;
                let b = LayerBuilder::from_tensors(&device, &tensors);
                from_file(&config, &loader, path, b, false)?
            }
        };
        let model = freeze(&config, model)?;
        let progress = Progress {
            step: 0,
            epoch: 0,
            batch: 0,
            images: 0,
            bn_train: model.bn_mode == BnMode::Train,
        };
        let out = config.run.out.clone();
        std::fs::create_dir_all(&out).map_err(|e| TrainError::io(&out, e))?;
        write(&out.join("config.toml"), config.to_toml().as_bytes())?;
        // A fresh run starts a fresh log.
        write(&out.join("metrics.jsonl"), b"")?;
        Ok(Trainer {
            mesh_term: mesh_term(&config, &model, &device),
            optim: optimizer(&config),
            config,
            model,
            loader,
            device,
            progress,
            out,
        })
    }

    /// Continue the run in `out` from its latest checkpoint, with the configuration it was
    /// started with (`config.toml` there).
    pub fn resume(out: &Path) -> Result<Self, TrainError> {
        let config = TrainConfig::load(&out.join("config.toml"))?;
        let dir = latest_checkpoint(out)?;
        let bad = |reason: String| TrainError::Checkpoint {
            path: dir.clone(),
            reason,
        };
        let file = |name: &str| -> Result<Vec<u8>, TrainError> {
            checkpoint::read(&dir.join(name)).map_err(|e| bad(e.to_string()))
        };
        let progress = checkpoint::parse_state(&file("state.json")?)
            .map_err(|e| bad(format!("state.json: {e}")))?;
        let device = device(config.run.device)?;
        let mode = if progress.bn_train {
            BnMode::Train
        } else {
            BnMode::Frozen
        };
        // Built from the unfolded copy (tensors and BatchNorm statistics); the record then
        // restores the parameters with their ids, which the optimiser's state is keyed by.
        let unfolded = retinaface::weights::read_file(&dir.join("model.safetensors"))
            .map_err(|e| bad(format!("model.safetensors: {e}")))?;
        if let Some(name) = checkpoint::first_non_finite(&unfolded) {
            return Err(bad(format!(
                "model.safetensors: tensor `{name}` holds NaN or infinite values"
            )));
        }
        let b = LayerBuilder::from_tensors(&device, &unfolded).with_bn_mode(mode);
        let mut model = Model::build(&config.model.model_config(), b)?;
        let record = checkpoint::parse_model(file("model.bpk")?)
            .map_err(|e| bad(format!("model.bpk: {e}")))?;
        let net = model.net;
        model.net = checkpoint::guarded(|| net.try_load_record(record).map_err(|e| e.to_string()))
            .map_err(|e| bad(format!("model.bpk: {e}")))?;
        let model = freeze(&config, model)?;
        let optim = checkpoint::load_optimizer(file("optim.bpk")?, optimizer(&config))
            .map_err(|e| bad(format!("optim.bpk: {e}")))?;
        let loader = Arc::new(make_loader(&config)?);
        Ok(Trainer {
            mesh_term: mesh_term(&config, &model, &device),
            config,
            model,
            optim,
            loader,
            device,
            progress,
            out: out.to_path_buf(),
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn progress(&self) -> Progress {
        self.progress
    }

    pub fn dataset(&self) -> &Dataset {
        self.loader.dataset()
    }

    /// Optimiser steps per epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.loader
            .batches_per_epoch()
            .div_ceil(self.config.optim.accumulate)
    }

    /// Optimiser steps of the whole run.
    pub fn total_steps(&self) -> usize {
        self.steps_per_epoch() * self.config.optim.epochs
    }

    /// Train until the configured epochs are done (or until optimiser step `max_steps`, counted
    /// from the start of the run, if given),
    /// checkpointing on the way and at the end; `on_step` sees every step.
    pub fn run(
        &mut self,
        max_steps: Option<usize>,
        mut on_step: impl FnMut(&StepReport),
    ) -> Result<(), TrainError> {
        let epochs = self.config.optim.epochs;
        let per_epoch = self.loader.batches_per_epoch();
        let accumulate = self.config.optim.accumulate;
        let batches =
            Arc::clone(&self.loader).prefetch(self.progress.epoch, self.progress.batch, epochs);
        let start = Instant::now();
        let mut metrics = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.out.join("metrics.jsonl"))
            .map_err(|e| TrainError::io(self.out.join("metrics.jsonl"), e))?;
        while self.progress.epoch < epochs && max_steps.is_none_or(|m| self.progress.step < m) {
            let t0 = Instant::now();
            let epoch_f =
                self.progress.epoch as f64 + self.progress.batch as f64 / per_epoch as f64;
            let lr = self.config.learning_rate(epoch_f);
            let mut acc = GradientsAccumulator::new();
            let (mut loss, mut class, mut boxes, mut lms, mut seg) = (0.0, 0.0, 0.0, 0.0, 0.0);
            let (mut mesh, mut mesh_lms) = (0.0, 0.0);
            let (mut positives, mut images, mut skipped) = (0, 0, Vec::new());
            // Up to `accumulate` batches, never across an epoch boundary.
            let mut parts = 0;
            while parts < accumulate && self.progress.epoch < epochs {
                let batch = batches
                    .recv()
                    .map_err(|_| TrainError::Invalid("the data loader stopped early".into()))?;
                self.advance(per_epoch);
                skipped.extend(
                    batch
                        .failed
                        .iter()
                        .map(|(p, e)| format!("{}: {e}", p.display())),
                );
                if batch.is_empty() {
                    parts += 1;
                    continue;
                }
                let l = self.forward_loss(&batch);
                let value = l.total.clone().into_scalar::<f32>();
                if !value.is_finite() {
                    return Err(TrainError::Diverged {
                        step: self.progress.step + 1,
                        loss: value,
                    });
                }
                // A frozen network's step without any mesh anchor has nothing to learn from.
                if l.trainable {
                    let scaled = l.total.clone() / accumulate as f32;
                    let grads = GradientsParams::from_grads(scaled.backward(), &self.model.net);
                    acc.accumulate(&self.model.net, grads);
                }
                loss += value / accumulate as f32;
                class += l.class / accumulate as f32;
                boxes += l.boxes / accumulate as f32;
                lms += l.landmarks / accumulate as f32;
                seg += l.segmentation / accumulate as f32;
                mesh += l.mesh / accumulate as f32;
                mesh_lms += l.mesh_landmarks / accumulate as f32;
                positives += l.positives;
                images += batch.len();
                parts += 1;
                if self.progress.batch == 0 {
                    break;
                }
            }
            if images > 0 {
                let net = self.model.net.clone();
                let rates = ModuleLrScheduler::new(lr)
                    .with_group(branch_group(), self.config.mesh_learning_rate(epoch_f))
                    .step();
                self.model.net = self.optim.step(rates, net, acc.grads());
            }
            self.progress.step += 1;
            self.progress.images += images;
            let report = StepReport {
                step: self.progress.step,
                steps: self.total_steps(),
                epoch: self.progress.epoch,
                lr,
                loss,
                class,
                boxes,
                landmarks: lms,
                segmentation: seg,
                mesh,
                mesh_landmarks: mesh_lms,
                positives,
                images,
                images_per_s: images as f64 / t0.elapsed().as_secs_f64().max(1e-9),
                elapsed_s: start.elapsed().as_secs_f64(),
                skipped,
            };
            if let Ok(line) = serde_json::to_string(&report) {
                let _ = writeln!(metrics, "{line}");
            }
            on_step(&report);
            let every = self.config.run.checkpoint_every;
            if every > 0 && self.progress.step.is_multiple_of(every) {
                self.save_checkpoint()?;
            }
        }
        self.save_checkpoint()?;
        // Also after `max_steps`: a short run leaves a file the detector loads (a resumed run
        // overwrites it when it ends).
        self.export(&self.out.join("final.safetensors"))?;
        Ok(())
    }

    fn advance(&mut self, per_epoch: usize) {
        self.progress.batch += 1;
        if self.progress.batch >= per_epoch {
            self.progress.batch = 0;
            self.progress.epoch += 1;
        }
    }

    fn forward_loss(&self, batch: &Batch) -> crate::loss::Loss {
        let s = batch.size;
        let x = tensor(
            batch.images.clone(),
            vec![batch.len(), 3, s, s],
            &self.device,
        );
        let out = self
            .model
            .net
            .forward_with(x, trains_segmentation(&self.config));
        let mut loss = multibox_loss(&out, &batch.targets, &self.config.loss);
        let decoder = self.model.net.mesh_decoder.as_ref();
        if let (Some(term), Some(params), Some(decoder)) = (&self.mesh_term, out.mesh, decoder) {
            let l = &self.config.loss;
            let chosen = chosen_anchors(&batch.targets, l.mesh_anchors);
            let inputs = BatchInputs {
                images: &batch.images,
                side: s,
                mean_bgr: self.model.config.mean_bgr,
                priors: self.loader.priors(),
                targets: &batch.targets,
                variances: self.model.config.variances,
            };
            let with_landmarks = l.mesh_landmark_weight > 0.0;
            if let Some(terms) = term.loss(params, decoder, &chosen, &inputs, with_landmarks) {
                loss.mesh = terms.pixel.clone().into_scalar::<f32>();
                let mut branch = terms.pixel;
                if let Some(points) = terms.landmarks {
                    loss.mesh_landmarks = points.clone().into_scalar::<f32>();
                    branch = branch + points * l.mesh_landmark_weight;
                }
                // Trained alone, the branch's term needs no weight against the others.
                loss.total = if self.config.run.freeze_detection {
                    branch
                } else {
                    loss.total + branch * l.mesh_weight
                };
                return loss;
            }
        }
        loss.trainable = !self.config.run.freeze_detection;
        loss
    }

    /// Save model, optimiser and progress under `checkpoints/step-N`, plus an unfolded
    /// safetensors copy of the model (loadable by `detect` and by `--init`).
    pub fn save_checkpoint(&self) -> Result<PathBuf, TrainError> {
        let dir = self
            .out
            .join(CHECKPOINTS)
            .join(format!("step-{:08}", self.progress.step));
        std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
        let bad = |reason: String| TrainError::Checkpoint {
            path: dir.clone(),
            reason,
        };
        self.model.net.sync_running_stats();
        self.model
            .net
            .clone()
            .save_file(dir.join("model.bpk"))
            .map_err(|e| bad(e.to_string()))?;
        self.optim
            .save(dir.join("optim.bpk"))
            .map_err(|e| bad(e.to_string()))?;
        let unfolded = export_unfolded(&self.model)?;
        let bytes = retinaface::weights::safetensors::write(&unfolded, &self.model.config)?;
        write(&dir.join("model.safetensors"), &bytes)?;
        let state = serde_json::to_string_pretty(&self.progress).unwrap_or_default();
        // The state goes last: a checkpoint without it is incomplete and is not resumed from.
        write(&dir.join("state.json"), state.as_bytes())?;
        Ok(dir)
    }

    /// The detector's safetensors (BatchNorm folded, configuration embedded).
    pub fn export(&self, path: &Path) -> Result<(), TrainError> {
        let folded = export_folded(&self.model)?;
        let bytes = retinaface::weights::safetensors::write(&folded, &self.model.config)?;
        write(path, &bytes)
    }
}

/// The focal loss's prior probability of a face at initialisation (SPEC §2, RetinaNet's π).
pub const FOCAL_PRIOR: f32 = 0.01;

/// DF²S²'s new layers: Xavier-uniform, and the score layer's bias at the focal-loss prior
/// `−log((1 − π) / π)` so that every anchor starts at score π and training starts stable.
/// The segmentation logits start at the same prior: faces cover a small part of each mask,
/// and a branch that starts at ½ everywhere pulls the shared subnet hard enough, in the
/// first steps, to blow up the scores (measured: docs/df2s2.md). Other families keep
/// PyTorch's default initialisation.
pub fn new_layers<'a>(b: LayerBuilder<'a>, config: &TrainConfig) -> LayerBuilder<'a> {
    if config.model.family != Family::Df2s2 {
        return b;
    }
    let prior = -((1.0 - FOCAL_PRIOR) / FOCAL_PRIOR).ln();
    b.with_xavier()
        .with_bias_prior("cls_score", prior)
        .with_bias_prior("seg_pred", prior)
}

fn read_weights(path: &Path) -> Result<retinaface::weights::NamedTensors, TrainError> {
    retinaface::weights::read_file(path).map_err(|source| TrainError::WeightsFile {
        path: path.to_path_buf(),
        source,
    })
}

/// A model whose layers (all, or the backbone's with `backbone_only`) come from a weights
/// file through `b`.
fn from_file(
    config: &TrainConfig,
    loader: &Loader,
    path: &Path,
    b: LayerBuilder,
    backbone_only: bool,
) -> Result<Model, TrainError> {
    let device = b.device();
    let model_config = config.model.model_config();
    let bad = |source| TrainError::WeightsFile {
        path: path.to_path_buf(),
        source,
    };
    // Folded files carry no BatchNorm statistics: they get those of the first
    // training batch and weights of the usual scale (see `calibrate_batch_norm`).
    let folded = b.bn_mode() == BnMode::Frozen;
    // A file with statistics keeps its BatchNorm frozen unless asked otherwise:
    // batch statistics of a few crops move a converged network. A folded file's
    // calibrated scales are not the ones it was trained in, and frozen at them
    // it drifts fast (docs/training.md): its BatchNorm trains. So do the BatchNorms of a
    // network whose layers beyond the backbone start from scratch.
    let mode = match (config.run.batch_norm, folded || backbone_only) {
        (BatchNormSetting::Train, _) | (BatchNormSetting::Auto, true) => BnMode::Train,
        (BatchNormSetting::Frozen, _) | (BatchNormSetting::Auto, false) => BnMode::Frozen,
    };
    if !folded {
        return Model::build(&model_config, b.with_bn_mode(mode)).map_err(bad);
    }
    // A frozen network keeps the file's function exactly: no statistics to calibrate.
    if config.run.freeze_detection {
        return Model::build(&model_config, b).map_err(bad);
    }
    let model = Model::build(&model_config, b).map_err(bad)?;
    let batch = loader.load(0, 0);
    if batch.is_empty() {
        return Err(TrainError::Invalid(
            "no image of the first batch could be read to calibrate BatchNorm".into(),
        ));
    }
    let s = batch.size;
    let n = batch.len();
    let images = tensor(batch.images, vec![n, 3, s, s], &device);
    calibrate_batch_norm(&model, images, mode).map_err(bad)
}

fn make_loader(config: &TrainConfig) -> Result<Loader, TrainError> {
    let mut dataset = Dataset::load(&config.data.images, &config.data.labels_path())?;
    if config.data.max_images > 0 {
        dataset.truncate(config.data.max_images);
    }
    let loader = Loader::new(
        dataset,
        &config.model.model_config(),
        config.augment.clone(),
        config.matching,
        config.data.image_size,
        config.optim.batch,
        config.run.seed,
    );
    Ok(if trains_segmentation(config) {
        loader.with_segmentation_masks()
    } else {
        loader
    })
}

/// The mesh branch's term, when the network has the branch and its weight is positive.
fn mesh_term(config: &TrainConfig, model: &Model, device: &Device) -> Option<BranchTerm> {
    (model.net.mesh_decoder.is_some() && config.loss.mesh_weight > 0.0)
        .then(|| BranchTerm::new(config.loss.mesh_crop, device))
}

/// Whether the run trains DF²S²'s segmentation branch: the network has one and λ2 > 0.
fn trains_segmentation(config: &TrainConfig) -> bool {
    config.model.family == Family::Df2s2 && config.loss.segmentation_weight > 0.0
}

/// The newest complete checkpoint of a run.
pub fn latest_checkpoint(out: &Path) -> Result<PathBuf, TrainError> {
    let dir = out.join(CHECKPOINTS);
    let entries = std::fs::read_dir(&dir).map_err(|e| TrainError::io(&dir, e))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("state.json").is_file())
        .collect();
    found.sort();
    found.pop().ok_or_else(|| TrainError::Checkpoint {
        path: dir,
        reason: "no complete checkpoint to resume from".into(),
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    // Write then rename: a run killed mid-write leaves the previous file intact.
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(|e| TrainError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{values, RetinaFaceNet};
    use burn::tensor::Tensor;
    use retinaface::config::ModelConfig;

    /// The branch's parameters take Adam's steps at `mesh_lr` (the first step moves each
    /// parameter by `mesh_lr · g / (|g| + ε)`: `mesh_lr` unless its gradient is near ε),
    /// and the rest SGD's at `lr`.
    #[test]
    fn the_branch_steps_with_adam_and_the_rest_with_sgd() {
        let device = Device::flex().autodiff();
        let config = ModelConfig::mobilenet025().with_mesh();
        let model = Model::scratch(&config, &device, 3).unwrap();
        let x = tensor(vec![0.5; 3 * 64 * 64], vec![1, 3, 64, 64], &device);
        let out = model.net.forward(x);
        let decoder = model.net.mesh_decoder.as_ref().unwrap();
        let decoded = decoder.forward(Tensor::ones([1, 128], &device));
        let loss = out.mesh.unwrap().sum() * 1e-3 + out.class.sum() * 1e-3 + decoded.sum() * 1e-3;
        let grads = GradientsParams::from_grads(loss.backward(), &model.net);
        let mut train = TrainConfig::default();
        train.optim.lr = 1e-2;
        train.optim.mesh_lr = 1e-3;
        train.optim.weight_decay = 0.0;
        let mut optim = optimizer(&train);
        let rates = ModuleLrScheduler::new(1e-2)
            .with_group(branch_group(), 1e-3)
            .step();
        let before = model.net.clone();
        let after = optim.step(rates, model.net, grads);
        let change = |a: Tensor<1>, b: Tensor<1>| -> Vec<f32> {
            let (a, b) = (values(a).unwrap(), values(b).unwrap());
            a.iter().zip(&b).map(|(x, y)| (x - y).abs()).collect()
        };
        // The decoder's output bias and a head's bias: every entry moved by 1e-3.
        let bias = |n: &RetinaFaceNet| n.mesh_decoder.as_ref().unwrap().export().unwrap();
        let (b0, b1) = (bias(&before), bias(&after));
        let adam_steps = |moved: &[f32], what: &str| {
            let full = moved.iter().filter(|m| (*m - 1e-3).abs() < 5e-5).count();
            assert!(moved.iter().all(|&m| m > 0.0 && m < 1.0001e-3), "{what}");
            assert!(
                full * 10 >= moved.len() * 9,
                "{what}: {full} of {}",
                moved.len()
            );
        };
        for name in ["mesh_decoder.cheb2.bias", "mesh_decoder.fc.bias"] {
            let moved: Vec<f32> = b0[name]
                .data
                .iter()
                .zip(&b1[name].data)
                .map(|(x, y)| (x - y).abs())
                .collect();
            adam_steps(&moved, name);
        }
        let head = |n: &RetinaFaceNet| n.mesh_heads[0].conv.bias.as_ref().unwrap().val();
        adam_steps(&change(head(&before), head(&after)), "MeshHead.0 bias");
        // A score head's bias took SGD's step: lr × its gradient, not a fixed size.
        let score = |n: &RetinaFaceNet| {
            let i = n
                .graph
                .layers
                .iter()
                .position(|l| l.name.contains("ClassHead"))
                .unwrap();
            n.layers[i].conv.bias.as_ref().unwrap().val()
        };
        let moved = change(score(&before), score(&after));
        assert!(moved.iter().any(|&m| m > 0.0) && moved.iter().any(|m| (m - 1e-3).abs() > 1e-4));
    }
}
