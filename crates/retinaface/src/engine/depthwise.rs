//! Depthwise 3×3 convolution (pad 1) computed directly over NHWC rows, bias in the
//! accumulator and the activation on the store.
//!
//! Loop order: per output row, per vector of 8 channels, the 9 tap weights sit in registers
//! while the row's pixels stream by (9 loads + 9 FMAs + 1 store per pixel and vector). Rows of
//! taps outside the image get zero weights and read a valid row instead (0·x adds nothing);
//! only the first and last pixels of a row check their columns. Measured at 640×480, 1 thread:
//! the first version (per pixel: build the tap list, then loop channels) took 31 % of a 45 ms
//! pass; this loop order 14 % of 25 ms with one FMA chain per pixel, and less with three.

#![allow(clippy::needless_range_loop)] // register-block loops index several arrays at once

use super::simd::Simd;
use super::{out_size, Feature};
use rayon::prelude::*;

/// `packed` is `[(ky, kx)][c]`; output channel `j` of pixel `p` goes to `out[p*out_c+offset+j]`;
/// the activation is `max(x, slope·x)` per channel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv3x3(
    simd: Simd,
    input: &Feature,
    packed: &[f32],
    bias: &[f32],
    slope: &[f32],
    stride: usize,
    out: &mut [f32],
    out_c: usize,
    offset: usize,
) {
    let c = input.c;
    let (h, w) = (input.h, input.w);
    let oh = out_size(h, 3, stride, 1);
    let ow = out_size(w, 3, stride, 1);
    assert!(packed.len() == 9 * c && bias.len() == c && slope.len() == c);
    assert!(input.data.len() >= h * w * c && offset + c <= out_c);
    assert!(stride >= 1 && (ow - 1) * stride < w + 1 && (oh - 1) * stride < h + 1);
    let out = &mut out[..oh * ow * out_c];
    let job = |(oy, orow): (usize, &mut [f32])| {
        row(
            simd, input, packed, bias, slope, stride, oy, orow, out_c, offset,
        )
    };
    if rayon::current_num_threads() > 1 && oh * ow * c > 1 << 15 {
        out.par_chunks_mut(ow * out_c).enumerate().for_each(job);
    } else {
        out.chunks_mut(ow * out_c).enumerate().for_each(job);
    }
}

/// Output row `oy` into `orow` (pixel `x` at `orow[x * out_c + offset..]`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn row(
    simd: Simd,
    input: &Feature,
    packed: &[f32],
    bias: &[f32],
    slope: &[f32],
    stride: usize,
    oy: usize,
    orow: &mut [f32],
    out_c: usize,
    offset: usize,
) {
    let (h, w, c) = (input.h, input.w, input.c);
    assert!(input.data.len() >= h * w * c);
    let dims = (h, w, c);
    let locate = |iy: usize| iy * w * c;
    row_with(
        simd,
        &input.data,
        dims,
        locate,
        packed,
        bias,
        slope,
        stride,
        oy,
        orow,
        out_c,
        offset,
    )
}

/// As [`row`], for an input of `h × w × c` whose row `iy` starts at `src[locate(iy)]` (a ring
/// of rows, in the row pipeline).
#[allow(clippy::too_many_arguments)]
pub(crate) fn row_with(
    simd: Simd,
    src: &[f32],
    (h, w, c): (usize, usize, usize),
    locate: impl Fn(usize) -> usize,
    packed: &[f32],
    bias: &[f32],
    slope: &[f32],
    stride: usize,
    oy: usize,
    orow: &mut [f32],
    out_c: usize,
    offset: usize,
) {
    assert!(packed.len() == 9 * c && bias.len() == c && slope.len() == c);
    assert!(offset + c <= out_c && h > 0 && w > 0);
    // Input rows of the three kernel rows, clamped into the image, and whether each is real.
    let mut rows = [0usize; 3];
    let mut valid = [false; 3];
    for ky in 0..3 {
        let iy = (oy * stride + ky) as isize - 1;
        valid[ky] = iy >= 0 && iy < h as isize;
        rows[ky] = locate(iy.clamp(0, h as isize - 1) as usize);
    }
    let r = Row {
        src,
        rows,
        valid,
        w,
        c,
        stride,
        ow: out_size(w, 3, stride, 1),
        packed,
        bias,
        slope,
    };
    r.run(simd, orow, out_c, offset);
}

/// One output row's inputs.
struct Row<'a> {
    src: &'a [f32],
    /// Start of each kernel row's input row in `src`.
    rows: [usize; 3],
    valid: [bool; 3],
    w: usize,
    c: usize,
    stride: usize,
    ow: usize,
    packed: &'a [f32],
    bias: &'a [f32],
    slope: &'a [f32],
}

impl Row<'_> {
    fn run(&self, simd: Simd, orow: &mut [f32], out_c: usize, offset: usize) {
        assert!(orow.len() >= (self.ow - 1) * out_c + offset + self.c);
        for &r in &self.rows {
            assert!(r + self.w * self.c <= self.src.len());
        }
        let mut j0 = 0;
        #[cfg(target_arch = "x86_64")]
        if simd != Simd::Portable && Simd::Avx2.supported() {
            // SAFETY: AVX2 + FMA present; the asserts above keep every input row (w·c values
            // from its start) inside `src` and every output pixel's channels inside `orow`;
            // columns are checked against `w` in the kernel.
            unsafe { self.avx2(orow.as_mut_ptr().add(offset), out_c) };
            j0 = self.c / 8 * 8;
        }
        let _ = simd;
        // Channels the vector kernel did not cover.
        for j in j0..self.c {
            for ox in 0..self.ow {
                let mut a = self.bias[j];
                for ky in 0..3 {
                    if !self.valid[ky] {
                        continue;
                    }
                    for kx in 0..3 {
                        let ix = (ox * self.stride + kx) as isize - 1;
                        if ix < 0 || ix >= self.w as isize {
                            continue;
                        }
                        let x = self.src[self.rows[ky] + ix as usize * self.c + j];
                        a += x * self.packed[(ky * 3 + kx) * self.c + j];
                    }
                }
                orow[ox * out_c + offset + j] = a.max(a * self.slope[j]);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(&self, dst: *mut f32, out_c: usize) {
        use std::arch::x86_64::*;
        let (c, w, s) = (self.c, self.w, self.stride);
        let src = self.src.as_ptr();
        for j in (0..c / 8 * 8).step_by(8) {
            let mut k = [_mm256_setzero_ps(); 9];
            for ky in 0..3 {
                if self.valid[ky] {
                    for kx in 0..3 {
                        k[ky * 3 + kx] =
                            _mm256_loadu_ps(self.packed.as_ptr().add((ky * 3 + kx) * c + j));
                    }
                }
            }
            let b = _mm256_loadu_ps(self.bias.as_ptr().add(j));
            let sl = _mm256_loadu_ps(self.slope.as_ptr().add(j));
            let r = [
                src.add(self.rows[0] + j),
                src.add(self.rows[1] + j),
                src.add(self.rows[2] + j),
            ];
            for ox in 0..self.ow {
                let ix0 = (ox * s) as isize - 1;
                let mut acc = b;
                if ix0 >= 0 && ix0 + 2 < w as isize {
                    // Three chains of three FMAs (one per kernel row), summed at the end: one
                    // chain of nine was latency-bound (5 cycles per FMA), 14 % of a pass.
                    let x = ix0 as usize * c;
                    let mut part = [_mm256_setzero_ps(); 3];
                    for ky in 0..3 {
                        let p = r[ky].add(x);
                        let mut a = _mm256_mul_ps(_mm256_loadu_ps(p), k[ky * 3]);
                        a = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(c)), k[ky * 3 + 1], a);
                        part[ky] = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(2 * c)), k[ky * 3 + 2], a);
                    }
                    acc =
                        _mm256_add_ps(_mm256_add_ps(acc, part[0]), _mm256_add_ps(part[1], part[2]));
                } else {
                    for kx in 0..3 {
                        let ix = ix0 + kx as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        for ky in 0..3 {
                            let p = r[ky].add(ix as usize * c);
                            acc = _mm256_fmadd_ps(_mm256_loadu_ps(p), k[ky * 3 + kx], acc);
                        }
                    }
                }
                let y = _mm256_max_ps(acc, _mm256_mul_ps(acc, sl));
                _mm256_storeu_ps(dst.add(ox * out_c + j), y);
            }
        }
    }
}
