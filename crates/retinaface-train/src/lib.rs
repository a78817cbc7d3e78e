//! Training RetinaFace in Rust with burn.
//!
//! The network ([`network`]) is built from the detector's [`retinaface::ModelConfig`] and its
//! weight names; [`matching`] assigns ground truth to the anchors of [`retinaface::post::anchors`]
//! and encodes it with [`retinaface::post::coding`]; [`loss`] is the multi-task loss with OHEM;
//! [`data`] reads WIDER FACE annotations and augments; [`trainer`] runs SGD with checkpoints
//! and exports what `retinaface detect` loads.

pub mod checkpoint;
pub mod error;
pub mod kernels;
pub mod network;

pub use error::TrainError;
pub mod config;
pub mod data;
pub mod loss;
pub mod matching;
pub mod memory;
pub mod render;
pub mod trainer;
