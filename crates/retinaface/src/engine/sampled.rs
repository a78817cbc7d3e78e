//! Convolutions that gather their input before one GEMM: the deformable convolution (taps
//! sampled bilinearly at predicted offsets) and the 2×2 stride-2 transposed convolution (one
//! GEMM to four output pixels per input pixel). Both run the micro-kernel of a 1×1
//! [`Conv2d`], so bias and activation stay fused.

use super::{out_size, Activation, Conv2d, Feature};

/// A deformable `k × k` convolution (torchvision's `deform_conv2d` without mask, one offset
/// group): for output pixel `(y, x)` and tap `t = ky·k + kx`, the input is sampled at
/// `(y·s − p + ky + Δy_t, x·s − p + kx + Δx_t)`, with `Δy_t = offsets[2t]`,
/// `Δx_t = offsets[2t + 1]`; points outside the map read zero.
#[derive(Debug, Clone)]
pub struct DeformConv2d {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    /// The convolution as a 1×1 over `k²·cin` gathered channels (tap-major).
    gemm: Conv2d,
}

impl DeformConv2d {
    /// From PyTorch-layout weights `[cout, cin, k, k]` and a bias.
    pub fn from_oihw(
        weight: &[f32],
        bias: &[f32],
        (cout, cin, k): (usize, usize, usize),
        stride: usize,
        pad: usize,
        act: Activation,
    ) -> Self {
        let kk = k * k;
        assert_eq!(weight.len(), cout * cin * kk);
        let mut w = vec![0.0; cout * kk * cin];
        for o in 0..cout {
            for ci in 0..cin {
                for t in 0..kk {
                    w[o * kk * cin + t * cin + ci] = weight[(o * cin + ci) * kk + t];
                }
            }
        }
        let gemm = Conv2d::from_oihw(&w, bias, (cout, kk * cin, 1), 1, 0, false, act);
        DeformConv2d {
            cin,
            cout,
            k,
            stride,
            pad,
            gemm,
        }
    }

    /// Run on `input` with `offsets` (`2·k²` channels at the output's size) into `out`;
    /// `gathered` and `scratch` are reused buffers.
    pub fn forward(
        &self,
        input: &Feature,
        offsets: &Feature,
        out: &mut Feature,
        gathered: &mut Feature,
        scratch: &mut Vec<f32>,
    ) {
        let (k, s, p, c) = (self.k, self.stride, self.pad, self.cin);
        assert_eq!(input.c, c, "deformable convolution input channels");
        let (oh, ow) = (out_size(input.h, k, s, p), out_size(input.w, k, s, p));
        assert_eq!(
            (offsets.h, offsets.w, offsets.c),
            (oh, ow, 2 * k * k),
            "offsets shape"
        );
        gathered.reshape(oh, ow, k * k * c);
        for y in 0..oh {
            for x in 0..ow {
                let pix = y * ow + x;
                let off = &offsets.data[pix * 2 * k * k..][..2 * k * k];
                let dst = &mut gathered.data[pix * k * k * c..][..k * k * c];
                for t in 0..k * k {
                    let (ky, kx) = (t / k, t % k);
                    let py = (y * s + ky) as f32 - p as f32 + off[2 * t];
                    let px = (x * s + kx) as f32 - p as f32 + off[2 * t + 1];
                    bilinear(input, py, px, &mut dst[t * c..(t + 1) * c]);
                }
            }
        }
        self.gemm.forward(gathered, out, scratch);
    }
}

/// torchvision's bilinear sampling of every channel at `(py, px)`: zero outside
/// `(−1, h) × (−1, w)`, corners outside the map count as zero.
fn bilinear(input: &Feature, py: f32, px: f32, dst: &mut [f32]) {
    dst.fill(0.0);
    let (h, w, c) = (input.h as f32, input.w as f32, input.c);
    if !(py > -1.0 && py < h && px > -1.0 && px < w) {
        return;
    }
    let (y0, x0) = (py.floor(), px.floor());
    let (ly, lx) = (py - y0, px - x0);
    let corners = [
        (y0, x0, (1.0 - ly) * (1.0 - lx)),
        (y0, x0 + 1.0, (1.0 - ly) * lx),
        (y0 + 1.0, x0, ly * (1.0 - lx)),
        (y0 + 1.0, x0 + 1.0, ly * lx),
    ];
    for (cy, cx, wt) in corners {
        if cy < 0.0 || cx < 0.0 || cy >= h || cx >= w || wt == 0.0 {
            continue;
        }
        let src = &input.data[(cy as usize * input.w + cx as usize) * c..][..c];
        for (d, &v) in dst.iter_mut().zip(src) {
            *d += wt * v;
        }
    }
}

/// A 2×2 stride-2 transposed convolution (PyTorch's `ConvTranspose2d(k=2, s=2)`): output pixel
/// `(2y + dy, 2x + dx)` is `bias + Σ_c in[y, x, c] · W[c, o, dy, dx]`.
#[derive(Debug, Clone)]
pub struct ConvTranspose2x2 {
    pub cin: usize,
    pub cout: usize,
    /// A 1×1 from `cin` to `4·cout` channels (`(dy·2 + dx)·cout + o`).
    gemm: Conv2d,
}

impl ConvTranspose2x2 {
    /// From PyTorch-layout weights `[cin, cout, 2, 2]` and a bias.
    pub fn from_iohw(
        weight: &[f32],
        bias: &[f32],
        cin: usize,
        cout: usize,
        act: Activation,
    ) -> Self {
        assert_eq!(weight.len(), cin * cout * 4);
        let mut w = vec![0.0; 4 * cout * cin];
        for ci in 0..cin {
            for o in 0..cout {
                for t in 0..4 {
                    w[(t * cout + o) * cin + ci] = weight[(ci * cout + o) * 4 + t];
                }
            }
        }
        let b: Vec<f32> = (0..4).flat_map(|_| bias.iter().copied()).collect();
        let gemm = Conv2d::from_oihw(&w, &b, (4 * cout, cin, 1), 1, 0, false, act);
        ConvTranspose2x2 { cin, cout, gemm }
    }

    /// Run on `input` into `out` of `h × w` (at most twice the input's size: the 2× map
    /// cropped); `tmp` and `scratch` are reused buffers.
    pub fn forward(
        &self,
        input: &Feature,
        (h, w): (usize, usize),
        out: &mut Feature,
        tmp: &mut Feature,
        scratch: &mut Vec<f32>,
    ) {
        assert!(
            h <= 2 * input.h && w <= 2 * input.w,
            "transposed output too large"
        );
        self.gemm.forward(input, tmp, scratch);
        let co = self.cout;
        out.reshape(h, w, co);
        for y in 0..h {
            for x in 0..w {
                let (sy, sx, t) = (y / 2, x / 2, (y % 2) * 2 + x % 2);
                let src = &tmp.data[(sy * input.w + sx) * 4 * co + t * co..][..co];
                out.data[(y * w + x) * co..][..co].copy_from_slice(src);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::pseudo;
    use super::*;

    /// The largest |a − b|; infinite when a value is not finite (a NaN never hides in a max).
    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0.0f32, |m, (x, y)| {
            let d = (x - y).abs();
            if d.is_finite() {
                m.max(d)
            } else {
                f32::INFINITY
            }
        })
    }

    /// Direct loops over taps and channels, with the sampling written out again.
    fn naive_deform(
        input: &Feature,
        offsets: &Feature,
        weight: &[f32],
        bias: &[f32],
        cout: usize,
        (k, s, p): (usize, usize, usize),
    ) -> Feature {
        let (oh, ow) = (offsets.h, offsets.w);
        let mut out = Feature::zeros(oh, ow, cout);
        let at = |y: isize, x: isize, c: usize| -> f32 {
            if y < 0 || x < 0 || y >= input.h as isize || x >= input.w as isize {
                0.0
            } else {
                input.data[(y as usize * input.w + x as usize) * input.c + c]
            }
        };
        for y in 0..oh {
            for x in 0..ow {
                for o in 0..cout {
                    let mut acc = bias[o];
                    for ky in 0..k {
                        for kx in 0..k {
                            let t = ky * k + kx;
                            let off = &offsets.data[(y * ow + x) * 2 * k * k..];
                            let py = (y * s + ky) as f32 - p as f32 + off[2 * t];
                            let px = (x * s + kx) as f32 - p as f32 + off[2 * t + 1];
                            if py <= -1.0
                                || px <= -1.0
                                || py >= input.h as f32
                                || px >= input.w as f32
                            {
                                continue;
                            }
                            let (y0, x0) = (py.floor() as isize, px.floor() as isize);
                            let (ly, lx) = (py - py.floor(), px - px.floor());
                            for ci in 0..input.c {
                                let v = (1.0 - ly) * (1.0 - lx) * at(y0, x0, ci)
                                    + (1.0 - ly) * lx * at(y0, x0 + 1, ci)
                                    + ly * (1.0 - lx) * at(y0 + 1, x0, ci)
                                    + ly * lx * at(y0 + 1, x0 + 1, ci);
                                acc += v * weight[((o * input.c + ci) * k + ky) * k + kx];
                            }
                        }
                    }
                    out.data[(y * ow + x) * cout + o] = acc;
                }
            }
        }
        out
    }

    #[test]
    fn deformable_matches_direct_sampling_loops() {
        for (h, w, cin, cout, stride) in [(7, 9, 5, 6, 1), (8, 5, 3, 4, 2)] {
            let input = Feature {
                h,
                w,
                c: cin,
                data: pseudo(h * w * cin, 1),
            };
            let (oh, ow) = (out_size(h, 3, stride, 1), out_size(w, 3, stride, 1));
            // Offsets up to ±4.5 px: many taps fall between pixels, some outside the map.
            let offsets = Feature {
                h: oh,
                w: ow,
                c: 18,
                data: pseudo(oh * ow * 18, 2).iter().map(|v| 4.5 * v).collect(),
            };
            let weight = pseudo(cout * cin * 9, 3);
            let bias = pseudo(cout, 4);
            let conv = DeformConv2d::from_oihw(
                &weight,
                &bias,
                (cout, cin, 3),
                stride,
                1,
                Activation::Identity,
            );
            let (mut out, mut g, mut s) = (Feature::default(), Feature::default(), Vec::new());
            conv.forward(&input, &offsets, &mut out, &mut g, &mut s);
            let want = naive_deform(&input, &offsets, &weight, &bias, cout, (3, stride, 1));
            assert_eq!((out.h, out.w, out.c), (want.h, want.w, want.c));
            let diff = max_diff(&out.data, &want.data);
            assert!(out.data.iter().all(|v| v.is_finite()));
            assert!(diff < 1e-4, "deformable differs by {diff}");

            // Zero offsets: a plain convolution.
            let zero = Feature::zeros(oh, ow, 18);
            conv.forward(&input, &zero, &mut out, &mut g, &mut s);
            let plain = Conv2d::from_oihw(
                &weight,
                &bias,
                (cout, cin, 3),
                stride,
                1,
                false,
                Activation::Identity,
            );
            let mut want = Feature::default();
            plain.forward(&input, &mut want, &mut s);
            let diff = max_diff(&out.data, &want.data);
            assert!(
                diff < 1e-4,
                "zero offsets differ from the plain convolution by {diff}"
            );
        }
    }

    #[test]
    fn transposed_scatters_each_pixel_to_a_2x2_block() {
        let (h, w, cin, cout) = (3, 4, 5, 2);
        let input = Feature {
            h,
            w,
            c: cin,
            data: pseudo(h * w * cin, 5),
        };
        let weight = pseudo(cin * cout * 4, 6);
        let bias = [0.25, -0.5];
        let t = ConvTranspose2x2::from_iohw(&weight, &bias, cin, cout, Activation::Identity);
        let (mut out, mut tmp, mut s) = (Feature::default(), Feature::default(), Vec::new());
        // Cropped to an odd size, as a finer level of odd size asks.
        t.forward(&input, (5, 8), &mut out, &mut tmp, &mut s);
        assert_eq!((out.h, out.w, out.c), (5, 8, 2));
        for y in 0..5 {
            for x in 0..8 {
                for o in 0..cout {
                    let (sy, sx, dy, dx) = (y / 2, x / 2, y % 2, x % 2);
                    let mut want = bias[o];
                    for ci in 0..cin {
                        want += input.data[(sy * w + sx) * cin + ci]
                            * weight[((ci * cout + o) * 2 + dy) * 2 + dx];
                    }
                    let got = out.data[(y * 8 + x) * cout + o];
                    assert!(
                        (got - want).abs() < 1e-5,
                        "({y}, {x}, {o}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
