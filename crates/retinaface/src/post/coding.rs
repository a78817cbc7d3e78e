//! Centre/size box coding with variances (SPEC §1.4), in normalised coordinates.

use super::anchors::Prior;

/// Decode box offsets into `[x1, y1, x2, y2]` (normalised).
#[inline]
pub fn decode_box(p: &Prior, t: &[f32], var: [f32; 2]) -> [f32; 4] {
    let cx = p.cx + t[0] * var[0] * p.w;
    let cy = p.cy + t[1] * var[0] * p.h;
    let w = p.w * (t[2] * var[1]).exp();
    let h = p.h * (t[3] * var[1]).exp();
    let (x1, y1) = (cx - w / 2.0, cy - h / 2.0);
    [x1, y1, w + x1, h + y1]
}

/// Encode a normalised `[x1, y1, x2, y2]` box against a prior (inverse of [`decode_box`]).
pub fn encode_box(p: &Prior, b: [f32; 4], var: [f32; 2]) -> [f32; 4] {
    let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    [
        (cx - p.cx) / (var[0] * p.w),
        (cy - p.cy) / (var[0] * p.h),
        (w / p.w).ln() / var[1],
        (h / p.h).ln() / var[1],
    ]
}

/// Decode the 10 landmark offsets into 5 normalised points.
#[inline]
pub fn decode_landmarks(p: &Prior, t: &[f32], var: [f32; 2]) -> [[f32; 2]; 5] {
    std::array::from_fn(|k| {
        [
            p.cx + t[2 * k] * var[0] * p.w,
            p.cy + t[2 * k + 1] * var[0] * p.h,
        ]
    })
}

/// Encode 5 normalised points against a prior.
pub fn encode_landmarks(p: &Prior, pts: &[[f32; 2]; 5], var: [f32; 2]) -> [f32; 10] {
    std::array::from_fn(|i| {
        let k = i / 2;
        if i % 2 == 0 {
            (pts[k][0] - p.cx) / (var[0] * p.w)
        } else {
            (pts[k][1] - p.cy) / (var[0] * p.h)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let p = Prior {
            cx: 0.3,
            cy: 0.6,
            w: 0.1,
            h: 0.2,
        };
        let b = [0.25, 0.45, 0.41, 0.7];
        let d = decode_box(&p, &encode_box(&p, b, [0.1, 0.2]), [0.1, 0.2]);
        for (x, y) in b.iter().zip(d) {
            assert!((x - y).abs() < 1e-6);
        }
        let pts = [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8], [0.9, 1.0]];
        let back = decode_landmarks(&p, &encode_landmarks(&p, &pts, [0.1, 0.2]), [0.1, 0.2]);
        for (a, b) in pts.iter().zip(back) {
            assert!((a[0] - b[0]).abs() < 1e-6 && (a[1] - b[1]).abs() < 1e-6);
        }
    }
}
