//! Errors of training: configuration, data, weights, the framework's records.

use std::path::PathBuf;

/// Everything that can stop a training run or its set-up.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("invalid training setting: {0}")]
    Invalid(String),
    #[error(transparent)]
    Weights(#[from] retinaface::weights::WeightsError),
    #[error("{path}: {source}")]
    WeightsFile {
        path: PathBuf,
        source: retinaface::weights::WeightsError,
    },
    #[error("annotations: {0}")]
    Labels(String),
    #[error("{path}: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    /// The loss became NaN or infinite: training stops instead of writing a broken model.
    #[error("the loss is {loss} at step {step}: training diverged (lower the learning rate, or resume from an earlier checkpoint)")]
    Diverged { step: usize, loss: f32 },
    #[error("device: {0}")]
    Device(String),
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}
