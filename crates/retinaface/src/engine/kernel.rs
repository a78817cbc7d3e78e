//! The dense micro-kernel every non-depthwise convolution runs on: a register block of output
//! pixels × 16 output channels, accumulated over "taps" (shifted views of the input) and input
//! channels, with the bias loaded into the accumulators and the activation applied on the
//! store. One kernel serves 1×1 convolutions (one tap, the map read in place), k×k ones over a
//! zero-padded input (k² taps, no im2col buffer) and Winograd's per-point products.
//!
//! Why hand-written (measured on the 2-core AVX2 EPYC, MobileNet-0.25 at 640×480, 1 thread):
//! im2col + `gemm` 0.19 spent 105 ms per pass, a third of it in im2col copies and in the
//! separate bias / activation passes, and `gemm` ran its 16- and 32-column products at half
//! speed. A 6×16 AVX2 block (12 accumulators, 2 weight vectors, 1 broadcast: 15 of the 16 ymm
//! registers) keeps both FMA pipes busy for any output width that is a multiple of 16, which
//! every layer of the network is (8 for the stem, which gets an 8×8 block).

#![allow(clippy::needless_range_loop)] // register-block loops index several arrays at once

use super::simd::Simd;

/// Output channels per packed weight panel: two AVX2 vectors, one AVX-512 vector.
pub(crate) const NR: usize = 16;

/// A dense layer's weights packed for the micro-kernel: `ceil(cout / NR)` panels, each
/// `[tap][ci][NR]` (zero past `cout`); bias and activation slope per output channel, padded
/// to whole panels. The activation is `max(x, slope·x)`: slope 1 is the identity, 0 ReLU,
/// 0 < a < 1 LeakyReLU(a).
#[derive(Debug, Clone)]
pub(crate) struct Packed {
    pub taps: usize,
    pub cin: usize,
    pub cout: usize,
    w: Vec<f32>,
    bias: Vec<f32>,
    slope: Vec<f32>,
}

impl Packed {
    /// `weight(t, ci, co)` gives the weight of tap `t`, input channel `ci`, output `co`.
    pub fn new(
        taps: usize,
        cin: usize,
        cout: usize,
        weight: impl Fn(usize, usize, usize) -> f32,
        bias: &[f32],
        slope: &[f32],
    ) -> Self {
        assert!(bias.len() == cout && slope.len() == cout);
        let panels = cout.div_ceil(NR);
        let mut w = vec![0.0; panels * taps * cin * NR];
        for p in 0..panels {
            for t in 0..taps {
                for ci in 0..cin {
                    for j in 0..NR.min(cout - p * NR) {
                        w[((p * taps + t) * cin + ci) * NR + j] = weight(t, ci, p * NR + j);
                    }
                }
            }
        }
        let pad = |v: &[f32], fill: f32| {
            let mut v = v.to_vec();
            v.resize(panels * NR, fill);
            v
        };
        Packed {
            taps,
            cin,
            cout,
            w,
            bias: pad(bias, 0.0),
            slope: pad(slope, 1.0),
        }
    }

    fn panels(&self) -> usize {
        self.cout.div_ceil(NR)
    }

    fn panel_len(&self) -> usize {
        self.taps * self.cin * NR
    }
}

/// For pixels `i < pixels` and channels `j < p.cout`:
/// `c[c0 + i·ldc + j] = act_j(bias_j + Σ_t Σ_ci a[a0 + i·rs + offs[t] + ci] · w[t][ci][j])`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn strip(
    simd: Simd,
    p: &Packed,
    a: &[f32],
    a0: usize,
    rs: usize,
    offs: &[usize],
    c: &mut [f32],
    c0: usize,
    ldc: usize,
    pixels: usize,
) {
    if pixels == 0 {
        return;
    }
    assert_eq!(offs.len(), p.taps);
    let max_off = offs.iter().copied().max().unwrap_or(0);
    assert!(a0 + (pixels - 1) * rs + max_off + p.cin <= a.len());
    assert!(c0 + (pixels - 1) * ldc + p.cout <= c.len());
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 if Simd::Avx512.supported() => {
            // SAFETY: the CPU has AVX-512F; the asserts above bound every read of `a` (the
            // largest index is a0 + (pixels-1)·rs + max_off + cin - 1) and every write of `c`;
            // the weight, bias and slope reads stay inside `p`'s whole panels.
            unsafe {
                avx512::strip(
                    p,
                    a.as_ptr().add(a0),
                    rs,
                    offs,
                    c.as_mut_ptr().add(c0),
                    ldc,
                    pixels,
                )
            }
        }
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 | Simd::Avx512 if Simd::Avx2.supported() => {
            // SAFETY: as above, with AVX2 and FMA present.
            unsafe {
                avx2::strip(
                    p,
                    a.as_ptr().add(a0),
                    rs,
                    offs,
                    c.as_mut_ptr().add(c0),
                    ldc,
                    pixels,
                )
            }
        }
        _ => portable_strip(p, a, a0, rs, offs, c, c0, ldc, pixels),
    }
}

#[allow(clippy::too_many_arguments)]
fn portable_strip(
    p: &Packed,
    a: &[f32],
    a0: usize,
    rs: usize,
    offs: &[usize],
    c: &mut [f32],
    c0: usize,
    ldc: usize,
    pixels: usize,
) {
    const MR: usize = 4;
    for panel in 0..p.panels() {
        let cols = (p.cout - panel * NR).min(NR);
        let w = &p.w[panel * p.panel_len()..][..p.panel_len()];
        let bias = &p.bias[panel * NR..][..NR];
        let slope = &p.slope[panel * NR..][..NR];
        for i0 in (0..pixels).step_by(MR) {
            let rows = MR.min(pixels - i0);
            let mut acc = [[0f32; NR]; MR];
            for row in acc.iter_mut() {
                row.copy_from_slice(bias);
            }
            for (t, &off) in offs.iter().enumerate() {
                for ci in 0..p.cin {
                    let wr: &[f32; NR] = w[(t * p.cin + ci) * NR..][..NR].try_into().unwrap();
                    for (r, row) in acc.iter_mut().enumerate().take(rows) {
                        let x = a[a0 + (i0 + r) * rs + off + ci];
                        for j in 0..NR {
                            row[j] += x * wr[j];
                        }
                    }
                }
            }
            for (r, row) in acc.iter().enumerate().take(rows) {
                let o = &mut c[c0 + (i0 + r) * ldc + panel * NR..][..cols];
                for j in 0..cols {
                    o[j] = row[j].max(row[j] * slope[j]);
                }
            }
        }
    }
}

/// Calls `$f::<R>(args)` for the runtime row count `$n` in `1..=$max`.
macro_rules! by_rows {
    ($n:expr, $f:ident, $args:tt, $($r:literal)*) => {
        match $n {
            $($r => $f::<$r> $args,)*
            _ => unreachable!(),
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Packed, NR};
    use std::arch::x86_64::*;

    /// `n` ones then zeros, as a maskstore mask.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn mask(n: usize) -> __m256i {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }

    /// See [`super::strip`]; `a` and `c` point at pixel 0 (its `a0`, `c0`).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn strip(
        p: &Packed,
        a: *const f32,
        rs: usize,
        offs: &[usize],
        c: *mut f32,
        ldc: usize,
        pixels: usize,
    ) {
        let cin = p.cin;
        for panel in 0..p.panels() {
            let cols = (p.cout - panel * NR).min(NR);
            let w = p.w.as_ptr().add(panel * p.panel_len());
            let bias = p.bias.as_ptr().add(panel * NR);
            let slope = p.slope.as_ptr().add(panel * NR);
            let cp = c.add(panel * NR);
            let mut i = 0;
            if cols > 8 {
                while i + 6 <= pixels {
                    block16::<6>(
                        a.add(i * rs),
                        rs,
                        offs,
                        cin,
                        w,
                        bias,
                        slope,
                        cp.add(i * ldc),
                        ldc,
                        cols,
                    );
                    i += 6;
                }
                if i < pixels {
                    let args = (a.add(i * rs), cp.add(i * ldc));
                    by_rows!(pixels - i, block16,
                        (args.0, rs, offs, cin, w, bias, slope, args.1, ldc, cols), 1 2 3 4 5);
                }
            } else {
                while i + 8 <= pixels {
                    block8::<8>(
                        a.add(i * rs),
                        rs,
                        offs,
                        cin,
                        w,
                        bias,
                        slope,
                        cp.add(i * ldc),
                        ldc,
                        cols,
                    );
                    i += 8;
                }
                if i < pixels {
                    let args = (a.add(i * rs), cp.add(i * ldc));
                    by_rows!(pixels - i, block8,
                        (args.0, rs, offs, cin, w, bias, slope, args.1, ldc, cols), 1 2 3 4 5 6 7);
                }
            }
        }
    }

    /// MR pixels × 16 channels (9 ≤ cols ≤ 16 stored).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block16<const MR: usize>(
        a: *const f32,
        rs: usize,
        offs: &[usize],
        cin: usize,
        w: *const f32,
        bias: *const f32,
        slope: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let mut acc0 = [_mm256_loadu_ps(bias); MR];
        let mut acc1 = [_mm256_loadu_ps(bias.add(8)); MR];
        let mut wp = w;
        for &off in offs {
            let ap = a.add(off);
            for ci in 0..cin {
                let w0 = _mm256_loadu_ps(wp);
                let w1 = _mm256_loadu_ps(wp.add(8));
                wp = wp.add(NR);
                for r in 0..MR {
                    let x = _mm256_broadcast_ss(&*ap.add(r * rs + ci));
                    acc0[r] = _mm256_fmadd_ps(x, w0, acc0[r]);
                    acc1[r] = _mm256_fmadd_ps(x, w1, acc1[r]);
                }
            }
        }
        let s0 = _mm256_loadu_ps(slope);
        let s1 = _mm256_loadu_ps(slope.add(8));
        let m1 = mask(cols - 8);
        for r in 0..MR {
            let y0 = _mm256_max_ps(acc0[r], _mm256_mul_ps(acc0[r], s0));
            let y1 = _mm256_max_ps(acc1[r], _mm256_mul_ps(acc1[r], s1));
            let o = c.add(r * ldc);
            _mm256_storeu_ps(o, y0);
            if cols == NR {
                _mm256_storeu_ps(o.add(8), y1);
            } else {
                _mm256_maskstore_ps(o.add(8), m1, y1);
            }
        }
    }

    /// MR pixels × 8 channels (cols ≤ 8 stored), for layers of at most 8 outputs.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block8<const MR: usize>(
        a: *const f32,
        rs: usize,
        offs: &[usize],
        cin: usize,
        w: *const f32,
        bias: *const f32,
        slope: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let mut acc = [_mm256_loadu_ps(bias); MR];
        let mut wp = w;
        for &off in offs {
            let ap = a.add(off);
            for ci in 0..cin {
                let w0 = _mm256_loadu_ps(wp);
                wp = wp.add(NR);
                for r in 0..MR {
                    let x = _mm256_broadcast_ss(&*ap.add(r * rs + ci));
                    acc[r] = _mm256_fmadd_ps(x, w0, acc[r]);
                }
            }
        }
        let s0 = _mm256_loadu_ps(slope);
        let m0 = mask(cols);
        for r in 0..MR {
            let y = _mm256_max_ps(acc[r], _mm256_mul_ps(acc[r], s0));
            let o = c.add(r * ldc);
            if cols == 8 {
                _mm256_storeu_ps(o, y);
            } else {
                _mm256_maskstore_ps(o, m0, y);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Packed, NR};
    use std::arch::x86_64::*;

    /// See [`super::strip`]. Pairs of panels as 12 pixels × 2 zmm (24 accumulators, 14 loads
    /// per 24 FMAs); a lone last panel as 12 × 1. Written to the AVX2 kernel's measured
    /// design; the tests run it where the machine has AVX-512 and say so where it has not.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn strip(
        p: &Packed,
        a: *const f32,
        rs: usize,
        offs: &[usize],
        c: *mut f32,
        ldc: usize,
        pixels: usize,
    ) {
        let cin = p.cin;
        let panels = p.panels();
        let mut panel = 0;
        while panel < panels {
            let two = panel + 1 < panels;
            let cols = (p.cout - panel * NR).min(if two { 2 * NR } else { NR });
            let w = p.w.as_ptr().add(panel * p.panel_len());
            let w2 = if two { w.add(p.panel_len()) } else { w };
            let bias = p.bias.as_ptr().add(panel * NR);
            let slope = p.slope.as_ptr().add(panel * NR);
            let cp = c.add(panel * NR);
            let mut i = 0;
            while i < pixels {
                let rows = (pixels - i).min(12);
                let (ai, ci) = (a.add(i * rs), cp.add(i * ldc));
                if two {
                    by_rows!(rows, block2,
                        (ai, rs, offs, cin, w, w2, bias, slope, ci, ldc, cols), 1 2 3 4 5 6 7 8 9 10 11 12);
                } else {
                    by_rows!(rows, block1,
                        (ai, rs, offs, cin, w, bias, slope, ci, ldc, cols), 1 2 3 4 5 6 7 8 9 10 11 12);
                }
                i += rows;
            }
            panel += if two { 2 } else { 1 };
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn mask(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as u16
        }
    }

    /// MR pixels × 32 channels of two consecutive panels (17 ≤ cols ≤ 32 stored).
    #[inline]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block2<const MR: usize>(
        a: *const f32,
        rs: usize,
        offs: &[usize],
        cin: usize,
        w: *const f32,
        w2: *const f32,
        bias: *const f32,
        slope: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let mut acc0 = [_mm512_loadu_ps(bias); MR];
        let mut acc1 = [_mm512_loadu_ps(bias.add(NR)); MR];
        let (mut wp, mut wq) = (w, w2);
        for &off in offs {
            let ap = a.add(off);
            for ci in 0..cin {
                let w0 = _mm512_loadu_ps(wp);
                let w1 = _mm512_loadu_ps(wq);
                wp = wp.add(NR);
                wq = wq.add(NR);
                for r in 0..MR {
                    let x = _mm512_set1_ps(*ap.add(r * rs + ci));
                    acc0[r] = _mm512_fmadd_ps(x, w0, acc0[r]);
                    acc1[r] = _mm512_fmadd_ps(x, w1, acc1[r]);
                }
            }
        }
        let s0 = _mm512_loadu_ps(slope);
        let s1 = _mm512_loadu_ps(slope.add(NR));
        let m1 = mask(cols - NR);
        for r in 0..MR {
            let y0 = _mm512_max_ps(acc0[r], _mm512_mul_ps(acc0[r], s0));
            let y1 = _mm512_max_ps(acc1[r], _mm512_mul_ps(acc1[r], s1));
            let o = c.add(r * ldc);
            _mm512_storeu_ps(o, y0);
            _mm512_mask_storeu_ps(o.add(NR), m1, y1);
        }
    }

    /// MR pixels × 16 channels (cols ≤ 16 stored).
    #[inline]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block1<const MR: usize>(
        a: *const f32,
        rs: usize,
        offs: &[usize],
        cin: usize,
        w: *const f32,
        bias: *const f32,
        slope: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let mut acc = [_mm512_loadu_ps(bias); MR];
        let mut wp = w;
        for &off in offs {
            let ap = a.add(off);
            for ci in 0..cin {
                let w0 = _mm512_loadu_ps(wp);
                wp = wp.add(NR);
                for r in 0..MR {
                    let x = _mm512_set1_ps(*ap.add(r * rs + ci));
                    acc[r] = _mm512_fmadd_ps(x, w0, acc[r]);
                }
            }
        }
        let s0 = _mm512_loadu_ps(slope);
        let m0 = mask(cols);
        for r in 0..MR {
            let y = _mm512_max_ps(acc[r], _mm512_mul_ps(acc[r], s0));
            _mm512_mask_storeu_ps(c.add(r * ldc), m0, y);
        }
    }
}
