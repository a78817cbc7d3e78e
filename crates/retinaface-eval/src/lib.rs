//! Evaluation of face detectors from their output files; never runs a detector.
//!
//! - [`mat`]: a reader for MATLAB 5 `.mat` files (the official WIDER ground truth).
//! - [`widerface`]: WIDER FACE ground truth, prediction folders, and the official AP
//!   protocol of `shared/tools/ref/wider_eval.py`, reproduced exactly.
//! - [`landmarks`]: the RetinaFace `label.txt` format and the landmark NME / failure rate /
//!   cumulative error distribution.
//! - [`plot`]: PR-curve and CED figures as PNG or SVG.

#![warn(missing_docs)]

pub mod landmarks;
pub mod mat;
pub mod plot;
pub mod widerface;

pub use landmarks::{
    evaluate_landmarks, LabelFile, LabeledFace, LabeledImage, LandmarkDetection, LandmarkError,
    LandmarkEvalOptions, LandmarkReport,
};
pub use widerface::{
    evaluate, EvalOptions, EvalReport, GroundTruth, ImageFilter, Predictions, Setting,
    SettingReport, WiderDetection, WiderError,
};
