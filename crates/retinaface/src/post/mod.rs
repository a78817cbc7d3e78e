//! Post-processing: anchors (one generator for inference and training), box and landmark
//! coding, thresholding and NMS.

pub mod anchors;
pub mod coding;
pub mod nms;

use serde::{Deserialize, Serialize};

/// One detected face, in pixels of the image as displayed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Face {
    /// `[x1, y1, x2, y2]`.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Face probability (softmax of the class head).
    pub score: f32,
    /// Left eye, right eye, nose tip, left and right mouth corner (image-left/right), `[x, y]`;
    /// `None` for networks without a landmark head (DF²S²).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landmarks: Option<[[f32; 2]; 5]>,
}

impl Face {
    /// Box width (x2 − x1).
    pub fn width(&self) -> f32 {
        self.bbox[2] - self.bbox[0]
    }
    /// Box height (y2 − y1).
    pub fn height(&self) -> f32 {
        self.bbox[3] - self.bbox[1]
    }
    /// The face with x scaled by `sx` and y by `sy` (coordinates of a resized image back to
    /// the original's).
    pub fn scaled(&self, sx: f32, sy: f32) -> Face {
        let [x1, y1, x2, y2] = self.bbox;
        Face {
            bbox: [x1 * sx, y1 * sy, x2 * sx, y2 * sy],
            score: self.score,
            landmarks: self.landmarks.map(|l| l.map(|[x, y]| [x * sx, y * sy])),
        }
    }

    /// Mirror horizontally in an image of width `w`, swapping left and right landmarks.
    pub fn flip_horizontal(&self, w: f32) -> Face {
        let [x1, y1, x2, y2] = self.bbox;
        let m = |p: [f32; 2]| [w - 1.0 - p[0], p[1]];
        Face {
            bbox: [w - 1.0 - x2, y1, w - 1.0 - x1, y2],
            score: self.score,
            landmarks: self
                .landmarks
                .map(|l| [m(l[1]), m(l[0]), m(l[2]), m(l[4]), m(l[3])]),
        }
    }
}
