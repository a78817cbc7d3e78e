//! Ground truth to anchors (SPEC §1.5): IoU matching with a configurable positive threshold,
//! background threshold (an ignore band between them) and best-anchor forcing, then the
//! targets encoded with the detector's own box and landmark coding.

use retinaface::post::anchors::Prior;
use retinaface::post::coding::{encode_box, encode_landmarks};
use serde::{Deserialize, Serialize};

/// Matching thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// IoU at or above which an anchor is a face.
    pub positive_iou: f32,
    /// IoU below which an anchor is background; between the two it is ignored.
    pub negative_iou: f32,
    /// Every face also claims its best anchor (when that IoU reaches `min_best_iou`).
    pub force_best: bool,
    /// A face whose best anchor overlaps it less than this is not matched at all (the port's
    /// 0.2).
    pub min_best_iou: f32,
}

impl MatchConfig {
    /// The port: 0.35 for positives, no ignore band, best anchors forced.
    pub fn port() -> Self {
        MatchConfig {
            positive_iou: 0.35,
            negative_iou: 0.35,
            force_best: true,
            min_best_iou: 0.2,
        }
    }

    /// The paper: positive above 0.5, background below 0.3, ignored between.
    pub fn paper() -> Self {
        MatchConfig {
            positive_iou: 0.5,
            negative_iou: 0.3,
            force_best: false,
            min_best_iou: 0.2,
        }
    }
}

/// A face in normalised coordinates (0–1 of the training image).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetFace {
    /// `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    /// Five points, when annotated.
    pub landmarks: Option<[[f32; 2]; 5]>,
}

/// What an anchor learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    Background,
    Ignored,
    /// Matched to face `i`.
    Face(usize),
}

/// IoU of two `[x1, y1, x2, y2]` boxes (no +1: normalised coordinates, as the port).
pub fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

fn corners(p: &Prior) -> [f32; 4] {
    [
        p.cx - p.w / 2.0,
        p.cy - p.h / 2.0,
        p.cx + p.w / 2.0,
        p.cy + p.h / 2.0,
    ]
}

/// Assign every prior.
pub fn assign(priors: &[Prior], faces: &[TargetFace], config: &MatchConfig) -> Vec<Assignment> {
    let mut best_face = vec![(0usize, 0.0f32); priors.len()];
    let mut best_prior = vec![(0usize, -1.0f32); faces.len()];
    for (i, p) in priors.iter().enumerate() {
        let pc = corners(p);
        for (j, f) in faces.iter().enumerate() {
            // Cheap reject: no overlap at all.
            if pc[2] <= f.bbox[0] || pc[0] >= f.bbox[2] || pc[3] <= f.bbox[1] || pc[1] >= f.bbox[3]
            {
                continue;
            }
            let o = iou(pc, f.bbox);
            if o > best_face[i].1 {
                best_face[i] = (j, o);
            }
            if o > best_prior[j].1 {
                best_prior[j] = (i, o);
            }
        }
    }
    let mut out: Vec<Assignment> = best_face
        .iter()
        .map(|&(j, o)| {
            if o >= config.positive_iou && !faces.is_empty() {
                Assignment::Face(j)
            } else if o < config.negative_iou {
                Assignment::Background
            } else {
                Assignment::Ignored
            }
        })
        .collect();
    if config.force_best {
        for (j, &(i, o)) in best_prior.iter().enumerate() {
            if o >= config.min_best_iou {
                out[i] = Assignment::Face(j);
            }
        }
    }
    out
}

/// Per-anchor targets of one image, flat for the loss.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Targets {
    /// 1 face, 0 background, −1 ignored.
    pub labels: Vec<i8>,
    /// `[N · 4]` encoded boxes (zero where not a face).
    pub boxes: Vec<f32>,
    /// `[N · 10]` encoded landmarks (zero where not a face with landmarks).
    pub landmarks: Vec<f32>,
    /// 1 where the anchor is a face with landmarks.
    pub landmark_mask: Vec<f32>,
}

impl Targets {
    /// Number of face anchors.
    pub fn positives(&self) -> usize {
        self.labels.iter().filter(|&&l| l == 1).count()
    }
}

/// Match and encode.
pub fn targets(
    priors: &[Prior],
    faces: &[TargetFace],
    config: &MatchConfig,
    variances: [f32; 2],
) -> Targets {
    let n = priors.len();
    let mut t = Targets {
        labels: vec![0; n],
        boxes: vec![0.0; 4 * n],
        landmarks: vec![0.0; 10 * n],
        landmark_mask: vec![0.0; n],
    };
    for (i, a) in assign(priors, faces, config).into_iter().enumerate() {
        match a {
            Assignment::Background => {}
            Assignment::Ignored => t.labels[i] = -1,
            Assignment::Face(j) => {
                t.labels[i] = 1;
                let f = &faces[j];
                t.boxes[4 * i..4 * i + 4]
                    .copy_from_slice(&encode_box(&priors[i], f.bbox, variances));
                if let Some(pts) = &f.landmarks {
                    t.landmarks[10 * i..10 * i + 10]
                        .copy_from_slice(&encode_landmarks(&priors[i], pts, variances));
                    t.landmark_mask[i] = 1.0;
                }
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use retinaface::post::coding::{decode_box, decode_landmarks};

    fn prior(cx: f32, cy: f32, s: f32) -> Prior {
        Prior { cx, cy, w: s, h: s }
    }

    fn face(b: [f32; 4]) -> TargetFace {
        TargetFace {
            bbox: b,
            landmarks: None,
        }
    }

    #[test]
    fn thresholds_ignore_band_and_forcing() {
        // A face [0.2, 0.2, 0.4, 0.4]; anchors of side 0.2 shifted so that IoU falls in each band.
        let f = face([0.2, 0.2, 0.4, 0.4]);
        let priors = [
            prior(0.3, 0.3, 0.2),  // IoU 1
            prior(0.34, 0.3, 0.2), // overlap 0.16 of 0.2 → IoU 0.16·0.2/(0.08−0.032)=0.667
            prior(0.37, 0.3, 0.2), // 0.13·0.2 = 0.026 / (0.08 − 0.026) = 0.481
            prior(0.4, 0.3, 0.2),  // 0.1·0.2 = 0.02 / 0.06 = 0.333
            prior(0.45, 0.3, 0.2), // 0.05·0.2 = 0.01 / 0.07 = 0.143
            prior(0.8, 0.8, 0.2),  // none
        ];
        let ious: Vec<f32> = priors.iter().map(|p| iou(corners(p), f.bbox)).collect();
        assert!((ious[1] - 0.6667).abs() < 1e-3 && (ious[2] - 0.4815).abs() < 1e-3);
        assert!((ious[3] - 0.3333).abs() < 1e-3 && (ious[4] - 0.1429).abs() < 1e-3);

        use Assignment::*;
        let paper = assign(&priors, &[f], &MatchConfig::paper());
        assert_eq!(
            paper,
            [Face(0), Face(0), Ignored, Ignored, Background, Background]
        );
        let port = assign(&priors, &[f], &MatchConfig::port());
        assert_eq!(
            port,
            [
                Face(0),
                Face(0),
                Face(0),
                Background,
                Background,
                Background
            ]
        );

        // A small face that no anchor covers at 0.35: the port forces its best anchor, the
        // paper's thresholds leave it unmatched.
        let small = face([0.44, 0.24, 0.52, 0.36]);
        let priors = [prior(0.3, 0.3, 0.2), prior(0.5, 0.3, 0.2)];
        let best = iou(corners(&priors[1]), small.bbox);
        assert!(best > 0.2 && best < 0.3, "{best}");
        assert_eq!(
            assign(&priors, &[small], &MatchConfig::port()),
            [Background, Face(0)]
        );
        assert_eq!(
            assign(&priors, &[small], &MatchConfig::paper()),
            [Background, Background]
        );
        // Below min_best_iou even the port gives up.
        let tiny = face([0.59, 0.29, 0.6, 0.3]);
        assert_eq!(
            assign(&priors, &[tiny], &MatchConfig::port()),
            [Background, Background]
        );
    }

    #[test]
    fn forced_anchor_goes_to_its_face_even_if_another_overlaps_more() {
        // Anchor 0 is both faces' best; it overlaps the big face more (IoU 1 vs 0.64) but
        // forcing hands it to the last face claiming it, as the port's loop does.
        let big = face([0.0, 0.0, 0.2, 0.2]);
        let inner = face([0.02, 0.02, 0.18, 0.18]);
        let priors = [prior(0.1, 0.1, 0.2), prior(0.7, 0.7, 0.2)];
        assert!((iou(corners(&priors[0]), inner.bbox) - 0.64).abs() < 1e-5);
        let a = assign(&priors, &[big, inner], &MatchConfig::port());
        assert_eq!(a, [Assignment::Face(1), Assignment::Background]);
        let unforced = MatchConfig {
            force_best: false,
            ..MatchConfig::port()
        };
        assert_eq!(
            assign(&priors, &[big, inner], &unforced)[0],
            Assignment::Face(0)
        );
    }

    #[test]
    fn encoded_targets_decode_back_to_the_face() {
        let pts = [
            [0.25, 0.27],
            [0.35, 0.27],
            [0.3, 0.3],
            [0.26, 0.35],
            [0.34, 0.35],
        ];
        let f = TargetFace {
            bbox: [0.2, 0.2, 0.4, 0.4],
            landmarks: Some(pts),
        };
        let priors = [prior(0.31, 0.29, 0.2), prior(0.9, 0.9, 0.1)];
        let v = [0.1, 0.2];
        let t = targets(
            &priors,
            &[f, face([0.85, 0.85, 0.95, 0.95])],
            &MatchConfig::port(),
            v,
        );
        assert_eq!(t.labels, [1, 1]);
        assert_eq!(t.landmark_mask, [1.0, 0.0]);
        let b = decode_box(&priors[0], &t.boxes[0..4], v);
        for (x, y) in b.iter().zip(f.bbox) {
            assert!((x - y).abs() < 1e-6);
        }
        let l = decode_landmarks(&priors[0], &t.landmarks[0..10], v);
        for (a, b) in l.iter().zip(pts) {
            assert!((a[0] - b[0]).abs() < 1e-6 && (a[1] - b[1]).abs() < 1e-6);
        }
        assert!(t.landmarks[10..].iter().all(|&v| v == 0.0));
    }
}
