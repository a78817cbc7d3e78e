//! ArcFace-aligned face crops (InsightFace's `norm_crop` convention): the least-squares
//! similarity transform of the five landmarks onto the ArcFace template, and a bilinear warp
//! with a black border.
//!
//! ```
//! use retinaface::align::{arcface_template, estimate_similarity, warp_affine};
//! // Landmarks already on the 112×112 template map to it by the identity.
//! let t = arcface_template(112);
//! let m = estimate_similarity(&t, &t);
//! assert!((m[0][0] - 1.0).abs() < 1e-12 && m[0][2].abs() < 1e-9);
//! let img = image::RgbImage::from_pixel(200, 200, image::Rgb([10, 20, 30]));
//! let crop = warp_affine(&img, &m, 112, 112);
//! assert_eq!(crop.get_pixel(50, 50), &image::Rgb([10, 20, 30]));
//! ```

use crate::post::Face;
use image::{Rgb, RgbImage};

/// A 2×3 affine matrix mapping source pixels to destination pixels: `[x', y'] = M·[x, y, 1]`.
pub type Affine = [[f64; 3]; 2];

/// The ArcFace five-point template for 112×112 crops (left eye, right eye, nose, left and
/// right mouth corner).
pub const ARCFACE_112: [[f64; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// The template for a `size × size` crop: scaled by size/112 when size is a multiple of 112;
/// otherwise scaled by size/128 and shifted by 8·size/128 in x (InsightFace's convention).
pub fn arcface_template(size: u32) -> [[f64; 2]; 5] {
    let s = f64::from(size);
    if size.is_multiple_of(112) {
        ARCFACE_112.map(|[x, y]| [x * s / 112.0, y * s / 112.0])
    } else {
        ARCFACE_112.map(|[x, y]| [x * s / 128.0 + 8.0 * s / 128.0, y * s / 128.0])
    }
}

/// Least-squares similarity (rotation, uniform scale, translation; no reflection) with
/// `dst ≈ M·src` (Umeyama). In 2-D it has a closed form: with the cross-covariance
/// `C = [[a, b], [c, d]]`, the best rotation angle is `atan2(c − b, a + d)` and the trace term
/// `Σ σᵢ dᵢ` of Umeyama's SVD is `√((a + d)² + (c − b)²)` (σ₁ ± σ₂ by the sign of det C).
pub fn estimate_similarity(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Affine {
    let n = src.len().min(dst.len()) as f64;
    let mean = |p: &[[f64; 2]]| {
        let (sx, sy) = p.iter().fold((0.0, 0.0), |(x, y), q| (x + q[0], y + q[1]));
        [sx / n, sy / n]
    };
    let (ms, md) = (mean(src), mean(dst));
    let (mut a, mut b, mut c, mut d, mut var) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (s, t) in src.iter().zip(dst) {
        let (sx, sy) = (s[0] - ms[0], s[1] - ms[1]);
        let (tx, ty) = (t[0] - md[0], t[1] - md[1]);
        a += tx * sx;
        b += tx * sy;
        c += ty * sx;
        d += ty * sy;
        var += sx * sx + sy * sy;
    }
    if var == 0.0 {
        return [[1.0, 0.0, md[0] - ms[0]], [0.0, 1.0, md[1] - ms[1]]];
    }
    let theta = (c - b).atan2(a + d);
    let scale = (a + d).hypot(c - b) / var;
    let (cos, sin) = (scale * theta.cos(), scale * theta.sin());
    [
        [cos, -sin, md[0] - (cos * ms[0] - sin * ms[1])],
        [sin, cos, md[1] - (sin * ms[0] + cos * ms[1])],
    ]
}

/// The transform taking `face`'s landmarks onto the template of a `size` crop; `None` for a
/// face without landmarks (a network without a landmark head).
pub fn face_transform(face: &Face, size: u32) -> Option<Affine> {
    let src = face.landmarks?.map(|[x, y]| [f64::from(x), f64::from(y)]);
    Some(estimate_similarity(&src, &arcface_template(size)))
}

/// The aligned `size × size` crop of `face`, with its transform; `None` for a face without
/// landmarks.
pub fn align_face(img: &RgbImage, face: &Face, size: u32) -> Option<(RgbImage, Affine)> {
    let m = face_transform(face, size)?;
    Some((warp_affine(img, &m, size, size), m))
}

/// Warp `img` by `m` (source → destination) into a `w × h` image: each destination pixel
/// samples the source bilinearly at `M⁻¹·(x, y)`; outside the source is black.
pub fn warp_affine(img: &RgbImage, m: &Affine, w: u32, h: u32) -> RgbImage {
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    if det == 0.0 || !det.is_finite() {
        return RgbImage::new(w, h);
    }
    let inv = [
        [m[1][1] / det, -m[0][1] / det],
        [-m[1][0] / det, m[0][0] / det],
    ];
    let (tx, ty) = (m[0][2], m[1][2]);
    let (iw, ih) = (i64::from(img.width()), i64::from(img.height()));
    let px = |x: i64, y: i64| -> [f64; 3] {
        if x < 0 || y < 0 || x >= iw || y >= ih {
            [0.0; 3]
        } else {
            img.get_pixel(x as u32, y as u32).0.map(f64::from)
        }
    };
    RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (f64::from(x) - tx, f64::from(y) - ty);
        let sx = inv[0][0] * dx + inv[0][1] * dy;
        let sy = inv[1][0] * dx + inv[1][1] * dy;
        if !(sx > -1.0 && sy > -1.0 && sx < iw as f64 && sy < ih as f64) {
            return Rgb([0, 0, 0]);
        }
        let (x0, y0) = (sx.floor() as i64, sy.floor() as i64);
        let (fx, fy) = (sx - x0 as f64, sy - y0 as f64);
        let (p00, p10, p01, p11) = (
            px(x0, y0),
            px(x0 + 1, y0),
            px(x0, y0 + 1),
            px(x0 + 1, y0 + 1),
        );
        Rgb(std::array::from_fn(|k| {
            let top = p00[k] + (p10[k] - p00[k]) * fx;
            let bottom = p01[k] + (p11[k] - p01[k]) * fx;
            (top + (bottom - top) * fy).round().clamp(0.0, 255.0) as u8
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_similarity() {
        let (s, th, t) = (1.7f64, 0.3f64, [12.0, -5.0]);
        let m_true = [
            [s * th.cos(), -s * th.sin(), t[0]],
            [s * th.sin(), s * th.cos(), t[1]],
        ];
        let src = [
            [10.0, 20.0],
            [40.0, 22.0],
            [25.0, 35.0],
            [12.0, 50.0],
            [38.0, 52.0],
        ];
        let dst = src.map(|[x, y]| {
            [
                m_true[0][0] * x + m_true[0][1] * y + m_true[0][2],
                m_true[1][0] * x + m_true[1][1] * y + m_true[1][2],
            ]
        });
        let m = estimate_similarity(&src, &dst);
        for r in 0..2 {
            for c in 0..3 {
                assert!((m[r][c] - m_true[r][c]).abs() < 1e-9, "{m:?}");
            }
        }
    }

    #[test]
    fn no_reflection_for_mirrored_points() {
        let src = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]];
        let dst = [[0.0, 0.0], [-10.0, 0.0], [0.0, 10.0]];
        let m = estimate_similarity(&src, &dst);
        assert!(m[0][0] * m[1][1] - m[0][1] * m[1][0] > 0.0);
    }

    #[test]
    fn template_for_other_sizes() {
        assert_eq!(arcface_template(224)[0], [38.2946 * 2.0, 51.6963 * 2.0]);
        let t = arcface_template(128);
        assert!((t[0][0] - (38.2946 + 8.0)).abs() < 1e-12 && (t[0][1] - 51.6963).abs() < 1e-12);
    }
}
