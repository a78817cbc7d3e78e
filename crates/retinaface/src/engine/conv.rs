//! 2-D convolution with bias and activation fused, over NHWC maps.

use super::{depthwise, out_size, Feature};
use rayon::prelude::*;

/// The activation applied to a convolution's output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Identity,
    Relu,
    /// LeakyReLU with the given negative slope.
    Leaky(f32),
}

impl Activation {
    /// ReLU for slope 0, LeakyReLU otherwise.
    pub fn leaky(slope: f32) -> Self {
        if slope == 0.0 {
            Activation::Relu
        } else {
            Activation::Leaky(slope)
        }
    }

    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            Activation::Relu => x.max(0.0),
            Activation::Leaky(a) => {
                if x < 0.0 {
                    x * a
                } else {
                    x
                }
            }
        }
    }

    /// Apply to every value of a slice.
    pub fn apply_slice(self, xs: &mut [f32]) {
        match self {
            Activation::Identity => {}
            Activation::Relu => xs.iter_mut().for_each(|x| *x = x.max(0.0)),
            Activation::Leaky(a) => xs.iter_mut().for_each(|x| {
                if *x < 0.0 {
                    *x *= a
                }
            }),
        }
    }
}

/// How a convolution is computed.
#[derive(Debug, Clone)]
enum Kernel {
    /// Dense convolution as GEMM: weights packed as `[(ky, kx, ci)][co]`.
    Gemm { packed: Vec<f32> },
    /// Depthwise (groups = channels) 3×3: weights packed as `[(ky, kx)][c]`.
    Depthwise { packed: Vec<f32> },
}

/// A convolution layer with its weights packed for the engine.
#[derive(Debug, Clone)]
pub struct Conv2d {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub act: Activation,
    bias: Vec<f32>,
    kernel: Kernel,
}

impl Conv2d {
    /// Build from PyTorch-layout weights `[cout, cin / groups, k, k]` (row-major) and a bias.
    /// `groups` must be 1 or `cin` (depthwise, 3×3 only).
    pub fn from_oihw(
        weight: &[f32],
        bias: &[f32],
        (cout, cin, k): (usize, usize, usize),
        stride: usize,
        pad: usize,
        depthwise: bool,
        act: Activation,
    ) -> Self {
        let kernel = if depthwise {
            assert!(
                cin == cout && k == 3,
                "depthwise convolutions are 3×3 with cin == cout"
            );
            let mut packed = vec![0.0; 9 * cout];
            for c in 0..cout {
                for t in 0..9 {
                    packed[t * cout + c] = weight[c * 9 + t];
                }
            }
            Kernel::Depthwise { packed }
        } else {
            let kk = k * k;
            let mut packed = vec![0.0; kk * cin * cout];
            for co in 0..cout {
                for ci in 0..cin {
                    for t in 0..kk {
                        packed[(t * cin + ci) * cout + co] = weight[(co * cin + ci) * kk + t];
                    }
                }
            }
            Kernel::Gemm { packed }
        };
        assert_eq!(bias.len(), cout);
        Conv2d {
            cin,
            cout,
            k,
            stride,
            pad,
            act,
            bias: bias.to_vec(),
            kernel,
        }
    }

    /// Output spatial size for an input of `h × w`.
    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (
            out_size(h, self.k, self.stride, self.pad),
            out_size(w, self.k, self.stride, self.pad),
        )
    }

    /// Multiply-accumulates for an input of `h × w` (for cost reports).
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        let (oh, ow) = self.out_hw(h, w);
        let per_pixel = match self.kernel {
            Kernel::Gemm { .. } => self.k * self.k * self.cin * self.cout,
            Kernel::Depthwise { .. } => 9 * self.cout,
        };
        (oh * ow * per_pixel) as u64
    }

    /// Run into a fresh map of exactly `cout` channels.
    pub fn forward(&self, input: &Feature, out: &mut Feature, scratch: &mut Vec<f32>) {
        let (oh, ow) = self.out_hw(input.h, input.w);
        out.reshape(oh, ow, self.cout);
        self.forward_into(input, &mut out.data, self.cout, 0, scratch);
    }

    /// Run, writing channel `j` of output pixel `p` to `out[p * out_c + offset + j]`: the
    /// output can be a channel slice of a wider map.
    pub fn forward_into(
        &self,
        input: &Feature,
        out: &mut [f32],
        out_c: usize,
        offset: usize,
        scratch: &mut Vec<f32>,
    ) {
        assert_eq!(
            input.c, self.cin,
            "convolution input has the wrong channel count"
        );
        let (oh, ow) = self.out_hw(input.h, input.w);
        assert!(out.len() >= oh * ow * out_c && offset + self.cout <= out_c);
        match &self.kernel {
            Kernel::Depthwise { packed } => depthwise::conv3x3(
                input,
                packed,
                &self.bias,
                self.stride,
                self.act,
                out,
                out_c,
                offset,
            ),
            Kernel::Gemm { packed } => {
                let m = oh * ow;
                let kdim = self.k * self.k * self.cin;
                let direct = self.k == 1 && self.stride == 1 && self.pad == 0;
                let lhs: &[f32] = if direct {
                    &input.data
                } else {
                    im2col(input, self.k, self.stride, self.pad, oh, ow, scratch);
                    scratch
                };
                // Prefill with the bias, then accumulate the product on top of it.
                out.par_chunks_mut(out_c).take(m).for_each(|px| {
                    px[offset..offset + self.cout].copy_from_slice(&self.bias);
                });
                gemm_acc(m, self.cout, kdim, lhs, packed, &mut out[offset..], out_c);
                if self.act != Activation::Identity {
                    let act = self.act;
                    let cout = self.cout;
                    out.par_chunks_mut(out_c)
                        .take(m)
                        .for_each(|px| act.apply_slice(&mut px[offset..offset + cout]));
                }
            }
        }
    }
}

/// `dst[i * ldd + j] += Σ_k lhs[i * kdim + k] · rhs[k * n + j]` for an `m × n` result.
fn gemm_acc(
    m: usize,
    n: usize,
    kdim: usize,
    lhs: &[f32],
    rhs: &[f32],
    dst: &mut [f32],
    ldd: usize,
) {
    assert!(lhs.len() >= m * kdim && rhs.len() >= kdim * n);
    assert!(m == 0 || dst.len() >= (m - 1) * ldd + n);
    let threads = rayon::current_num_threads();
    let par = if threads > 1 && m * n * kdim > 1 << 16 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every index the strides describe inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            kdim,
            dst.as_mut_ptr(),
            1,
            ldd as isize,
            true,
            lhs.as_ptr(),
            1,
            kdim as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Rows of `(ky, kx, ci)` patches, one per output pixel; zero outside the image.
fn im2col(
    input: &Feature,
    k: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
    scratch: &mut Vec<f32>,
) {
    let c = input.c;
    let row_len = k * k * c;
    scratch.resize(oh * ow * row_len, 0.0);
    scratch
        .par_chunks_mut(ow * row_len)
        .enumerate()
        .for_each(|(oy, rows)| {
            for ox in 0..ow {
                let row = &mut rows[ox * row_len..(ox + 1) * row_len];
                for ky in 0..k {
                    let iy = (oy * stride + ky) as isize - pad as isize;
                    for kx in 0..k {
                        let ix = (ox * stride + kx) as isize - pad as isize;
                        let dst = &mut row[(ky * k + kx) * c..(ky * k + kx + 1) * c];
                        if iy < 0 || ix < 0 || iy >= input.h as isize || ix >= input.w as isize {
                            dst.fill(0.0);
                        } else {
                            let src = (iy as usize * input.w + ix as usize) * c;
                            dst.copy_from_slice(&input.data[src..src + c]);
                        }
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct NCHW-semantics convolution as the oracle.
    fn naive(
        input: &Feature,
        w: &[f32],
        b: &[f32],
        cout: usize,
        k: usize,
        s: usize,
        p: usize,
        dw: bool,
    ) -> Feature {
        let (oh, ow) = (out_size(input.h, k, s, p), out_size(input.w, k, s, p));
        let mut out = Feature::zeros(oh, ow, cout);
        let cin = input.c;
        for oy in 0..oh {
            for ox in 0..ow {
                for co in 0..cout {
                    let mut acc = b[co];
                    let cis: Vec<usize> = if dw { vec![co] } else { (0..cin).collect() };
                    for (j, &ci) in cis.iter().enumerate() {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s + ky) as isize - p as isize;
                                let ix = (ox * s + kx) as isize - p as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= input.h as isize
                                    || ix >= input.w as isize
                                {
                                    continue;
                                }
                                let wi = if dw {
                                    co * k * k + ky * k + kx
                                } else {
                                    ((co * cin + j) * k + ky) * k + kx
                                };
                                acc += w[wi]
                                    * input.data[(iy as usize * input.w + ix as usize) * cin + ci];
                            }
                        }
                    }
                    out.data[(oy * ow + ox) * cout + co] = acc;
                }
            }
        }
        out
    }

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn dense_and_depthwise_match_naive() {
        for &(h, w, cin, cout, k, s, p, dw) in &[
            (7, 9, 3, 8, 3, 2, 1, false),
            (6, 5, 8, 16, 1, 1, 0, false),
            (5, 6, 4, 4, 3, 1, 1, false),
            (9, 7, 16, 16, 3, 1, 1, true),
            (9, 8, 16, 16, 3, 2, 1, true),
            (11, 11, 3, 4, 7, 2, 3, false),
            (8, 8, 4, 6, 1, 2, 0, false),
        ] {
            let input = Feature {
                h,
                w,
                c: cin,
                data: pseudo(h * w * cin, 1),
            };
            let wn = if dw { cout * 9 } else { cout * cin * k * k };
            let wt = pseudo(wn, 2);
            let b = pseudo(cout, 3);
            let conv = Conv2d::from_oihw(
                &wt,
                &b,
                (cout, if dw { cout } else { cin }, k),
                s,
                p,
                dw,
                Activation::Identity,
            );
            let mut out = Feature::default();
            conv.forward(&input, &mut out, &mut Vec::new());
            let want = naive(&input, &wt, &b, cout, k, s, p, dw);
            assert_eq!((out.h, out.w, out.c), (want.h, want.w, want.c));
            for (a, b) in out.data.iter().zip(&want.data) {
                assert!(
                    (a - b).abs() < 1e-4,
                    "{a} vs {b} for {:?}",
                    (h, w, cin, cout, k, s, p, dw)
                );
            }
        }
    }

    #[test]
    fn writes_into_channel_slice() {
        let input = Feature {
            h: 4,
            w: 4,
            c: 2,
            data: pseudo(32, 5),
        };
        let wt = pseudo(3 * 2 * 9, 6);
        let conv = Conv2d::from_oihw(
            &wt,
            &[0.5, -0.5, 0.0],
            (3, 2, 3),
            1,
            1,
            false,
            Activation::Relu,
        );
        let mut full = Feature::default();
        conv.forward(&input, &mut full, &mut Vec::new());
        let mut wide = vec![7.0; 16 * 5];
        conv.forward_into(&input, &mut wide, 5, 1, &mut Vec::new());
        for p in 0..16 {
            assert_eq!(wide[p * 5], 7.0);
            assert_eq!(wide[p * 5 + 4], 7.0);
            assert_eq!(&wide[p * 5 + 1..p * 5 + 4], &full.data[p * 3..p * 3 + 3]);
            assert!(full.data[p * 3..p * 3 + 3].iter().all(|&v| v >= 0.0));
        }
    }
}
