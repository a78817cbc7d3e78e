//! The face mesh of the dense regression branch: the topology (MediaPipe's 468-vertex
//! canonical face, embedded), the hierarchy of coarser meshes its decoder up-samples
//! through, and the Chebyshev graph convolution on each level's scaled Laplacian.

pub mod branch;
pub mod camera;
pub mod chebyshev;
pub mod decoder;
pub mod hierarchy;
pub mod topology;

pub use branch::FaceMesh;
pub use topology::{Mesh, MeshError};

/// Values of P_cam per anchor: camera position, pose and focal length (SPEC §1.7).
pub const CAMERA_PARAMS: usize = 7;
/// Values of P_ill per anchor: light position and colour, ambient colour.
pub const LIGHT_PARAMS: usize = 9;

/// Values the mesh head predicts per anchor: P_ST, then P_cam, then P_ill.
pub fn anchor_params(decoder: &decoder::DecoderSpec) -> usize {
    decoder.latent + CAMERA_PARAMS + LIGHT_PARAMS
}
