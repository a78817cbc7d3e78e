//! Reading a checkpoint's files defensively: each is a regular file of bounded size, burn's
//! record parsers run behind a panic guard (a damaged record must be this file's error, not
//! an abort), and the model's parameters must be finite before training goes on from them.

use crate::trainer::Progress;
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use std::path::Path;

/// The largest checkpoint file read: a ResNet-152's parameters with their momentum are
/// about 0.5 GB.
pub const MAX_FILE_BYTES: u64 = 2 << 30;

/// Why one file of a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckpointError {
    /// The file is absent, not regular, too large or unreadable.
    #[error("{0}")]
    Read(String),
    /// The file parses to something invalid.
    #[error("{0}")]
    Invalid(String),
    /// The parser (burn's) panicked on the bytes: caught, and reported as damage.
    #[error("damaged record ({0})")]
    Panicked(String),
}

/// Read a checkpoint file (regular, at most [`MAX_FILE_BYTES`]).
pub fn read(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    retinaface::input::read_input_file(path, MAX_FILE_BYTES)
        .map_err(|e| CheckpointError::Read(e.to_string()))
}

/// `state.json`: where the run stands.
pub fn parse_state(bytes: &[u8]) -> Result<Progress, CheckpointError> {
    serde_json::from_slice(bytes).map_err(|e| CheckpointError::Invalid(e.to_string()))
}

/// `model.bpk`, parsed (not yet applied to a module).
pub fn parse_model(bytes: Vec<u8>) -> Result<ModuleRecord, CheckpointError> {
    guarded(|| ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes)).map_err(|e| e.to_string()))
}

/// `optim.bpk`, parsed and applied to `optim`.
pub fn load_optimizer(
    bytes: Vec<u8>,
    optim: ModuleOptimizer,
) -> Result<ModuleOptimizer, CheckpointError> {
    guarded(|| {
        OptimizerRecord::from_bytes(Bytes::from_bytes_vec(bytes))
            .map(|record| optim.load_record(record))
            .map_err(|e| e.to_string())
    })
}

/// Run a parser of burn's; its error or its panic becomes this file's error.
pub fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, CheckpointError> {
    match retinaface::guard::catch(f) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(CheckpointError::Invalid(e)),
        Err(panic) => Err(CheckpointError::Panicked(panic)),
    }
}

/// The first tensor holding a NaN or an infinity, by name.
pub fn first_non_finite(tensors: &retinaface::weights::NamedTensors) -> Option<&str> {
    tensors
        .iter()
        .find(|(_, t)| t.data.iter().any(|v| !v.is_finite()))
        .map(|(name, _)| name.as_str())
}
