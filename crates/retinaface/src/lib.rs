//! RetinaFace face detection in pure Rust.
//!
//! A photo travels: bytes → [`input`] (decode, EXIF orientation, size limits, input tensor)
//! → [`model`] (the network of one [`ModelConfig`], described once in [`arch`] and built
//! from [`engine`] ops) → head outputs
//! → [`post`] (priors, decoding, NMS) → [`Face`]s. [`Detector`] ties the steps together.
//!
//! ```no_run
//! use retinaface::{Detector, DetectOptions};
//! let detector = Detector::default_model()?;
//! let image = retinaface::input::load_image(std::path::Path::new("photo.jpg"))?;
//! for face in detector.detect(&image, &DetectOptions::default())? {
//!     println!("{:?} {:.3}", face.bbox, face.score);
//! }
//! # Ok::<(), retinaface::Error>(())
//! ```

pub mod align;
pub mod anonymize;
pub mod arch;
pub mod config;
pub mod detector;
pub mod engine;
pub mod error;
pub mod guard;
pub mod input;
pub mod mesh;
pub mod model;
pub mod post;
pub mod tta;
pub mod weights;

pub use config::{Backbone, ModelConfig};
pub use detector::{DetectOptions, Detector};
pub use error::Error;
pub use post::Face;
