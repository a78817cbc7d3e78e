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

use crate::config::{AnchorConfig, Backbone, Family, ModelConfig};
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

/// The largest weights file read: a ResNet-152 in float64 is about 0.5 GB.
pub const MAX_FILE_BYTES: u64 = 2 << 30;

/// Read any supported weights file into named tensors with the port's names (ONNX
/// initializers are mapped to those names by the graph's structure).
pub fn read_file(path: &Path) -> Result<NamedTensors, WeightsError> {
    read_model_file(path).map(|(t, _)| t)
}

/// Read a weights file with the model configuration it holds: the one stored in our
/// safetensors' metadata, else the one its tensor names imply (the port's networks).
pub fn read_model_file(path: &Path) -> Result<(NamedTensors, ModelConfig), WeightsError> {
    let bytes = crate::input::read_input_file(path, MAX_FILE_BYTES).map_err(Box::new)?;
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

/// The configuration of a file that does not store one (ONNX, PyTorch), from its weight names
/// and shapes: the family (`ffp.*` is DF²S²), the backbone (`body.layer*`: a ResNet, its depth
/// from the blocks of `layer3`), the pyramid (`fpn.output4`: C2–C5; `fpn.p6`: P6),
/// deformable layers (`*.offset`), shared heads (`ClassHead.conv1x1`) and the neck's width.
/// Anchors are each family's own. What does not fit fails later, naming the tensor.
pub fn infer_config(tensors: &NamedTensors) -> ModelConfig {
    let has = |prefix: &str| tensors.keys().any(|k| k.starts_with(prefix));
    let mut c = ModelConfig::mobilenet025();
    if has("body.layer") {
        let blocks = (0..64)
            .take_while(|i| has(&format!("body.layer3.{i}.")))
            .count();
        c.backbone = match blocks {
            23 => Backbone::ResNet101,
            36 => Backbone::ResNet152,
            _ => Backbone::ResNet50,
        };
        c.fpn_channels = 256;
    }
    let width = |name: &str| tensors.get(name).and_then(|t| t.shape.first().copied());
    if has("ffp.") {
        c.family = Family::Df2s2;
        c.anchors = AnchorConfig::df2s2();
        if let Some(w) = width("ffp.lateral1.0.weight") {
            c.fpn_channels = w;
        }
        return c;
    }
    if let Some(w) = width("fpn.output1.0.weight") {
        c.fpn_channels = w;
    }
    if has("fpn.output4.") && has("fpn.p6.") {
        c.anchors = AnchorConfig::paper();
    }
    c.deformable = tensors.keys().any(|k| k.contains(".offset."));
    c.shared_heads = has("ClassHead.conv1x1.");
    c
}

/// Read weights from bytes in any supported format. A panic of a parser is caught and
/// returned as [`WeightsError::ParserPanic`].
pub fn read_bytes(bytes: &[u8]) -> Result<NamedTensors, WeightsError> {
    crate::guard::catch(|| parse_bytes(bytes)).unwrap_or_else(|m| Err(WeightsError::ParserPanic(m)))
}

fn parse_bytes(bytes: &[u8]) -> Result<NamedTensors, WeightsError> {
    match Format::sniff(bytes) {
        Some(Format::Onnx) => onnx::read(bytes),
        Some(Format::TorchLegacy | Format::TorchZip) => torch::read(bytes),
        Some(Format::Safetensors) => safetensors::read(bytes),
        None => Err(WeightsError::UnknownFormat),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Graph;

    /// A file of every family without its configuration (as PyTorch would save it) is
    /// recognised from its names and shapes.
    #[test]
    fn every_family_is_recognised_from_its_tensor_names() {
        let resnet101 = ModelConfig {
            backbone: Backbone::ResNet101,
            ..ModelConfig::resnet50()
        };
        let families = ModelConfig::families().map(|(_, c)| c);
        for config in families.into_iter().chain([resnet101]) {
            let tensors: NamedTensors = Graph::new(&config)
                .layers
                .iter()
                .map(|l| {
                    let shape = l.weight_shape();
                    let n = shape.iter().product();
                    (
                        format!("{}.weight", l.name),
                        Tensor::new(shape, vec![0.0; n]),
                    )
                })
                .collect();
            assert_eq!(infer_config(&tensors), config);
        }
    }
}
