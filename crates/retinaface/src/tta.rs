//! Test-time protocols: a single pass at any size, and the paper's protocol (SPEC §1.6) —
//! an image pyramid, horizontal flips and box voting over the union of all passes.
//!
//! It follows `shared/tools/ref/retinaface_tta.py` step for step:
//! - scale `k = s / min(W, H)` per short side `s`; a scale with `W·H·k² > max_pixels` is
//!   skipped; the image is resized to `(round(W·k), round(H·k))` with Pillow's bilinear
//!   filter ([`crate::input::resize`], pixel-identical);
//! - each scale is also run mirrored; each pass is a complete single pass (threshold,
//!   top-k, NMS, keep) at the caller's [`DetectOptions`];
//! - boxes of a mirrored pass are mirrored back with `x' = w − 1 − x` (w: the width of the
//!   pass), then every coordinate is divided by `k`;
//! - box voting: take the best remaining face; its cluster is every remaining face with
//!   IoU ≥ 0.4 (+1-pixel areas); a cluster of one is kept as it is, a larger one becomes the
//!   score-weighted mean of its boxes with the cluster's best score; keep 750.
//!
//! Beyond the reference (which writes boxes only): landmarks are mirrored back too, with
//! left and right swapped ([`Face::flip_horizontal`]), and voted with the same weights.
//! Where every pyramid scale exceeds the pixel budget (the reference fails then), the
//! smallest scale is run anyway.

use crate::detector::{DetectOptions, Detector};
use crate::error::Error;
use crate::input::resize::{resize_bilinear, scaled_size, Resize};
use crate::post::nms::{iou_plus1, nms};
use crate::post::Face;
use image::RgbImage;
use std::borrow::Cow;

/// The paper's pyramid: short sides in pixels.
pub const PAPER_SCALES: [u32; 5] = [500, 800, 1100, 1400, 1700];
/// The reference's pixel budget per pass (4.5 megapixels).
pub const PAPER_MAX_PIXELS: f64 = 4.5e6;
/// The IoU of box voting.
pub const VOTE_IOU: f32 = 0.4;

/// How passes are merged when there are several (or voting is asked for).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Merge {
    /// Box voting at this IoU (the paper's: 0.4).
    Vote(f32),
    /// Greedy NMS over the union at the [`DetectOptions::nms`] IoU.
    Nms,
}

/// A test-time protocol: which passes to run and how to merge them.
#[derive(Debug, Clone, PartialEq)]
pub struct Protocol {
    /// The sizes of the passes, in order (one entry: a single scale).
    pub sizes: Vec<Resize>,
    /// Also run every size mirrored.
    pub flip: bool,
    /// How the passes are merged; with a single unmirrored pass and [`Merge::Nms`] the pass
    /// is returned as it is.
    pub merge: Merge,
    /// Skip a pass whose pixel count `W·H·k²` exceeds this (`None`: no budget).
    pub max_pixels: Option<f64>,
}

impl Default for Protocol {
    /// One pass at the original size.
    fn default() -> Self {
        Protocol::single(Resize::Original)
    }
}

/// One planned pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pass {
    /// The size the image is resized to.
    pub width: u32,
    /// See `width`.
    pub height: u32,
    /// Coordinates in the pass are divided by this to return to the original image.
    pub k: f64,
    /// Whether the pass runs on the mirrored image.
    pub flip: bool,
}

impl Protocol {
    /// One pass at `size`.
    pub fn single(size: Resize) -> Protocol {
        Protocol {
            sizes: vec![size],
            flip: false,
            merge: Merge::Nms,
            max_pixels: None,
        }
    }

    /// The paper's protocol: short sides 500…1700, flips, voting at 0.4, 4.5 MP budget.
    pub fn paper() -> Protocol {
        Protocol {
            sizes: PAPER_SCALES.iter().map(|&s| Resize::Short(s)).collect(),
            flip: true,
            merge: Merge::Vote(VOTE_IOU),
            max_pixels: Some(PAPER_MAX_PIXELS),
        }
    }

    /// Check ranges.
    pub fn validate(&self) -> Result<(), Error> {
        if self.sizes.is_empty() {
            return Err(Error::InvalidOption(
                "a protocol needs at least one size".into(),
            ));
        }
        if let Merge::Vote(t) = self.merge {
            if !(0.0..=1.0).contains(&t) {
                return Err(Error::InvalidOption(format!(
                    "voting IoU {t} is outside [0, 1]"
                )));
            }
        }
        if let Some(m) = self.max_pixels {
            if m.is_nan() || m <= 0.0 {
                return Err(Error::InvalidOption(format!(
                    "pixel budget {m} must be positive"
                )));
            }
        }
        Ok(())
    }

    /// Whether this is one plain pass (no resize, flip or voting).
    pub fn is_plain(&self) -> bool {
        self.sizes == [Resize::Original] && !self.flip && self.merge == Merge::Nms
    }

    /// The passes for a `w`×`h` image, in the reference's order (each size, then its mirror).
    pub fn plan(&self, w: u32, h: u32) -> Vec<Pass> {
        let mut sizes: Vec<(u32, u32, f64)> = Vec::new();
        let mut smallest: Option<(u32, u32, f64)> = None;
        for &s in &self.sizes {
            let k = s.factor(w, h);
            let (pw, ph) = if s == Resize::Original {
                (w, h)
            } else {
                scaled_size(w, h, k)
            };
            // The reference's test, in its order of operations: W * H * k * k > budget.
            let pixels = f64::from(w) * f64::from(h) * k * k;
            if smallest.is_none_or(|(_, _, sk)| k < sk) {
                smallest = Some((pw, ph, k));
            }
            if self.max_pixels.is_some_and(|m| pixels > m) {
                continue;
            }
            sizes.push((pw, ph, k));
        }
        if sizes.is_empty() {
            sizes.extend(smallest);
        }
        let mut passes = Vec::with_capacity(sizes.len() * 2);
        for (width, height, k) in sizes {
            passes.push(Pass {
                width,
                height,
                k,
                flip: false,
            });
            if self.flip {
                passes.push(Pass {
                    width,
                    height,
                    k,
                    flip: true,
                });
            }
        }
        passes
    }
}

/// Detect faces in `image` with `protocol`; every pass uses `options` (threshold, top-k,
/// NMS, keep), and the merged result keeps at most `options.keep` faces, best first.
pub fn detect(
    detector: &Detector,
    image: &RgbImage,
    options: &DetectOptions,
    protocol: &Protocol,
) -> Result<Vec<Face>, Error> {
    options.validate()?;
    protocol.validate()?;
    if protocol.is_plain() {
        return detector.detect(image, options);
    }
    let (w, h) = image.dimensions();
    if w == 0 || h == 0 {
        return Ok(Vec::new());
    }
    let passes = protocol.plan(w, h);
    // Every pass is checked before the first allocation; each runs at its own size.
    for pass in &passes {
        options.check_pass(pass.width, pass.height)?;
    }
    let options = &DetectOptions {
        max_side: None,
        ..options.clone()
    };
    let mut all: Vec<Face> = Vec::new();
    let mut resized: Option<((u32, u32), Cow<RgbImage>)> = None;
    for pass in &passes {
        let size = (pass.width, pass.height);
        if resized.as_ref().is_none_or(|(s, _)| *s != size) {
            let img = if size == (w, h) {
                Cow::Borrowed(image)
            } else {
                Cow::Owned(resize_bilinear(image, pass.width, pass.height))
            };
            resized = Some((size, img));
        }
        let img = &resized.as_ref().expect("set above").1;
        let faces = if pass.flip {
            let mirrored = image::imageops::flip_horizontal(img.as_ref());
            let pw = pass.width as f32;
            detector
                .detect(&mirrored, options)?
                .into_iter()
                .map(|f| f.flip_horizontal(pw))
                .collect()
        } else {
            detector.detect(img, options)?
        };
        all.extend(faces.into_iter().map(|f| unscale(f, pass.k)));
    }
    Ok(match protocol.merge {
        Merge::Vote(iou) => vote(all, iou, options.keep),
        Merge::Nms if passes.len() == 1 => all,
        Merge::Nms => {
            all.sort_by(|a, b| b.score.total_cmp(&a.score));
            nms(&all, options.nms, options.keep)
        }
    })
}

/// Divide every coordinate by `k` in f32, as the reference's `d[:, :4] /= k` does.
fn unscale(f: Face, k: f64) -> Face {
    if k == 1.0 {
        return f;
    }
    let k = k as f32;
    Face {
        bbox: f.bbox.map(|v| v / k),
        score: f.score,
        landmarks: f.landmarks.map(|l| l.map(|p| [p[0] / k, p[1] / k])),
    }
}

/// Box voting over `faces` (any order): repeatedly take the best remaining face; its
/// cluster is every remaining face with IoU ≥ `iou` (+1-pixel areas, the best face
/// included); a cluster of one is kept unchanged, a larger one becomes the score-weighted
/// mean of its boxes and landmarks with the cluster's best score. At most `keep` faces,
/// best first.
pub fn vote(mut faces: Vec<Face>, iou: f32, keep: usize) -> Vec<Face> {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = Vec::new();
    let mut rest = faces;
    let mut cluster: Vec<Face> = Vec::new();
    while !rest.is_empty() && out.len() < keep {
        let best = rest[0];
        cluster.clear();
        cluster.push(best);
        let mut kept = 0;
        for i in 1..rest.len() {
            let f = rest[i];
            if iou_plus1(&best.bbox, &f.bbox) >= iou {
                cluster.push(f);
            } else {
                rest[kept] = f;
                kept += 1;
            }
        }
        rest.truncate(kept);
        out.push(if cluster.len() == 1 {
            best
        } else {
            weighted_mean(&cluster)
        });
    }
    out
}

/// The score-weighted mean of boxes and landmarks (accumulated in f64), with the best score.
/// Scores of zero everywhere (possible only with threshold 0) give the plain mean.
fn weighted_mean(cluster: &[Face]) -> Face {
    let all_zero = cluster.iter().all(|f| f.score <= 0.0);
    let mut sw = 0.0f64;
    let mut b = [0.0f64; 4];
    let mut l = [[0.0f64; 2]; 5];
    let mut best = f32::NEG_INFINITY;
    for f in cluster {
        let s = if all_zero { 1.0 } else { f64::from(f.score) };
        sw += s;
        best = best.max(f.score);
        for (acc, &v) in b.iter_mut().zip(&f.bbox) {
            *acc += f64::from(v) * s;
        }
        for (acc, p) in l.iter_mut().zip(f.landmarks.iter().flatten()) {
            acc[0] += f64::from(p[0]) * s;
            acc[1] += f64::from(p[1]) * s;
        }
    }
    // A cluster has landmarks when its network predicts them (all of its faces, or none).
    let has_landmarks = cluster.iter().all(|f| f.landmarks.is_some());
    Face {
        bbox: b.map(|v| (v / sw) as f32),
        score: best,
        landmarks: has_landmarks.then(|| l.map(|p| [(p[0] / sw) as f32, (p[1] / sw) as f32])),
    }
}

/// Maps a point (x, y) of a turned image back to the original of size (w, h).
type BackMap = fn(f32, f32, f32, f32) -> [f32; 2];

/// Detect in `image` and in its copies turned by 90°, 180° and 270° (faces of people lying
/// down, upside-down frames), each detected at `scale` (0 < scale ≤ 1), the faces mapped back
/// and merged by NMS. Landmarks are mapped back too (their order follows the turned face).
pub fn detect_rotations(
    detector: &Detector,
    image: &RgbImage,
    scale: f32,
    options: &DetectOptions,
) -> Result<Vec<Face>, Error> {
    let (w, h) = (image.width() as f32, image.height() as f32);
    let mut all = detector.detect_scaled(image, scale, options)?;
    // For each turn: the turned image, and the map from its coordinates back to `image`'s.
    let turns: [(RgbImage, BackMap); 3] = [
        // 90° clockwise: (x, y) in the turned image is (y, h − x) in the original.
        (image::imageops::rotate90(image), |x, y, _w, h| [y, h - x]),
        (image::imageops::rotate180(image), |x, y, w, h| {
            [w - x, h - y]
        }),
        (image::imageops::rotate270(image), |x, y, w, _h| [w - y, x]),
    ];
    for (turned, back) in turns {
        for f in detector.detect_scaled(&turned, scale, options)? {
            let [x1, y1, x2, y2] = f.bbox;
            let a = back(x1, y1, w, h);
            let b = back(x2, y2, w, h);
            all.push(Face {
                bbox: [
                    a[0].min(b[0]),
                    a[1].min(b[1]),
                    a[0].max(b[0]),
                    a[1].max(b[1]),
                ],
                score: f.score,
                landmarks: f.landmarks.map(|l| l.map(|p| back(p[0], p[1], w, h))),
            });
        }
    }
    all.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(nms(&all, options.nms, options.keep))
}
