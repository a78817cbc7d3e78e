//! `retinaface train`: train RetinaFace from WIDER FACE-format data; the output folder ends
//! with `final.safetensors`, which `retinaface detect --model` loads.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use retinaface_train::config::{BackboneSetting, BatchNormSetting, DeviceKind, TrainConfig};
use retinaface_train::data::AugmentConfig;
use retinaface_train::trainer::{StepReport, Trainer};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Run configuration (TOML, e.g. configs/resnet50-paper.toml); without it the port's
    /// MobileNet-0.25 recipe applies. The flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Folder of training images (paths in the labels are relative to it).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Annotations: RetinaFace label.txt or the WIDER text ground truth (default: label.txt
    /// beside the images folder).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// `scratch`, or weights to start from (.onnx, .pth, .safetensors).
    #[arg(long)]
    init: Option<String>,
    /// With `--init scratch`: take the backbone's weights from this file (any file `detect`
    /// loads with the same backbone, e.g. a pretrained RetinaFace); the other layers start
    /// from scratch.
    #[arg(long, value_name = "PATH")]
    init_backbone: Option<String>,
    #[arg(long)]
    epochs: Option<usize>,
    /// Training image side in pixels (a multiple of 32).
    #[arg(long)]
    image_size: Option<usize>,
    /// Images per forward pass.
    #[arg(long)]
    batch: Option<usize>,
    /// Forward passes per optimiser step (gradient accumulation).
    #[arg(long)]
    accumulate: Option<usize>,
    /// Use only the first N images of the annotations.
    #[arg(long)]
    max_images: Option<usize>,
    /// Output folder: config.toml, metrics.jsonl, checkpoints/, final.safetensors.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Base learning rate.
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Optimiser steps between checkpoints (0 = only at the end).
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// `cpu`, or `cuda` (in builds with the `cuda` feature).
    #[arg(long, value_parser = ["cpu", "cuda"])]
    device: Option<String>,
    /// BatchNorm: `train` (batch statistics, γ and β learn), `frozen` (statistics and affine
    /// map fixed, folded into the convolutions; faster), or `auto` (the config's default:
    /// `frozen` from an `--init` file with BatchNorm statistics, `train` otherwise).
    #[arg(long, value_parser = ["auto", "train", "frozen"])]
    batch_norm: Option<String>,
    /// The backbone: `train` (every layer learns), `frozen` (the backbone keeps the
    /// `--init` file's weights, the layers after it learn), or `auto` (the config's default:
    /// `frozen` from an `--init` file with BatchNorm statistics, `train` otherwise).
    #[arg(long, value_parser = ["auto", "train", "frozen"])]
    backbone: Option<String>,
    /// Threads for the training step and the data loader (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Turn off cropping, flipping and colour distortion (images padded to a square).
    #[arg(long)]
    no_augment: bool,
    /// Stop at this optimiser step, counted from the start of the run (a checkpoint is
    /// written; `--resume` goes on, and with `--max-steps` stops at that step).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Continue the run in `--out` (or the config's folder) from its latest checkpoint, with
    /// the configuration it was started with.
    #[arg(long)]
    resume: bool,
}

impl Args {
    fn config(&self) -> Result<TrainConfig> {
        let mut c = match &self.config {
            Some(p) => TrainConfig::load(p)?,
            None => TrainConfig::default(),
        };
        if let Some(d) = &self.data {
            c.data.images = d.clone();
        }
        if let Some(l) = &self.labels {
            c.data.labels = Some(l.clone());
        }
        if let Some(i) = &self.init {
            c.run.init = i.clone();
        }
        if let Some(b) = &self.init_backbone {
            c.run.init_backbone = Some(b.clone());
        }
        let o = &mut c.optim;
        o.epochs = self.epochs.unwrap_or(o.epochs);
        o.batch = self.batch.unwrap_or(o.batch);
        o.accumulate = self.accumulate.unwrap_or(o.accumulate);
        o.lr = self.lr.unwrap_or(o.lr);
        c.data.image_size = self.image_size.unwrap_or(c.data.image_size);
        c.data.max_images = self.max_images.unwrap_or(c.data.max_images);
        if let Some(out) = &self.out {
            c.run.out = out.clone();
        }
        c.run.seed = self.seed.unwrap_or(c.run.seed);
        c.run.checkpoint_every = self.checkpoint_every.unwrap_or(c.run.checkpoint_every);
        match self.device.as_deref() {
            Some("cuda") => c.run.device = DeviceKind::Cuda,
            Some(_) => c.run.device = DeviceKind::Cpu,
            None => {}
        }
        match self.batch_norm.as_deref() {
            Some("train") => c.run.batch_norm = BatchNormSetting::Train,
            Some("frozen") => c.run.batch_norm = BatchNormSetting::Frozen,
            Some(_) => c.run.batch_norm = BatchNormSetting::Auto,
            None => {}
        }
        match self.backbone.as_deref() {
            Some("train") => c.run.backbone = BackboneSetting::Train,
            Some("frozen") => c.run.backbone = BackboneSetting::Frozen,
            Some(_) => c.run.backbone = BackboneSetting::Auto,
            None => {}
        }
        if self.no_augment {
            c.augment = AugmentConfig {
                min_face: c.augment.min_face,
                ..AugmentConfig::none()
            };
        }
        c.validate()?;
        Ok(c)
    }
}

pub fn run(a: Args) -> Result<ExitCode> {
    retinaface_train::memory::keep_freed_memory();
    if let Some(n) = a.threads {
        if n == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        // The backend and the loader both run on rayon's global pool.
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("cannot set up the thread pool")?;
    }
    let mut trainer = if a.resume {
        let out = match &a.out {
            Some(o) => o.clone(),
            None => a.config()?.run.out,
        };
        Trainer::resume(&out).with_context(|| format!("cannot resume {}", out.display()))?
    } else {
        Trainer::new(a.config()?)?
    };
    let c = &trainer.config;
    let p = trainer.progress();
    eprintln!(
        "training {} on {} images ({} faces), {}×{} px, batch {}×{}, {} epochs = {} steps; BatchNorm {}; out {}{}",
        c.model.model_config().summary(),
        trainer.dataset().len(),
        trainer.dataset().face_count(),
        c.data.image_size,
        c.data.image_size,
        c.optim.batch,
        c.optim.accumulate,
        c.optim.epochs,
        trainer.total_steps(),
        if p.bn_train { "trains" } else { "frozen" },
        c.run.out.display(),
        if p.step > 0 {
            format!(", resuming at step {}", p.step)
        } else {
            String::new()
        }
    );
    // Without a terminal (a log file, a CI job) the bar is replaced by progress lines, at
    // most one per 10 seconds, and the last one.
    let terminal = std::io::stderr().is_terminal();
    let mut last_line = std::time::Instant::now();
    let bar = if terminal {
        ProgressBar::new(trainer.total_steps() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_position(p.step as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut skipped = 0usize;
    let mut last = None;
    trainer.run(a.max_steps, |r| {
        for s in &r.skipped {
            bar.suspend(|| eprintln!("warning: skipped {s}"));
        }
        skipped += r.skipped.len();
        bar.set_position(r.step as u64);
        let message = format!(
            "epoch {} loss {:.3} ({}) lr {:.1e} {:.1} img/s",
            r.epoch,
            r.loss,
            loss_parts(r, 3),
            r.lr,
            r.images_per_s
        );
        if !terminal && (last_line.elapsed().as_secs() >= 10 || r.step == r.steps) {
            eprintln!("step {}/{}: {message}", r.step, r.steps);
            last_line = std::time::Instant::now();
        }
        bar.set_message(message);
        last = Some(r.clone());
    })?;
    bar.finish_and_clear();
    let out = &trainer.config.run.out;
    if let Some(r) = last {
        eprintln!(
            "step {}/{}: loss {:.4} ({}), {:.1} s, {:.2} img/s overall",
            r.step,
            r.steps,
            r.loss,
            loss_parts(&r, 4),
            r.elapsed_s,
            (trainer.progress().images - p.images) as f64 / r.elapsed_s.max(1e-9)
        );
    }
    let final_model = out.join("final.safetensors");
    if final_model.is_file() && trainer.progress().epoch >= trainer.config.optim.epochs {
        eprintln!("wrote {}", final_model.display());
    } else {
        eprintln!(
            "stopped early; continue with --resume --out {}",
            out.display()
        );
    }
    if skipped > 0 {
        eprintln!("{skipped} image reads failed and were skipped");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The loss terms of a step: classification, boxes, landmarks, and DF²S²'s segmentation and
/// the mesh branch's L_pixel and landmark term when they train.
fn loss_parts(r: &StepReport, digits: usize) -> String {
    let mut s = format!(
        "cls {:.digits$} box {:.digits$} lm {:.digits$}",
        r.class, r.boxes, r.landmarks
    );
    if r.segmentation > 0.0 {
        s += &format!(" seg {:.digits$}", r.segmentation);
    }
    if r.mesh > 0.0 {
        s += &format!(" mesh {:.digits$}", r.mesh);
    }
    if r.mesh_landmarks > 0.0 {
        s += &format!(" mesh-lm {:.digits$}", r.mesh_landmarks);
    }
    s
}
