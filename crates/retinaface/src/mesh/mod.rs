//! The face mesh of the dense regression branch: the topology (MediaPipe's 468-vertex
//! canonical face, embedded), the hierarchy of coarser meshes its decoder up-samples
//! through, and the Chebyshev graph convolution on each level's scaled Laplacian.

pub mod chebyshev;
pub mod decoder;
pub mod hierarchy;
pub mod topology;

pub use topology::{Mesh, MeshError};
