//! Ground truth to anchors (SPEC §1.5, §2): IoU matching with a configurable positive
//! threshold, background threshold (an ignore band between them), best-anchor forcing and
//! S³FD's scale compensation, then the targets encoded with the detector's own box and
//! landmark coding, and DF²S²'s box-level segmentation masks.

use retinaface::config::AnchorConfig;
use retinaface::post::anchors::{level_size, Prior};
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
    /// S³FD's scale compensation: a face with fewer face anchors than the average face of the
    /// image also gets its best remaining anchors above IoU 0.1, up to that average. Off by
    /// default; it gives small faces, which few anchors overlap well, as many positives as
    /// large ones.
    #[serde(default)]
    pub compensate: bool,
}

/// IoU above which S³FD's compensation may add an anchor.
const COMPENSATION_IOU: f32 = 0.1;

impl MatchConfig {
    /// The port: 0.35 for positives, no ignore band, best anchors forced.
    pub fn port() -> Self {
        MatchConfig {
            positive_iou: 0.35,
            negative_iou: 0.35,
            force_best: true,
            min_best_iou: 0.2,
            compensate: false,
        }
    }

    /// The paper: positive above 0.5, background below 0.3, ignored between.
    pub fn paper() -> Self {
        MatchConfig {
            positive_iou: 0.5,
            negative_iou: 0.3,
            force_best: false,
            min_best_iou: 0.2,
            compensate: false,
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
    assign_detailed(priors, faces, config).0
}

/// Assign every prior; also each face's best prior (its index), where any overlaps it.
pub fn assign_detailed(
    priors: &[Prior],
    faces: &[TargetFace],
    config: &MatchConfig,
) -> (Vec<Assignment>, Vec<Option<usize>>) {
    let mut best_face = vec![(0usize, 0.0f32); priors.len()];
    let mut best_prior = vec![(0usize, -1.0f32); faces.len()];
    // (face, prior, IoU) above the compensation threshold, for S³FD's second stage.
    let mut candidates: Vec<(usize, usize, f32)> = Vec::new();
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
            if config.compensate && o > COMPENSATION_IOU {
                candidates.push((j, i, o));
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
    if config.compensate {
        compensate(&mut out, faces.len(), candidates);
    }
    let best = best_prior
        .iter()
        .map(|&(i, o)| (o > 0.0).then_some(i))
        .collect();
    (out, best)
}

/// S³FD's second matching stage: faces below the average number of face anchors per matched
/// face take their best not-yet-face anchors above IoU 0.1, highest IoU first, up to it.
fn compensate(out: &mut [Assignment], faces: usize, mut candidates: Vec<(usize, usize, f32)>) {
    let mut count = vec![0usize; faces];
    for a in out.iter() {
        if let Assignment::Face(j) = a {
            count[*j] += 1;
        }
    }
    let matched: Vec<usize> = count.iter().copied().filter(|&c| c > 0).collect();
    if matched.is_empty() {
        return;
    }
    let average = matched.iter().sum::<usize>() / matched.len();
    // By face, then highest IoU first; ties by anchor index for determinism.
    candidates.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.2.total_cmp(&a.2)).then(a.1.cmp(&b.1)));
    for (j, i, _) in candidates {
        if count[j] < average && !matches!(out[i], Assignment::Face(_)) {
            out[i] = Assignment::Face(j);
            count[j] += 1;
        }
    }
}

/// One pyramid level as the targets see it: stride, feature-map size and where its anchors
/// sit in the network's output order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub step: usize,
    pub rows: usize,
    pub cols: usize,
    /// Index of the level's first anchor.
    pub first: usize,
    /// Anchors on the level.
    pub anchors: usize,
    /// The input's size, which the cell centres are normalised by (as the priors are).
    pub image: (usize, usize),
}

/// The levels of `config` for an `h × w` input, finest first.
pub fn levels(config: &AnchorConfig, h: usize, w: usize) -> Vec<Level> {
    let mut first = 0;
    config
        .steps
        .iter()
        .enumerate()
        .map(|(l, &step)| {
            let (rows, cols) = level_size(h, w, step);
            let anchors = rows * cols * config.per_cell(l);
            let level = Level {
                step,
                rows,
                cols,
                first,
                anchors,
                image: (h, w),
            };
            first += anchors;
            level
        })
        .collect()
}

/// DF²S²'s box-level segmentation masks (SPEC §2): per level, `rows · cols` values, 1 at the
/// cells whose centre lies inside a face assigned to that level. A face is assigned to the
/// level of its best-overlapping anchor, the anchor scale that matches it as the matcher
/// sees it; `best` is that anchor per face (from [`assign_detailed`]). Faces no anchor
/// overlaps mark no level.
pub fn segmentation_masks(
    levels: &[Level],
    faces: &[TargetFace],
    best: &[Option<usize>],
) -> Vec<Vec<f32>> {
    let mut masks: Vec<Vec<f32>> = levels.iter().map(|l| vec![0.0; l.rows * l.cols]).collect();
    for (f, b) in faces.iter().zip(best) {
        let Some(anchor) = b else { continue };
        let Some(k) = levels
            .iter()
            .position(|l| (l.first..l.first + l.anchors).contains(anchor))
        else {
            continue;
        };
        let l = &levels[k];
        // Normalised coordinates: cell (y, x) has its centre at ((x + ½) · step / width, …),
        // where the priors sit; a closed box test keeps the mask of a mirrored box the mirror
        // of the mask.
        let (h, w) = (l.image.0 as f64, l.image.1 as f64);
        let inside = |c: usize, n: f64, lo: f32, hi: f32| {
            let v = ((c as f64 + 0.5) * l.step as f64 / n) as f32;
            v >= lo && v <= hi
        };
        for y in (0..l.rows).filter(|&y| inside(y, h, f.bbox[1], f.bbox[3])) {
            for x in (0..l.cols).filter(|&x| inside(x, w, f.bbox[0], f.bbox[2])) {
                masks[k][y * l.cols + x] = 1.0;
            }
        }
    }
    masks
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
    /// Per level, the box-level segmentation mask (`rows · cols`), when asked for.
    pub masks: Vec<Vec<f32>>,
    /// Every face anchor with the IoU of its prior and its face, in anchor order (the mesh
    /// branch renders the best-overlapping ones).
    pub positive_iou: Vec<(u32, f32)>,
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
    targets_with_masks(priors, faces, config, variances, None)
}

/// Match and encode; with `levels`, also the segmentation masks of those levels, from the
/// same faces and the same matching.
pub fn targets_with_masks(
    priors: &[Prior],
    faces: &[TargetFace],
    config: &MatchConfig,
    variances: [f32; 2],
    levels: Option<&[Level]>,
) -> Targets {
    let n = priors.len();
    let (assignment, best) = assign_detailed(priors, faces, config);
    let mut t = Targets {
        labels: vec![0; n],
        boxes: vec![0.0; 4 * n],
        landmarks: vec![0.0; 10 * n],
        landmark_mask: vec![0.0; n],
        masks: levels
            .map(|l| segmentation_masks(l, faces, &best))
            .unwrap_or_default(),
        positive_iou: Vec::new(),
    };
    for (i, a) in assignment.into_iter().enumerate() {
        match a {
            Assignment::Background => {}
            Assignment::Ignored => t.labels[i] = -1,
            Assignment::Face(j) => {
                t.labels[i] = 1;
                let f = &faces[j];
                t.positive_iou
                    .push((i as u32, iou(corners(&priors[i]), f.bbox)));
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

    fn df2s2_640() -> (Vec<Prior>, Vec<Level>) {
        let a = AnchorConfig::df2s2();
        (
            retinaface::post::anchors::priors(&a, 640, 640),
            levels(&a, 640, 640),
        )
    }

    #[test]
    fn ratio_one_and_a_half_anchors_take_profile_faces() {
        let (priors, levels) = df2s2_640();
        assert_eq!(levels.len(), 6);
        assert_eq!(
            levels.iter().map(|l| l.anchors).sum::<usize>(),
            priors.len()
        );
        // A 1:1.5 face exactly on the stride-8 ratio-1.5 anchor of cell (10, 12): 32/√1.5 by
        // 32·√1.5 pixels centred at (100, 84).
        let k = 1.5f32.sqrt();
        let (w, h) = (32.0 / k, 32.0 * k);
        let (cx, cy) = (100.0, 84.0);
        let f = face([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0].map(|v| v / 640.0));
        let config = MatchConfig {
            positive_iou: 0.5,
            negative_iou: 0.5,
            force_best: false,
            ..MatchConfig::paper()
        };
        let (assignment, best) = assign_detailed(&priors, &[f], &config);
        let on_cell = levels[1].first + (10 * levels[1].cols + 12) * 2;
        assert_eq!(
            best,
            [Some(on_cell + 1)],
            "the ratio-1.5 anchor is the best"
        );
        assert!((iou(corners(&priors[on_cell + 1]), f.bbox) - 1.0).abs() < 1e-5);
        // The square anchor of the same cell overlaps it by 1/√1.5 … also a face above 0.5.
        let square = iou(corners(&priors[on_cell]), f.bbox);
        assert!((square - 0.6899).abs() < 1e-3, "{square}");
        assert_eq!(assignment[on_cell + 1], Assignment::Face(0));
        assert_eq!(assignment[on_cell], Assignment::Face(0));
        // Nothing between 0.5 and the threshold is ignored: no ignore band.
        assert!(assignment.iter().all(|a| *a != Assignment::Ignored));
        let t = targets(&priors, &[f], &config, [0.1, 0.2]);
        let b = retinaface::post::coding::decode_box(
            &priors[on_cell + 1],
            &t.boxes[4 * (on_cell + 1)..4 * (on_cell + 2)],
            [0.1, 0.2],
        );
        for (x, y) in b.iter().zip(f.bbox) {
            assert!((x - y).abs() < 1e-6);
        }
    }

    #[test]
    fn masks_mark_the_cells_of_each_face_on_its_level_and_flip_with_it() {
        let (priors, levels) = df2s2_640();
        // A 60 px face (best anchor 64 px, stride 16: level 2) and a 20 px face (16 px
        // anchors, stride 4: level 0).
        let big = face([100.0, 200.0, 160.0, 260.0].map(|v| v / 640.0));
        let small = face([400.0, 40.0, 420.0, 60.0].map(|v| v / 640.0));
        let (_, best) = assign_detailed(&priors, &[big, small], &MatchConfig::paper());
        let masks = segmentation_masks(&levels, &[big, small], &best);
        assert_eq!(masks.len(), 6);
        let cells = |m: &Vec<f32>, cols: usize| -> Vec<(usize, usize)> {
            (0..m.len())
                .filter(|&i| m[i] > 0.0)
                .map(|i| (i / cols, i % cols))
                .collect()
        };
        // Stride 16: centres 8 + 16x inside [100, 160] → x = 6…9; [200, 260] → y = 12…15.
        let want: Vec<(usize, usize)> = (12..16)
            .flat_map(|y| (6..10).map(move |x| (y, x)))
            .collect();
        assert_eq!(cells(&masks[2], 40), want);
        // Stride 4: centres 2 + 4x inside [400, 420] → x = 100…104; [40, 60] → y = 10…14.
        let want: Vec<(usize, usize)> = (10..15)
            .flat_map(|y| (100..105).map(move |x| (y, x)))
            .collect();
        assert_eq!(cells(&masks[0], 160), want);
        for k in [1, 3, 4, 5] {
            assert!(masks[k].iter().all(|&v| v == 0.0), "level {k}");
        }
        // The flipped sample (x → 1 − x) has the mirrored masks.
        let flip = |f: TargetFace| face([1.0 - f.bbox[2], f.bbox[1], 1.0 - f.bbox[0], f.bbox[3]]);
        let flipped = [flip(big), flip(small)];
        let (_, best_f) = assign_detailed(&priors, &flipped, &MatchConfig::paper());
        let masks_f = segmentation_masks(&levels, &flipped, &best_f);
        for (l, (m, mf)) in levels.iter().zip(masks.iter().zip(&masks_f)) {
            for y in 0..l.rows {
                for x in 0..l.cols {
                    assert_eq!(m[y * l.cols + x], mf[y * l.cols + l.cols - 1 - x]);
                }
            }
        }
        // Targets carry the same masks when asked, none otherwise.
        let t = targets_with_masks(
            &priors,
            &[big, small],
            &MatchConfig::paper(),
            [0.1, 0.2],
            Some(&levels),
        );
        assert_eq!(t.masks, masks);
        assert!(targets(&priors, &[big], &MatchConfig::paper(), [0.1, 0.2])
            .masks
            .is_empty());
    }

    #[test]
    fn compensation_gives_small_faces_the_average_anchor_count() {
        let (priors, _) = df2s2_640();
        let config = MatchConfig {
            positive_iou: 0.5,
            negative_iou: 0.5,
            force_best: false,
            ..MatchConfig::paper()
        };
        // A face matched well, and a 9 px face that no anchor reaches IoU 0.5 with.
        let big = face([100.0, 200.0, 164.0, 264.0].map(|v| v / 640.0));
        let tiny = face([400.0, 40.0, 409.0, 49.0].map(|v| v / 640.0));
        let count =
            |a: &[Assignment], j: usize| a.iter().filter(|&&x| x == Assignment::Face(j)).count();
        let plain = assign(&priors, &[big, tiny], &config);
        assert!(count(&plain, 0) >= 2);
        assert_eq!(count(&plain, 1), 0);
        let s3fd = MatchConfig {
            compensate: true,
            ..config
        };
        let comp = assign(&priors, &[big, tiny], &s3fd);
        // Average over the faces matched in stage one (the big one only).
        assert_eq!(count(&comp, 1), count(&plain, 0));
        assert_eq!(count(&comp, 0), count(&plain, 0));
        for (i, a) in comp.iter().enumerate() {
            if *a == Assignment::Face(1) {
                assert!(iou(corners(&priors[i]), tiny.bbox) > COMPENSATION_IOU);
            }
        }
    }
}
