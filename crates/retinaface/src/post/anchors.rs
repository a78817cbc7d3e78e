//! Anchors ("priors"): per level, cell-major (row, column), then per size.

use crate::config::AnchorConfig;

/// One anchor as the port writes it: centre and size, normalised by the image size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prior {
    pub cx: f32,
    pub cy: f32,
    pub w: f32,
    pub h: f32,
}

/// Feature-map size of a level with stride `step` for an `h × w` input: `ceil(h / step)`.
pub fn level_size(h: usize, w: usize, step: usize) -> (usize, usize) {
    (h.div_ceil(step), w.div_ceil(step))
}

/// The prior of anchor `a` at cell (`y`, `x`) of a level with stride `step` (computed in f64
/// and rounded once, as the reference does).
#[inline]
pub fn prior(step: usize, size: f32, y: usize, x: usize, img_h: usize, img_w: usize) -> Prior {
    prior_wh(step, (size, size), y, x, img_h, img_w)
}

/// As [`prior`] for an anchor of width and height `(aw, ah)` pixels.
#[inline]
pub fn prior_wh(
    step: usize,
    (aw, ah): (f32, f32),
    y: usize,
    x: usize,
    img_h: usize,
    img_w: usize,
) -> Prior {
    let (s, ih, iw) = (step as f64, img_h as f64, img_w as f64);
    Prior {
        cx: ((x as f64 + 0.5) * s / iw) as f32,
        cy: ((y as f64 + 0.5) * s / ih) as f32,
        w: (aw as f64 / iw) as f32,
        h: (ah as f64 / ih) as f32,
    }
}

/// Number of anchors for an `h × w` input.
pub fn count(config: &AnchorConfig, h: usize, w: usize) -> usize {
    config
        .steps
        .iter()
        .enumerate()
        .map(|(level, &s)| {
            let (fh, fw) = level_size(h, w, s);
            fh * fw * config.per_cell(level)
        })
        .sum()
}

/// All priors for an `h × w` input, in the order of the network's outputs.
pub fn priors(config: &AnchorConfig, h: usize, w: usize) -> Vec<Prior> {
    let mut out = Vec::with_capacity(count(config, h, w));
    for (level, &step) in config.steps.iter().enumerate() {
        let (fh, fw) = level_size(h, w, step);
        let shapes: Vec<(f32, f32)> = config.shapes(level).collect();
        for y in 0..fh {
            for x in 0..fw {
                for &s in &shapes {
                    out.push(prior_wh(step, s, y, x, h, w));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_anchor_count_at_640() {
        let c = AnchorConfig::port();
        assert_eq!(count(&c, 640, 640), 16_800);
        assert_eq!(priors(&c, 640, 640).len(), 16_800);
        // Odd sizes round feature maps up.
        assert_eq!(count(&c, 481, 641), 2 * (61 * 81 + 31 * 41 + 16 * 21));
    }

    #[test]
    fn df2s2_anchors_have_two_ratios_keeping_the_area() {
        let c = AnchorConfig::df2s2();
        // Six levels, two anchors per cell: 2·(160² + 80² + 40² + 20² + 10² + 5²) at 640.
        assert_eq!(count(&c, 640, 640), 2 * 34_125);
        let p = priors(&c, 64, 64);
        // Cell (0, 0) of P2: a 16×16 square, then the taller box of ratio 1.5, same area.
        assert_eq!((p[0].w, p[0].h), (0.25, 0.25));
        let (w, h) = (p[1].w * 64.0, p[1].h * 64.0);
        assert!((h / w - 1.5).abs() < 1e-5 && (w * h - 256.0).abs() < 1e-3);
        assert_eq!((p[1].cx, p[1].cy), (p[0].cx, p[0].cy));
    }

    #[test]
    fn first_priors_are_cell_major() {
        let p = priors(&AnchorConfig::port(), 64, 32);
        assert_eq!(
            p[0],
            Prior {
                cx: 4.0 / 32.0,
                cy: 4.0 / 64.0,
                w: 16.0 / 32.0,
                h: 16.0 / 64.0
            }
        );
        assert_eq!(p[1].w, 1.0); // second size of the same cell
        assert_eq!(p[2].cx, 12.0 / 32.0); // next column
    }
}
