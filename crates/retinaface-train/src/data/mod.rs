//! Training data: WIDER FACE annotations (the official text format, boxes only, or the
//! RetinaFace label.txt with landmarks), augmentation, and the batch loader.

mod augment;
mod loader;

pub use augment::{augment, photometric, AugmentConfig, Augmented};
pub use loader::{Batch, Loader};

use crate::TrainError;
use retinaface_eval::{GroundTruth, LabelFile};
use std::path::{Path, PathBuf};

/// One annotated face in image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Face {
    /// `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    /// Left eye, right eye, nose, left and right mouth corner (image-left/right as annotated),
    /// when annotated.
    pub landmarks: Option<[[f32; 2]; 5]>,
}

/// One training image.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub path: PathBuf,
    pub faces: Vec<Face>,
}

/// The training set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    pub samples: Vec<Sample>,
}

impl Dataset {
    /// Reads `labels` (label.txt when it starts with `#`, else the official WIDER text
    /// format), with image paths relative to `images`. Faces with a non-positive width or
    /// height are dropped; every image must exist.
    pub fn load(images: &Path, labels: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(labels).map_err(|e| TrainError::io(labels, e))?;
        let label_txt = text.trim_start().starts_with('#');
        let mut samples = Vec::new();
        if label_txt {
            let file =
                LabelFile::parse(&text, labels).map_err(|e| TrainError::Labels(e.to_string()))?;
            for img in file.images {
                let faces = img
                    .faces
                    .iter()
                    .map(|f| Face {
                        bbox: f.bbox_xyxy(),
                        landmarks: f
                            .has_landmarks()
                            .then(|| std::array::from_fn(|k| [f.points[k][0], f.points[k][1]])),
                    })
                    .collect();
                samples.push(Sample {
                    path: images.join(&img.path),
                    faces,
                });
            }
        } else {
            let gt = GroundTruth::parse_text(&text, labels)
                .map_err(|e| TrainError::Labels(e.to_string()))?;
            for event in gt.events {
                for img in event.images {
                    let faces = img
                        .boxes
                        .iter()
                        .map(|b| Face {
                            bbox: [
                                b[0] as f32,
                                b[1] as f32,
                                (b[0] + b[2]) as f32,
                                (b[1] + b[3]) as f32,
                            ],
                            landmarks: None,
                        })
                        .collect();
                    samples.push(Sample {
                        path: find_image(&images.join(&event.name), &img.name),
                        faces,
                    });
                }
            }
        }
        for s in &mut samples {
            s.faces
                .retain(|f| f.bbox[2] > f.bbox[0] && f.bbox[3] > f.bbox[1]);
        }
        if let Some(missing) = samples.iter().find(|s| !s.path.is_file()) {
            return Err(TrainError::Labels(format!(
                "{} names {}, which is not a file",
                labels.display(),
                missing.path.display()
            )));
        }
        if samples.is_empty() {
            return Err(TrainError::Labels(format!(
                "{} lists no image",
                labels.display()
            )));
        }
        Ok(Dataset { samples })
    }

    /// Keep the first `n` images.
    pub fn truncate(&mut self, n: usize) {
        self.samples.truncate(n);
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn face_count(&self) -> usize {
        self.samples.iter().map(|s| s.faces.len()).sum()
    }
}

/// The text ground truth names images without their extension.
fn find_image(dir: &Path, stem: &str) -> PathBuf {
    for ext in ["jpg", "jpeg", "png", "JPG"] {
        let p = dir.join(format!("{stem}.{ext}"));
        if p.is_file() {
            return p;
        }
    }
    dir.join(format!("{stem}.jpg"))
}
