//! Weight formats: named f32 tensors in, one mapping from names to the config's layers.
//!
//! * [`onnx`]: initializers of the port's ONNX export, mapped to layers by the graph's structure;
//! * [`torch`]: PyTorch checkpoints (legacy pickle and zip) in the port's state-dict layout;
//! * [`safetensors`](mod@self::safetensors): our own format, read and written;
//! * [`embedded`]: the default MobileNet-0.25 model compiled into the library.
//!
//! Every reader produces [`NamedTensors`] with the port's names (`body.stage1.0.0.weight`, …);
//! [`crate::model`] folds BatchNorm where present and checks every shape.

pub mod embedded;
pub mod onnx;
pub mod pickle;
pub mod safetensors;
pub mod torch;

use crate::config::ModelConfig;
use std::collections::BTreeMap;
use std::path::Path;

pub use crate::error::WeightsError;

/// A dense f32 tensor in row-major (C) order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor; panics if `data` does not fill `shape` (programming error, not user input).
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor data does not fill its shape"
        );
        Tensor { shape, data }
    }
}

/// Tensors by name, in name order (so written files are deterministic).
pub type NamedTensors = BTreeMap<String, Tensor>;

/// The formats we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Onnx,
    /// PyTorch's legacy (pre-1.6) pickle serialisation.
    TorchLegacy,
    /// PyTorch's zip serialisation.
    TorchZip,
    Safetensors,
}

impl Format {
    /// Guess the format from the first bytes.
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        if bytes.starts_with(b"PK\x03\x04") {
            return Some(Format::TorchZip);
        }
        // Legacy torch files start with a pickled magic number: PROTO 2 then LONG1.
        if bytes.len() > 2 && bytes[0] == 0x80 && bytes[1] == 0x02 {
            return Some(Format::TorchLegacy);
        }
        if bytes.len() >= 9 {
            let n = u64::from_le_bytes(bytes[..8].try_into().ok()?);
            if n > 1 && n < (bytes.len() as u64) && bytes[8] == b'{' {
                return Some(Format::Safetensors);
            }
        }
        // ONNX ModelProto: field 1 (ir_version, varint) comes first in every exporter we know.
        if bytes.first() == Some(&0x08) {
            return Some(Format::Onnx);
        }
        None
    }
}

/// Read any supported weights file into named tensors with the port's names (ONNX
/// initializers are mapped to those names by the graph's structure).
pub fn read_file(path: &Path) -> Result<NamedTensors, WeightsError> {
    read_model_file(path).map(|(t, _)| t)
}

/// Read a weights file with the model configuration it holds: the one stored in our
/// safetensors' metadata, else the one its tensor names imply (the port's networks).
pub fn read_model_file(path: &Path) -> Result<(NamedTensors, ModelConfig), WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        path: path.to_owned(),
        source,
    })?;
    let in_file = |e| WeightsError::InFile {
        path: path.to_owned(),
        source: Box::new(e),
    };
    let tensors = read_bytes(&bytes).map_err(in_file)?;
    let stored = match Format::sniff(&bytes) {
        Some(Format::Safetensors) => safetensors::read_config(&bytes).map_err(in_file)?,
        _ => None,
    };
    let config = stored.unwrap_or_else(|| infer_config(&tensors));
    Ok((tensors, config))
}

/// The configuration of a file that does not store one, from its weight names: the port's
/// MobileNet-0.25 or ResNet-50 (which has `body.layer1…`).
pub fn infer_config(tensors: &NamedTensors) -> ModelConfig {
    if tensors.keys().any(|k| k.starts_with("body.layer")) {
        ModelConfig::resnet50()
    } else {
        ModelConfig::mobilenet025()
    }
}

/// Read weights from bytes in any supported format.
pub fn read_bytes(bytes: &[u8]) -> Result<NamedTensors, WeightsError> {
    match Format::sniff(bytes) {
        Some(Format::Onnx) => onnx::read(bytes),
        Some(Format::TorchLegacy | Format::TorchZip) => torch::read(bytes),
        Some(Format::Safetensors) => safetensors::read(bytes),
        None => Err(WeightsError::UnknownFormat),
    }
}
