//! The evaluation of `wider_eval.py`, step for step (and operation for operation, so that
//! the floating-point results agree with the reference, not merely approximately).

use super::{GroundTruth, Predictions, Setting, WiderDetection, WiderError};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

/// Number of score thresholds of the PR curve: `t_k = 1 − (k+1)/1000`.
pub const N_THRESHOLDS: usize = 1000;

/// Restricts an evaluation to images by name (file stem), whatever their event: the
/// semantics of `wider_eval.py --images DIR`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFilter {
    /// The image names (stems) to keep.
    pub names: HashSet<String>,
}

impl ImageFilter {
    /// Every file under `dir` (recursively, not following symlinked folders, as `os.walk`)
    /// whose name ends in `.jpg`, `.jpeg` or `.png` (any case) contributes its stem.
    pub fn from_dir(dir: &Path) -> Result<ImageFilter, WiderError> {
        let mut names = HashSet::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let io = |source| WiderError::Io {
                path: d.clone(),
                source,
            };
            for entry in std::fs::read_dir(&d).map_err(io)? {
                let entry = entry.map_err(io)?;
                let path = entry.path();
                let file_type = entry.file_type().map_err(io)?;
                if file_type.is_dir() {
                    stack.push(path);
                    continue;
                }
                // A symlink to a folder is listed but not entered; one to a file counts.
                if file_type.is_symlink() && path.is_dir() {
                    continue;
                }
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let lower = name.to_ascii_lowercase();
                if [".jpg", ".jpeg", ".png"].iter().any(|e| lower.ends_with(e)) {
                    let stem = Path::new(name)
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or(name);
                    names.insert(stem.to_string());
                }
            }
        }
        Ok(ImageFilter { names })
    }

    /// A filter from image names; a name with an extension or folder is reduced to its stem.
    pub fn from_names<I, S>(names: I) -> ImageFilter
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        ImageFilter {
            names: names
                .into_iter()
                .map(|n| {
                    let n = n.as_ref();
                    Path::new(n)
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or(n)
                        .to_string()
                })
                .collect(),
        }
    }

    /// Whether the image `name` (stem) is kept.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }
}

/// Options of an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// IoU at or above which a detection matches a box (`--iou`, default 0.5).
    pub iou_threshold: f64,
    /// Evaluate only these images (`--images`); `None` evaluates every ground-truth image.
    pub images: Option<ImageFilter>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            iou_threshold: 0.5,
            images: None,
        }
    }
}

/// Which faces count: a WIDER setting, or every box (box-only ground truth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subset {
    /// The faces of a setting's `gt_list`; other boxes are ignored.
    Setting(Setting),
    /// Every box counts, none is ignored (works with the text ground truth).
    AllBoxes,
}

/// One point of the dataset-wide PR curve, at one score threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrPoint {
    /// Normalised-score threshold `1 − (k+1)/1000`.
    pub threshold: f64,
    /// Precision (0 where no detection passes the threshold).
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// Detections at or above the threshold that are not ignored.
    pub proposals: f64,
    /// Faces found at that threshold.
    pub true_positives: f64,
}

/// The result of one setting. Serialises as `{"ap": f64, "faces": int, "images": int}`,
/// the shape `wider_eval.py --json` prints; the curve is left out of the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingReport {
    /// VOC average precision under the monotone precision envelope.
    pub ap: f64,
    /// Faces that count (the setting's `gt_list` lengths summed over the evaluated images).
    pub faces: usize,
    /// Images evaluated.
    pub images: usize,
    /// The PR curve, one point per threshold, thresholds descending.
    #[serde(skip)]
    pub pr_curve: Vec<PrPoint>,
}

/// The result of an evaluation. Serialises exactly to the object `wider_eval.py --json`
/// prints: `{"easy": {..}, "medium": {..}, "hard": {..}}` in that order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Easy setting.
    pub easy: SettingReport,
    /// Medium setting.
    pub medium: SettingReport,
    /// Hard setting.
    pub hard: SettingReport,
    /// The raw score range `(min, max)` that was normalised to `[0, 1]`.
    #[serde(skip)]
    pub score_range: (f64, f64),
    /// `event/image` of prediction files that match no ground-truth image (their scores still
    /// take part in the normalisation, as in the reference); worth a warning.
    #[serde(skip)]
    pub unknown_images: Vec<String>,
}

impl EvalReport {
    /// The report of one setting.
    pub fn get(&self, setting: Setting) -> &SettingReport {
        setting.pick(&self.easy, &self.medium, &self.hard)
    }

    /// One line of compact JSON: `{"easy":{"ap":…,"faces":…,"images":…},"medium":…,"hard":…}`.
    pub fn to_json(&self) -> String {
        // Serialising plain structs of numbers cannot fail; the fallback is unreachable.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The reference's text output: `easy   AP 0.8631  (299 faces in 145 images)` per line.
    pub fn to_text(&self) -> String {
        Setting::ALL
            .iter()
            .map(|&s| {
                let r = self.get(s);
                format!(
                    "{:<6} AP {:.4}  ({} faces in {} images)\n",
                    s.name(),
                    r.ap,
                    r.faces,
                    r.images
                )
            })
            .collect()
    }
}

/// Evaluates the three settings, exactly as `wider_eval.py`.
///
/// Errors: a prediction event that the ground truth lacks, ground truth without settings,
/// or a prediction set without a single detection (the reference exits then).
pub fn evaluate(
    gt: &GroundTruth,
    preds: &Predictions,
    opts: &EvalOptions,
) -> Result<EvalReport, WiderError> {
    let norm = Normaliser::new(gt, preds)?;
    let easy = run(gt, preds, opts, Subset::Setting(Setting::Easy), &norm)?;
    let medium = run(gt, preds, opts, Subset::Setting(Setting::Medium), &norm)?;
    let hard = run(gt, preds, opts, Subset::Setting(Setting::Hard), &norm)?;
    Ok(EvalReport {
        easy,
        medium,
        hard,
        score_range: (norm.lo, norm.lo + norm.span),
        unknown_images: unknown_images(gt, preds),
    })
}

/// Evaluates one subset: a setting, or every box ([`Subset::AllBoxes`], for box-only
/// ground truth). Same rules and errors as [`evaluate`].
pub fn evaluate_subset(
    gt: &GroundTruth,
    preds: &Predictions,
    subset: Subset,
    opts: &EvalOptions,
) -> Result<SettingReport, WiderError> {
    let norm = Normaliser::new(gt, preds)?;
    run(gt, preds, opts, subset, &norm)
}

/// Min-max normalisation over every prediction of the run, including images that the
/// filter leaves out or that the ground truth lacks (as the reference does).
struct Normaliser {
    lo: f64,
    span: f64,
}

impl Normaliser {
    fn new(gt: &GroundTruth, preds: &Predictions) -> Result<Normaliser, WiderError> {
        for event in preds.events.keys() {
            if gt.event(event).is_none() {
                let path = match &preds.root {
                    Some(root) => root.join(event),
                    None => event.into(),
                };
                return Err(WiderError::UnknownEvent {
                    path,
                    event: event.clone(),
                });
            }
        }
        let mut scores = preds
            .events
            .values()
            .flat_map(|e| e.values())
            .flatten()
            .map(|d| d.score);
        let Some(first) = scores.next() else {
            return Err(WiderError::NoPredictions(
                preds.root.clone().unwrap_or_else(|| "<predictions>".into()),
            ));
        };
        let (lo, hi) = scores.fold((first, first), |(lo, hi), s| (lo.min(s), hi.max(s)));
        let span = if hi > lo { hi - lo } else { 1.0 };
        Ok(Normaliser { lo, span })
    }
}

fn unknown_images(gt: &GroundTruth, preds: &Predictions) -> Vec<String> {
    let mut out = Vec::new();
    for (event, images) in &preds.events {
        for name in images.keys() {
            if gt.image(event, name).is_none() {
                out.push(format!("{event}/{name}"));
            }
        }
    }
    out
}

fn run(
    gt: &GroundTruth,
    preds: &Predictions,
    opts: &EvalOptions,
    subset: Subset,
    norm: &Normaliser,
) -> Result<SettingReport, WiderError> {
    if !(opts.iou_threshold.is_finite()) {
        return Err(WiderError::InvalidOption(format!(
            "IoU threshold {} is not a number",
            opts.iou_threshold
        )));
    }
    let mut pr = vec![[0.0f64; 2]; N_THRESHOLDS];
    let mut count_face = 0usize;
    let mut n_images = 0usize;
    let mut keep = Vec::new();
    for event in &gt.events {
        for image in &event.images {
            if let Some(filter) = &opts.images {
                if !filter.contains(&image.name) {
                    continue;
                }
            }
            n_images += 1;
            keep.clear();
            keep.resize(image.boxes.len(), false);
            match subset {
                Subset::Setting(setting) => {
                    let lists = image
                        .settings
                        .as_ref()
                        .ok_or(WiderError::SettingsUnavailable { setting })?;
                    for &i in lists.get(setting) {
                        // Out-of-range indices are refused when loading; built by hand,
                        // they cannot mark a box, but they still count as in the reference.
                        if let Some(k) = keep.get_mut(i) {
                            *k = true;
                        }
                    }
                    count_face += lists.get(setting).len();
                }
                Subset::AllBoxes => {
                    keep.fill(true);
                    count_face += image.boxes.len();
                }
            }
            let dets = match preds.get(&event.name, &image.name) {
                Some(d) if !d.is_empty() && !image.boxes.is_empty() => d,
                _ => continue,
            };
            let sorted = normalised_sorted(dets, norm);
            let (pred_recall, proposal) =
                image_eval(&sorted, &image.boxes, &keep, opts.iou_threshold);
            img_pr_info(&sorted, &proposal, &pred_recall, &mut pr);
        }
    }
    let denom = count_face.max(1) as f64;
    let mut rec = Vec::with_capacity(N_THRESHOLDS);
    let mut prec = Vec::with_capacity(N_THRESHOLDS);
    let mut curve = Vec::with_capacity(N_THRESHOLDS);
    for (t, &[proposals, tp]) in pr.iter().enumerate() {
        let p = if proposals > 0.0 {
            tp / proposals.max(1.0)
        } else {
            0.0
        };
        let r = tp / denom;
        prec.push(p);
        rec.push(r);
        curve.push(PrPoint {
            threshold: threshold(t),
            precision: p,
            recall: r,
            proposals,
            true_positives: tp,
        });
    }
    Ok(SettingReport {
        ap: voc_ap(&rec, &prec),
        faces: count_face,
        images: n_images,
        pr_curve: curve,
    })
}

fn threshold(t: usize) -> f64 {
    1.0 - (t + 1) as f64 / N_THRESHOLDS as f64
}

/// `[x1, y1, x2, y2, normalised score]`, in descending score order (stable, like
/// `np.argsort(-s, kind='stable')`).
fn normalised_sorted(dets: &[WiderDetection], norm: &Normaliser) -> Vec<[f64; 5]> {
    let mut v: Vec<[f64; 5]> = dets
        .iter()
        .map(|d| {
            [
                d.x,
                d.y,
                d.w + d.x,
                d.h + d.y,
                (d.score - norm.lo) / norm.span,
            ]
        })
        .collect();
    // Scores are finite (the parser refuses others), so the order is total.
    v.sort_by(|a, b| b[4].total_cmp(&a[4]));
    v
}

/// Per detection, the count of faces recalled so far and whether it is a proposal
/// (`true`) or ignored (`false`, matched to a box outside the subset).
fn image_eval(
    pred: &[[f64; 5]],
    gt: &[[f64; 4]],
    keep: &[bool],
    iou_thresh: f64,
) -> (Vec<f64>, Vec<bool>) {
    let g: Vec<[f64; 5]> = gt
        .iter()
        .map(|b| {
            let (x1, y1, x2, y2) = (b[0], b[1], b[2] + b[0], b[3] + b[1]);
            [x1, y1, x2, y2, (x2 - x1 + 1.0) * (y2 - y1 + 1.0)]
        })
        .collect();
    // 0: not yet found, 1: found, -1: an ignored box that a detection hit.
    let mut recall = vec![0i8; g.len()];
    let mut found = 0usize;
    let mut proposal = vec![true; pred.len()];
    let mut pred_recall = vec![0.0; pred.len()];
    for (h, p) in pred.iter().enumerate() {
        let area_a = (p[2] - p[0] + 1.0) * (p[3] - p[1] + 1.0);
        let (j, m) = argmax(g.iter().map(|b| {
            let iw = p[2].min(b[2]) - p[0].max(b[0]) + 1.0;
            let ih = p[3].min(b[3]) - p[1].max(b[1]) + 1.0;
            let inter = iw.max(0.0) * ih.max(0.0);
            let ua = area_a + b[4] - inter;
            if iw > 0.0 && ih > 0.0 {
                inter / ua
            } else {
                0.0
            }
        }));
        if m >= iou_thresh {
            if !keep[j] {
                recall[j] = -1;
                proposal[h] = false;
            } else if recall[j] == 0 {
                recall[j] = 1;
                found += 1;
            }
        }
        pred_recall[h] = found as f64;
    }
    (pred_recall, proposal)
}

/// `np.argmax`: the first maximum, or the first NaN if there is one.
fn argmax(values: impl Iterator<Item = f64>) -> (usize, f64) {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v.is_nan() {
            return (i, v);
        }
        if i == 0 || v > best.1 {
            best = (i, v);
        }
    }
    best
}

/// Adds this image's (proposals, recalled) at each threshold to `pr`.
fn img_pr_info(pred: &[[f64; 5]], proposal: &[bool], pred_recall: &[f64], pr: &mut [[f64; 2]]) {
    // Sorted descending, so the detections at or above a threshold are a prefix.
    let mut n_above = 0;
    let mut proposals_above = 0.0;
    for (t, row) in pr.iter_mut().enumerate() {
        let th = threshold(t);
        while n_above < pred.len() && pred[n_above][4] >= th {
            if proposal[n_above] {
                proposals_above += 1.0;
            }
            n_above += 1;
        }
        if n_above == 0 {
            continue;
        }
        row[0] += proposals_above;
        row[1] += pred_recall[n_above - 1];
    }
}

/// VOC AP: area under the monotone precision envelope.
fn voc_ap(rec: &[f64], prec: &[f64]) -> f64 {
    let mut mrec = Vec::with_capacity(rec.len() + 2);
    mrec.push(0.0);
    mrec.extend_from_slice(rec);
    mrec.push(1.0);
    let mut mpre = Vec::with_capacity(prec.len() + 2);
    mpre.push(0.0);
    mpre.extend_from_slice(prec);
    mpre.push(0.0);
    for i in (1..mpre.len()).rev() {
        mpre[i - 1] = mpre[i - 1].max(mpre[i]);
    }
    let terms: Vec<f64> = (0..mrec.len() - 1)
        .filter(|&i| mrec[i + 1] != mrec[i])
        .map(|i| (mrec[i + 1] - mrec[i]) * mpre[i + 1])
        .collect();
    0.0 + pairwise_sum(&terms)
}

/// NumPy's pairwise summation (what `np.sum` does on a contiguous float array), so the
/// AP agrees with the reference to the last bit rather than to rounding.
fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &x in a {
            res += x;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for (k, rk) in r.iter_mut().enumerate() {
                *rk += a[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[i..] {
            res += x;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_sum_matches_sequential_closely() {
        let v: Vec<f64> = (0..1001).map(|i| (i as f64 * 0.37).sin().abs()).collect();
        let seq: f64 = v.iter().sum();
        assert!((pairwise_sum(&v) - seq).abs() < 1e-9);
        assert_eq!(pairwise_sum(&[1.0, 2.0, 3.0]), 6.0);
        assert_eq!(pairwise_sum(&[]), 0.0);
    }

    #[test]
    fn voc_ap_of_a_perfect_curve_is_one() {
        assert_eq!(voc_ap(&[0.5, 1.0], &[1.0, 1.0]), 1.0);
        // Envelope: the dip to 0.5 at recall 0.5 is lifted to the later 1.0.
        assert_eq!(voc_ap(&[0.25, 0.5, 0.75], &[0.5, 0.5, 1.0]), 0.75);
    }
}
