//! Element-wise and pooling ops over NHWC maps.

use super::{out_size, Feature};

/// `dst += nearest_upsample(src)` to `dst`'s size, PyTorch's `nearest` rule
/// (`src_y = floor(dst_y · src_h / dst_h)`), as the FPN's top-down pathway needs.
pub fn add_upsampled_nearest(dst: &mut Feature, src: &Feature) {
    assert_eq!(dst.c, src.c);
    let c = dst.c;
    for y in 0..dst.h {
        let sy = (y * src.h / dst.h).min(src.h - 1);
        for x in 0..dst.w {
            let sx = (x * src.w / dst.w).min(src.w - 1);
            let d = &mut dst.data[(y * dst.w + x) * c..][..c];
            let s = &src.data[(sy * src.w + sx) * c..][..c];
            for (a, &b) in d.iter_mut().zip(s) {
                *a += b;
            }
        }
    }
}

/// `a ← a · b + a` element-wise (DF²S²'s F-block), `b` of `a`'s shape.
pub fn gate(a: &mut Feature, b: &Feature) {
    assert_eq!(
        (a.h, a.w, a.c),
        (b.h, b.w, b.c),
        "gate operands differ in shape"
    );
    for (x, &g) in a.data.iter_mut().zip(&b.data) {
        *x += *x * g;
    }
}

/// 3×3 max pooling, stride 2, padding 1 (ResNet's stem).
pub fn max_pool_3x3_s2(input: &Feature, out: &mut Feature) {
    let (oh, ow) = (out_size(input.h, 3, 2, 1), out_size(input.w, 3, 2, 1));
    let c = input.c;
    out.reshape(oh, ow, c);
    for oy in 0..oh {
        for ox in 0..ow {
            let o = &mut out.data[(oy * ow + ox) * c..][..c];
            o.fill(f32::NEG_INFINITY);
            for ky in 0..3 {
                let iy = (oy * 2 + ky) as isize - 1;
                if iy < 0 || iy >= input.h as isize {
                    continue;
                }
                for kx in 0..3 {
                    let ix = (ox * 2 + kx) as isize - 1;
                    if ix < 0 || ix >= input.w as isize {
                        continue;
                    }
                    let s = &input.data[(iy as usize * input.w + ix as usize) * c..][..c];
                    for (a, &b) in o.iter_mut().zip(s) {
                        *a = a.max(b);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_upsample_to_odd_size() {
        let src = Feature {
            h: 2,
            w: 2,
            c: 1,
            data: vec![1.0, 2.0, 3.0, 4.0],
        };
        let mut dst = Feature::zeros(3, 3, 1);
        add_upsampled_nearest(&mut dst, &src);
        assert_eq!(dst.data, vec![1.0, 1.0, 2.0, 1.0, 1.0, 2.0, 3.0, 3.0, 4.0]);
    }

    #[test]
    fn max_pool_pads_with_minus_infinity() {
        let input = Feature {
            h: 2,
            w: 2,
            c: 1,
            data: vec![-1.0, -2.0, -3.0, -4.0],
        };
        let mut out = Feature::default();
        max_pool_3x3_s2(&input, &mut out);
        assert_eq!((out.h, out.w), (1, 1));
        assert_eq!(out.data, vec![-1.0]);
    }
}
