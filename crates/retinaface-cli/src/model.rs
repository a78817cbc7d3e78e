//! Choosing the weights: `--model PATH`, else `$RETINAFACE_MODEL`, else the embedded default.

use anyhow::{Context, Result};
use retinaface::Detector;
use std::path::PathBuf;

/// Environment variable naming a weights file to use instead of the embedded model.
pub const MODEL_ENV: &str = "RETINAFACE_MODEL";

/// Options shared by every command that runs the detector.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Weights file (ONNX, PyTorch .pth or safetensors); default: $RETINAFACE_MODEL, else the
    /// embedded MobileNet-0.25.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Threads for one image's forward pass (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl ModelArgs {
    /// The weights file chosen, if not the embedded one.
    pub fn path(&self) -> Option<PathBuf> {
        self.model.clone().or_else(|| {
            std::env::var_os(MODEL_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }

    /// Load the detector with `threads` per pass (0: the caller's thread pool).
    pub fn load_with_threads(&self, threads: usize) -> Result<Detector> {
        let detector = match self.path() {
            Some(p) => Detector::from_file(&p)
                .with_context(|| format!("cannot load model {}", p.display()))?,
            None => Detector::default_model().context("cannot load the embedded model")?,
        };
        Ok(detector.with_threads(threads)?)
    }

    /// Threads per pass: `--threads`, else all cores.
    pub fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }
}
