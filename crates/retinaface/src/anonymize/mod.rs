//! Anonymisation: blur, pixelate or fill each face's enlarged box (or the ellipse inside it),
//! leaving every other pixel untouched; and the hold that keeps a mask over a face for a few
//! video frames after its last detection, so a single missed frame does not flash it.

pub mod file;
#[cfg(feature = "libjpeg")]
mod jpeg;

use image::{Rgb, RgbImage};
use std::collections::VecDeque;

/// How a face region is hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A strong blur (three box-blur passes ≈ Gaussian) of radius a quarter of the region.
    Blur,
    /// Blocks of a fifth of the region's size, each its mean colour (eighths left a face
    /// detectable at 0.87 in our tests).
    Pixelate,
    /// Black.
    Solid,
    /// Nothing (with drawing, for checking detections).
    None,
}

/// The masked region's shape inside the enlarged box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Ellipse,
    Box,
}

/// Anonymisation options; the defaults are the CLI's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    pub mode: Mode,
    pub shape: Shape,
    /// The box is enlarged by this factor around its centre.
    pub mask_scale: f32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Blur,
            shape: Shape::Ellipse,
            mask_scale: 1.3,
        }
    }
}

/// Pixel bounds `[x0, y0, x1, y1)` of a box enlarged by `scale` around its centre, clipped to a
/// `w × h` image: every pixel outside them is left unchanged.
pub fn mask_bounds(bbox: [f32; 4], scale: f32, w: u32, h: u32) -> [u32; 4] {
    let (cx, cy) = ((bbox[0] + bbox[2]) / 2.0, (bbox[1] + bbox[3]) / 2.0);
    let (hw, hh) = (
        (bbox[2] - bbox[0]).abs() * scale / 2.0,
        (bbox[3] - bbox[1]).abs() * scale / 2.0,
    );
    let clip = |v: f32, max: u32| v.clamp(0.0, max as f32) as u32;
    [
        clip((cx - hw).floor(), w),
        clip((cy - hh).floor(), h),
        clip((cx + hw).ceil(), w),
        clip((cy + hh).ceil(), h),
    ]
}

/// Hide every box of `boxes` in `img`.
pub fn anonymize(img: &mut RgbImage, boxes: &[[f32; 4]], o: &Options) {
    if o.mode == Mode::None {
        return;
    }
    for b in boxes {
        let r = mask_bounds(*b, o.mask_scale, img.width(), img.height());
        if r[2] <= r[0] || r[3] <= r[1] {
            continue;
        }
        let filled = match o.mode {
            Mode::Blur => blurred(img, r),
            Mode::Pixelate => pixelated(img, r),
            Mode::Solid => vec![Rgb([0, 0, 0]); ((r[2] - r[0]) * (r[3] - r[1])) as usize],
            Mode::None => continue,
        };
        let (rw, rh) = (r[2] - r[0], r[3] - r[1]);
        let (cx, cy) = (f64::from(rw) / 2.0, f64::from(rh) / 2.0);
        for y in 0..rh {
            for x in 0..rw {
                if o.shape == Shape::Ellipse {
                    let (dx, dy) = (
                        (f64::from(x) + 0.5 - cx) / cx,
                        (f64::from(y) + 0.5 - cy) / cy,
                    );
                    if dx * dx + dy * dy > 1.0 {
                        continue;
                    }
                }
                img.put_pixel(r[0] + x, r[1] + y, filled[(y * rw + x) as usize]);
            }
        }
    }
}

/// The region blurred (edges clamped to the region, so nothing outside leaks in or changes).
fn blurred(img: &RgbImage, r: [u32; 4]) -> Vec<Rgb<u8>> {
    let (w, h) = ((r[2] - r[0]) as usize, (r[3] - r[1]) as usize);
    let radius = (w.max(h) / 4).max(1);
    let mut buf: Vec<[f32; 3]> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| {
            img.get_pixel(r[0] + x as u32, r[1] + y as u32)
                .0
                .map(f32::from)
        })
        .collect();
    for _ in 0..3 {
        box_pass(&mut buf, w, h, radius, 1, w);
        box_pass(&mut buf, h, w, radius, w, 1);
    }
    buf.into_iter()
        .map(|p| Rgb(p.map(|v| v.round().clamp(0.0, 255.0) as u8)))
        .collect()
}

/// One running-mean pass along lines of length `n` (element stride `step`), `lines` of them
/// `line_stride` apart; samples beyond the ends repeat the edge.
fn box_pass(
    buf: &mut [[f32; 3]],
    n: usize,
    lines: usize,
    radius: usize,
    step: usize,
    line_stride: usize,
) {
    let mut line = vec![[0.0f32; 3]; n];
    let norm = 1.0 / (2 * radius + 1) as f32;
    for l in 0..lines {
        let at = |i: isize| l * line_stride + (i.clamp(0, n as isize - 1) as usize) * step;
        let mut acc = [0.0f32; 3];
        for i in -(radius as isize)..=(radius as isize) {
            let p = buf[at(i)];
            (0..3).for_each(|k| acc[k] += p[k]);
        }
        for (i, out) in line.iter_mut().enumerate() {
            *out = acc.map(|v| v * norm);
            let (add, sub) = (
                buf[at(i as isize + radius as isize + 1)],
                buf[at(i as isize - radius as isize)],
            );
            (0..3).for_each(|k| acc[k] += add[k] - sub[k]);
        }
        for (i, v) in line.iter().enumerate() {
            buf[at(i as isize)] = *v;
        }
    }
}

fn pixelated(img: &RgbImage, r: [u32; 4]) -> Vec<Rgb<u8>> {
    let (w, h) = (r[2] - r[0], r[3] - r[1]);
    let block = (w.max(h) / 5).max(2);
    let mut out = vec![Rgb([0, 0, 0]); (w * h) as usize];
    for by in (0..h).step_by(block as usize) {
        for bx in (0..w).step_by(block as usize) {
            let (ex, ey) = ((bx + block).min(w), (by + block).min(h));
            let mut sum = [0u64; 3];
            for y in by..ey {
                for x in bx..ex {
                    let p = img.get_pixel(r[0] + x, r[1] + y).0;
                    (0..3).for_each(|k| sum[k] += u64::from(p[k]));
                }
            }
            let n = u64::from((ex - bx) * (ey - by));
            let mean = Rgb(sum.map(|s| ((s + n / 2) / n) as u8));
            for y in by..ey {
                for x in bx..ex {
                    out[(y * w + x) as usize] = mean;
                }
            }
        }
    }
    out
}

/// Keeps each detection masked for `hold` frames after the frame it was found in: the boxes to
/// mask in a frame are that frame's detections and those of the `hold` frames before it.
#[derive(Debug, Clone)]
pub struct Hold {
    hold: usize,
    recent: VecDeque<Vec<[f32; 4]>>,
}

impl Hold {
    pub fn new(hold: usize) -> Self {
        Hold {
            hold,
            recent: VecDeque::with_capacity(hold + 1),
        }
    }

    /// Feed one frame's detections (in frame order); returns the boxes to mask in that frame.
    pub fn push(&mut self, detections: Vec<[f32; 4]>) -> Vec<[f32; 4]> {
        if self.recent.len() > self.hold {
            self.recent.pop_front();
        }
        self.recent.push_back(detections);
        self.recent.iter().flatten().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_covers_a_missed_frame_and_then_lets_go() {
        let face = [10.0, 10.0, 20.0, 20.0];
        let mut h = Hold::new(2);
        let frames = [
            vec![face],
            vec![],
            vec![face],
            vec![],
            vec![],
            vec![],
            vec![],
        ];
        let masked: Vec<bool> = frames.into_iter().map(|d| !h.push(d).is_empty()).collect();
        // Missed at frame 1 but still masked; gone after frame 2: masked at 3 and 4 (hold 2), not at 5.
        assert_eq!(masked, vec![true, true, true, true, true, false, false]);
        let mut none = Hold::new(0);
        assert_eq!(none.push(vec![face]).len(), 1);
        assert_eq!(none.push(vec![]).len(), 0);
    }

    #[test]
    fn only_pixels_inside_the_enlarged_box_change() {
        let src = RgbImage::from_fn(60, 40, |x, y| {
            Rgb([(x * 4) as u8, (y * 6) as u8, ((x * y) % 256) as u8])
        });
        for mode in [Mode::Blur, Mode::Pixelate, Mode::Solid] {
            for shape in [Shape::Ellipse, Shape::Box] {
                let mut img = src.clone();
                let o = Options {
                    mode,
                    shape,
                    mask_scale: 1.3,
                };
                anonymize(&mut img, &[[20.0, 10.0, 35.0, 28.0]], &o);
                let r = mask_bounds([20.0, 10.0, 35.0, 28.0], 1.3, 60, 40);
                let mut changed = 0;
                for (x, y, p) in img.enumerate_pixels() {
                    let inside = x >= r[0] && x < r[2] && y >= r[1] && y < r[3];
                    if !inside {
                        assert_eq!(p, src.get_pixel(x, y));
                    } else if p != src.get_pixel(x, y) {
                        changed += 1;
                    }
                }
                assert!(changed > 100, "{mode:?} {shape:?} changed only {changed}");
            }
        }
    }
}
