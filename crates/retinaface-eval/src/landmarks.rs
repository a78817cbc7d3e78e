//! The RetinaFace annotation format (`label.txt`) and the landmark evaluation (NME, failure
//! rate, cumulative error distribution) of `shared/docs/CONVENTIONS.md`.
//!
//! `label.txt`: a line `# event/name.jpg` opens each image; each face is then one line of
//! `x y w h`, five points `px py f` (left eye, right eye, nose, left and right mouth corner;
//! `-1 -1 -1` where missing; `f` the visibility flag, 0 visible) and one more per-face value.
//! Lines of only `x y w h` (the validation-style file) are accepted as faces without points.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why a label file was refused.
#[derive(Debug, thiserror::Error)]
pub enum LandmarkError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A malformed line.
    #[error("{path}:{line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// An option out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
}

/// One annotated face.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LabeledFace {
    /// `[x, y, w, h]` in pixels.
    pub bbox: [f32; 4],
    /// Five points `[px, py, f]` in the order left eye, right eye, nose, left mouth corner,
    /// right mouth corner; `[-1, -1, -1]` where not annotated.
    pub points: [[f32; 3]; 5],
    /// The last per-face value of the line (loaders ignore it), if present.
    pub extra: Option<f32>,
}

impl LabeledFace {
    /// Whether the face has landmarks: its first point's x is ≥ 0 (the port's rule).
    pub fn has_landmarks(&self) -> bool {
        self.points[0][0] >= 0.0
    }

    /// Point `k` (0..5) as `[x, y]`, or `None` where it is not annotated (x < 0).
    pub fn point(&self, k: usize) -> Option<[f32; 2]> {
        let p = self.points.get(k)?;
        (p[0] >= 0.0).then_some([p[0], p[1]])
    }

    /// The box as `[x1, y1, x2, y2]`.
    pub fn bbox_xyxy(&self) -> [f32; 4] {
        let [x, y, w, h] = self.bbox;
        [x, y, x + w, y + h]
    }
}

/// One image of a label file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabeledImage {
    /// The path as written after `# `, e.g. `0--Parade/0_Parade_marchingband_1_849.jpg`,
    /// relative to the images folder.
    pub path: String,
    /// Its faces in file order.
    pub faces: Vec<LabeledFace>,
}

/// A parsed `label.txt`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelFile {
    /// Images in file order.
    pub images: Vec<LabeledImage>,
}

impl LabelFile {
    /// Reads and parses a label file.
    pub fn load(path: &Path) -> Result<LabelFile, LandmarkError> {
        let bytes = std::fs::read(path).map_err(|source| LandmarkError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| LandmarkError::Line {
            path: path.to_path_buf(),
            line: 1,
            reason: "not UTF-8 text".into(),
        })?;
        LabelFile::parse(&text, path)
    }

    /// Parses label text; `path` only names the source in errors. Blank lines, trailing
    /// whitespace and Windows line ends are accepted.
    pub fn parse(text: &str, path: &Path) -> Result<LabelFile, LandmarkError> {
        let err = |line: usize, reason: String| LandmarkError::Line {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let mut images: Vec<LabeledImage> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let no = i + 1;
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix('#') {
                let p = rest.trim();
                if p.is_empty() {
                    return Err(err(no, "'#' line without an image path".into()));
                }
                images.push(LabeledImage {
                    path: p.to_string(),
                    faces: Vec::new(),
                });
                continue;
            }
            let image = images
                .last_mut()
                .ok_or_else(|| err(no, "face line before the first '# image' line".into()))?;
            let mut v = Vec::with_capacity(20);
            for t in line.split_whitespace() {
                let x = t
                    .parse::<f32>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| err(no, format!("'{t}' is not a number")))?;
                v.push(x);
            }
            let mut points = [[-1.0f32; 3]; 5];
            let extra = match v.len() {
                4 => None,
                19 | 20 => {
                    for (k, p) in points.iter_mut().enumerate() {
                        p.copy_from_slice(&v[4 + 3 * k..7 + 3 * k]);
                    }
                    v.get(19).copied()
                }
                n => {
                    return Err(err(
                        no,
                        format!(
                            "expected 20 values (x y w h, 5 × px py f, one more) or 4 (x y w h), \
                             found {n}"
                        ),
                    ))
                }
            };
            image.faces.push(LabeledFace {
                bbox: [v[0], v[1], v[2], v[3]],
                points,
                extra,
            });
        }
        Ok(LabelFile { images })
    }

    /// Number of faces.
    pub fn face_count(&self) -> usize {
        self.images.iter().map(|i| i.faces.len()).sum()
    }

    /// Number of faces with landmarks.
    pub fn faces_with_landmarks(&self) -> usize {
        self.images
            .iter()
            .flat_map(|i| &i.faces)
            .filter(|f| f.has_landmarks())
            .count()
    }
}

/// A detection as the landmark evaluation takes it (the CLI converts the detector's faces).
/// Its JSON form is a face record of the detection JSON: `{"box": [x1, y1, x2, y2],
/// "score": s, "landmarks": [[x, y], ...]}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LandmarkDetection {
    /// `[x1, y1, x2, y2]` in pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Confidence.
    pub score: f32,
    /// Five points `[x, y]`, in the annotation's order.
    pub landmarks: [[f32; 2]; 5],
}

/// Options of the landmark evaluation (defaults from CONVENTIONS.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LandmarkEvalOptions {
    /// Only detections with a score above this take part (0.5).
    pub score_threshold: f64,
    /// A face matches its highest-IoU detection if that IoU is at least this (0.5).
    pub iou_threshold: f64,
    /// A face whose NME exceeds this is a failure (0.1).
    pub failure_threshold: f64,
}

impl Default for LandmarkEvalOptions {
    fn default() -> Self {
        LandmarkEvalOptions {
            score_threshold: 0.5,
            iou_threshold: 0.5,
            failure_threshold: 0.1,
        }
    }
}

/// The result for one ground-truth face with landmarks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceNme {
    /// The image path as in the label file.
    pub image: String,
    /// Index of the face among the image's faces in the label file.
    pub face: usize,
    /// IoU with the matched detection; `None` when unmatched.
    pub iou: Option<f64>,
    /// The NME; `None` when unmatched.
    pub nme: Option<f64>,
}

/// The landmark evaluation of a detection set against a label file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LandmarkReport {
    /// Label images evaluated (those the detections have an entry for).
    pub images: usize,
    /// Ground-truth faces with landmarks in those images.
    pub faces: usize,
    /// Faces matched to a detection.
    pub matched: usize,
    /// Faces without a match (failures, counted apart from high-NME ones).
    pub unmatched: usize,
    /// Mean NME over the matched faces (`None` if none matched).
    pub mean_nme: Option<f64>,
    /// Matched faces with NME above the failure threshold.
    pub high_nme: usize,
    /// `(high_nme + unmatched) / faces` (0 when there are no faces).
    pub failure_rate: f64,
    /// The NME threshold of a failure.
    pub failure_threshold: f64,
    /// Label images that the detections have no entry for (not evaluated).
    pub missing_images: Vec<String>,
    /// Detection entries that match no label image.
    pub unknown_images: Vec<String>,
    /// Every evaluated face, in label order.
    pub per_face: Vec<FaceNme>,
}

impl LandmarkReport {
    /// The figures as one JSON object (counts, mean NME, failure rate and threshold).
    pub fn summary_json(&self) -> String {
        serde_json::json!({
            "images": self.images,
            "faces": self.faces,
            "matched": self.matched,
            "unmatched": self.unmatched,
            "mean_nme": self.mean_nme,
            "high_nme": self.high_nme,
            "failure_rate": self.failure_rate,
            "failure_threshold": self.failure_threshold,
        })
        .to_string()
    }
}

/// The figures as three lines of text.
impl std::fmt::Display for LandmarkReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mean = self
            .mean_nme
            .map_or_else(|| "n/a".to_string(), |m| format!("{:.3} %", m * 100.0));
        write!(
            f,
            "images {}  faces with landmarks {}  matched {}  unmatched {}\n\
             mean NME {mean}  (over matched faces; point error ÷ √(w·h) of the ground-truth box)\n\
             failure rate {:.2} %  (NME > {} % on {} face(s), no match on {})\n",
            self.images,
            self.faces,
            self.matched,
            self.unmatched,
            self.failure_rate * 100.0,
            self.failure_threshold * 100.0,
            self.high_nme,
            self.unmatched,
        )
    }
}

impl LandmarkReport {
    /// The cumulative error distribution: `steps + 1` points `(x, fraction of faces with
    /// NME ≤ x)` for x from 0 to `max_nme`. Unmatched faces count in the denominator and never
    /// in the numerator.
    pub fn ced(&self, max_nme: f64, steps: usize) -> Vec<(f64, f64)> {
        let mut nmes: Vec<f64> = self.per_face.iter().filter_map(|f| f.nme).collect();
        nmes.sort_by(f64::total_cmp);
        let denom = self.faces.max(1) as f64;
        let steps = steps.max(1);
        let mut k = 0;
        (0..=steps)
            .map(|i| {
                let x = max_nme * i as f64 / steps as f64;
                while k < nmes.len() && nmes[k] <= x {
                    k += 1;
                }
                (x, k as f64 / denom)
            })
            .collect()
    }
}

/// Evaluates landmarks per CONVENTIONS.md: each ground-truth face with landmarks is matched
/// to the detection of highest IoU ≥ `iou_threshold` among those with a score above
/// `score_threshold` (each face independently); its NME is the mean, over its annotated
/// points, of the point error divided by √(w·h) of its box.
///
/// `detections` maps an image to its detections (an empty list for an image where nothing
/// was found). Keys are matched to label paths exactly, else by the longest common path
/// suffix (so `0_Parade_x.jpg`, `0--Parade/0_Parade_x.jpg` and an absolute path all match
/// `0--Parade/0_Parade_x.jpg`); a key shared ambiguously by two label images matches neither.
/// Label images without an entry are not evaluated and are listed in
/// [`LandmarkReport::missing_images`].
pub fn evaluate_landmarks(
    labels: &LabelFile,
    detections: &HashMap<String, Vec<LandmarkDetection>>,
    opts: &LandmarkEvalOptions,
) -> Result<LandmarkReport, LandmarkError> {
    for (name, v) in [
        ("score threshold", opts.score_threshold),
        ("IoU threshold", opts.iou_threshold),
        ("failure threshold", opts.failure_threshold),
    ] {
        if !v.is_finite() {
            return Err(LandmarkError::InvalidOption(format!("{name} {v}")));
        }
    }
    let index = KeyIndex::new(detections.keys().map(String::as_str));
    let mut used = vec![false; index.keys.len()];
    let mut report = LandmarkReport {
        images: 0,
        faces: 0,
        matched: 0,
        unmatched: 0,
        mean_nme: None,
        high_nme: 0,
        failure_rate: 0.0,
        failure_threshold: opts.failure_threshold,
        missing_images: Vec::new(),
        unknown_images: Vec::new(),
        per_face: Vec::new(),
    };
    let mut nme_sum = 0.0;
    for image in &labels.images {
        let Some(k) = index.find(&image.path) else {
            report.missing_images.push(image.path.clone());
            continue;
        };
        used[k] = true;
        report.images += 1;
        let dets: Vec<&LandmarkDetection> = detections
            .get(index.keys[k])
            .map(|v| {
                v.iter()
                    .filter(|d| d.score as f64 > opts.score_threshold)
                    .collect()
            })
            .unwrap_or_default();
        for (fi, face) in image.faces.iter().enumerate() {
            if !face.has_landmarks() {
                continue;
            }
            report.faces += 1;
            let gt = face.bbox_xyxy().map(f64::from);
            let best = dets
                .iter()
                .map(|d| (iou(&gt, &d.bbox.map(f64::from)), *d))
                .fold(
                    None::<(f64, &LandmarkDetection)>,
                    |best, (v, d)| match best {
                        Some((b, _)) if b >= v => best,
                        _ => Some((v, d)),
                    },
                )
                .filter(|(v, _)| *v >= opts.iou_threshold);
            let (iou_v, nme) = match best {
                Some((v, d)) => (Some(v), Some(nme(face, d))),
                None => (None, None),
            };
            match nme {
                Some(n) => {
                    report.matched += 1;
                    nme_sum += n;
                    if n > opts.failure_threshold {
                        report.high_nme += 1;
                    }
                }
                None => report.unmatched += 1,
            }
            report.per_face.push(FaceNme {
                image: image.path.clone(),
                face: fi,
                iou: iou_v,
                nme,
            });
        }
    }
    if report.matched > 0 {
        report.mean_nme = Some(nme_sum / report.matched as f64);
    }
    if report.faces > 0 {
        report.failure_rate = (report.high_nme + report.unmatched) as f64 / report.faces as f64;
    }
    report.unknown_images = index
        .keys
        .iter()
        .zip(&used)
        .filter(|(_, &u)| !u)
        .map(|(k, _)| k.to_string())
        .collect();
    report.unknown_images.sort();
    Ok(report)
}

/// Continuous IoU of two `[x1, y1, x2, y2]` boxes (no +1 pixel convention).
fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = (a[2] - a[0]).max(0.0) * (a[3] - a[1]).max(0.0)
        + (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
        - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Mean error over the annotated points ÷ √(w·h). A matched face has a box of positive area
/// (a zero-area box has IoU 0 with everything), so the division is safe.
fn nme(face: &LabeledFace, det: &LandmarkDetection) -> f64 {
    let mut sum = 0.0;
    let mut n = 0;
    for k in 0..5 {
        if let Some([x, y]) = face.point(k) {
            let [dx, dy] = det.landmarks[k];
            sum += (f64::from(dx) - f64::from(x)).hypot(f64::from(dy) - f64::from(y));
            n += 1;
        }
    }
    let norm = (f64::from(face.bbox[2]) * f64::from(face.bbox[3])).sqrt();
    // has_landmarks guarantees point 0, so n ≥ 1.
    sum / n.max(1) as f64 / norm
}

/// Detection keys indexed by file name, to match label paths by their longest common suffix.
struct KeyIndex<'a> {
    keys: Vec<&'a str>,
    by_file: HashMap<&'a str, Vec<usize>>,
}

fn components(p: &str) -> impl DoubleEndedIterator<Item = &str> {
    p.split(['/', '\\']).filter(|c| !c.is_empty() && *c != ".")
}

impl<'a> KeyIndex<'a> {
    fn new(keys: impl Iterator<Item = &'a str>) -> KeyIndex<'a> {
        let mut keys: Vec<&str> = keys.collect();
        keys.sort_unstable();
        let mut by_file: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            if let Some(f) = components(k).next_back() {
                by_file.entry(f).or_default().push(i);
            }
        }
        KeyIndex { keys, by_file }
    }

    fn find(&self, label_path: &str) -> Option<usize> {
        if let Ok(i) = self.keys.binary_search(&label_path) {
            return Some(i);
        }
        let file = components(label_path).next_back()?;
        let candidates = self.by_file.get(file)?;
        let common = |k: &str| {
            components(k)
                .rev()
                .zip(components(label_path).rev())
                .take_while(|(a, b)| a == b)
                .count()
        };
        let mut best: Option<(usize, usize)> = None;
        let mut tie = false;
        for &i in candidates {
            let c = common(self.keys[i]);
            match best {
                Some((_, b)) if c < b => {}
                Some((_, b)) if c == b => tie = true,
                _ => {
                    best = Some((i, c));
                    tie = false;
                }
            }
        }
        if tie {
            None
        } else {
            best.map(|(i, _)| i)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points_missing_points_and_box_only_lines() {
        let text = "# ev/a.jpg\r\n10 20 30 40 11 21 0.0 12 22 1.0 -1 -1 -1 14 24 0 15 25 0 0.9 \r\n\r\n\
                    # ev/b.jpg\n1 2 3 4 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 0.2\n5 6 7 8\n# ev/c.jpg\n";
        let l = LabelFile::parse(text, Path::new("label.txt")).unwrap();
        assert_eq!(l.images.len(), 3);
        let a = &l.images[0].faces[0];
        assert_eq!(a.bbox, [10.0, 20.0, 30.0, 40.0]);
        assert!(a.has_landmarks());
        assert_eq!(a.point(1), Some([12.0, 22.0]));
        assert_eq!(a.point(2), None);
        assert_eq!(a.extra, Some(0.9));
        assert_eq!(l.images[1].faces.len(), 2);
        assert!(!l.images[1].faces[0].has_landmarks());
        assert!(!l.images[1].faces[1].has_landmarks());
        assert!(l.images[2].faces.is_empty());
        assert_eq!(l.face_count(), 3);
        assert_eq!(l.faces_with_landmarks(), 1);
    }

    #[test]
    fn bad_label_lines_name_file_and_line() {
        let e = LabelFile::parse("1 2 3 4\n", Path::new("l.txt")).unwrap_err();
        assert!(
            e.to_string().starts_with("l.txt:1: face line before"),
            "{e}"
        );
        let e = LabelFile::parse("# a.jpg\n\n1 2 3 4 5\n", Path::new("l.txt")).unwrap_err();
        assert!(
            e.to_string().starts_with("l.txt:3: expected 20 values"),
            "{e}"
        );
        let e = LabelFile::parse("# a.jpg\n1 2 3 x\n", Path::new("l.txt")).unwrap_err();
        assert!(e.to_string().starts_with("l.txt:2: 'x' is not"), "{e}");
    }

    #[test]
    fn key_matching_by_path_suffix() {
        let keys = [
            "0_Parade_x.jpg",
            "/data/1--Hand/0_Parade_y.jpg",
            "2--A/z.jpg",
            "3--B/z.jpg",
        ];
        let idx = KeyIndex::new(keys.iter().copied());
        let k = |p: &str| idx.find(p).map(|i| idx.keys[i]);
        assert_eq!(k("0--Parade/0_Parade_x.jpg"), Some("0_Parade_x.jpg"));
        assert_eq!(
            k("1--Hand/0_Parade_y.jpg"),
            Some("/data/1--Hand/0_Parade_y.jpg")
        );
        assert_eq!(k("2--A/z.jpg"), Some("2--A/z.jpg"));
        assert_eq!(k("9--C/z.jpg"), None); // two equally good candidates
        assert_eq!(k("w.jpg"), None);
    }
}
