//! Winograd F(4×4, 3×3) for the stride-1, pad-1 3×3 convolutions (FPN merges, SSH): each 6×6
//! input tile becomes 36 points, each point one small product over channels (on the dense
//! micro-kernel), and 4×4 outputs come back out, with bias and activation fused into that
//! last transform. 36 multiplies per 16 outputs instead of 144: the 3×3s were 58 % of the
//! network's MACs. Tiles go in blocks of [`TB`] along a tile row, so a block's transformed
//! input and products (≤ 36·18·64 floats each) stay in L2; rows of tiles run in parallel.
//!
//! Rounding: the transforms' constants (up to 8 and 1/24) lose a few bits; over the full
//! pipeline on 145 WIDER images the boxes move < 0.01 px (see the crate's parity check).

#![allow(clippy::needless_range_loop)] // register-block loops index several arrays at once

use super::kernel::{self, Packed};
use super::simd::Simd;
use super::Feature;
use rayon::prelude::*;
use std::cell::RefCell;

/// Tiles per block: three 6-row register blocks of the AVX2 kernel.
const TB: usize = 18;
/// Channels per transform vector.
const L: usize = 8;

type V = [f32; L];

/// A 3×3 convolution's weights in the Winograd domain.
#[derive(Debug, Clone)]
pub(crate) struct Weights {
    cin: usize,
    cout: usize,
    /// Input channels rounded up to [`L`] (the transformed input's width).
    cin_pad: usize,
    /// Output channels rounded up to the kernel's panel width (the products' width).
    cout_pad: usize,
    /// Per point: `[ci][co]` for the micro-kernel (identity activation, no bias).
    points: Vec<Packed>,
    bias: Vec<f32>,
    slope: Vec<f32>,
}

impl Weights {
    /// From OIHW weights `[cout][cin][3][3]`, bias and activation slope per output channel.
    pub fn new(weight: &[f32], bias: &[f32], slope: &[f32], cin: usize, cout: usize) -> Self {
        const G: [[f64; 3]; 6] = [
            [1.0 / 4.0, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        let cin_pad = cin.div_ceil(L) * L;
        // u[(co * cin + ci) * 36 + point] = (G g Gᵀ)[point]
        let mut u = vec![0f32; cout * cin * 36];
        for co in 0..cout {
            for ci in 0..cin {
                let g = &weight[(co * cin + ci) * 9..][..9];
                let mut gg = [[0f64; 3]; 6];
                for (i, row) in gg.iter_mut().enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = (0..3).map(|k| G[i][k] * g[k * 3 + j] as f64).sum();
                    }
                }
                for i in 0..6 {
                    for j in 0..6 {
                        let v: f64 = (0..3).map(|k| gg[i][k] * G[j][k]).sum();
                        u[(co * cin + ci) * 36 + i * 6 + j] = v as f32;
                    }
                }
            }
        }
        let zeros = vec![0.0; cout];
        let ones = vec![1.0; cout];
        let points = (0..36)
            .map(|pt| {
                Packed::new(
                    1,
                    cin_pad,
                    cout,
                    |_, ci, co| {
                        if ci < cin {
                            u[(co * cin + ci) * 36 + pt]
                        } else {
                            0.0
                        }
                    },
                    &zeros,
                    &ones,
                )
            })
            .collect();
        let cout_pad = cout.div_ceil(kernel::NR) * kernel::NR;
        let mut b = bias.to_vec();
        b.resize(cout_pad, 0.0);
        let mut s = slope.to_vec();
        s.resize(cout_pad, 1.0);
        Weights {
            cin,
            cout,
            cin_pad,
            cout_pad,
            points,
            bias: b,
            slope: s,
        }
    }
}

thread_local! {
    /// Per-thread transformed input and products of one block (grown once, then reused).
    static BLOCK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Convolve input channels `in_off..in_off + cin` of `input`, writing channel `j` of pixel `p`
/// to `out[p * out_c + offset + j]`. Its buffers are per thread (see [`BLOCK`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv3x3(
    simd: Simd,
    wt: &Weights,
    input: &Feature,
    in_off: usize,
    out: &mut [f32],
    out_c: usize,
    offset: usize,
) {
    let (h, w) = (input.h, input.w);
    assert!(in_off + wt.cin <= input.c && offset + wt.cout <= out_c);
    assert!(out.len() >= h * w * out_c);
    if h == 0 || w == 0 {
        return;
    }
    let (th, tw) = (h.div_ceil(4), w.div_ceil(4));
    let (pw, cp) = (4 * tw + 2, wt.cin_pad);
    let run_row = |ty: usize, o: &mut [f32]| {
        BLOCK.with(|block| {
            let mut block = block.borrow_mut();
            let (vs, ms) = (TB * cp, TB * wt.cout_pad);
            let need = 6 * pw * cp + 36 * (vs + ms);
            if block.len() < need {
                block.resize(need, 0.0);
            }
            let (padded, rest) = block.split_at_mut(6 * pw * cp);
            let (v, m) = rest.split_at_mut(36 * vs);
            // The tile row's six input rows, zero-padded: a pixel of zeros left, enough right
            // for whole tiles, channels padded to L. Per tile row rather than a padded copy
            // of the whole map (8.5 MB at 1080p), and hot in L2 for the transform.
            for (r, row) in padded.chunks_exact_mut(pw * cp).enumerate() {
                let y = (4 * ty + r) as isize - 1;
                if y < 0 || y >= h as isize {
                    row.fill(0.0);
                    continue;
                }
                let src = &input.data[y as usize * w * input.c..][..w * input.c];
                row[..cp].fill(0.0);
                if in_off == 0 && wt.cin == cp && input.c == cp {
                    // Whole row at once (the usual case: 16, 32 or 64 channels, read entire).
                    row[cp..(w + 1) * cp].copy_from_slice(src);
                } else {
                    for x in 0..w {
                        let d = &mut row[(x + 1) * cp..(x + 2) * cp];
                        d[..wt.cin].copy_from_slice(&src[x * input.c + in_off..][..wt.cin]);
                        d[wt.cin..].fill(0.0);
                    }
                }
                row[(w + 1) * cp..].fill(0.0);
            }
            for tx0 in (0..tw).step_by(TB) {
                let nt = TB.min(tw - tx0);
                input_transform(simd, padded, pw, cp, 0, tx0, nt, v, vs);
                for (pt, u) in wt.points.iter().enumerate() {
                    kernel::strip(simd, u, v, pt * vs, cp, &[0], m, pt * ms, wt.cout_pad, nt);
                }
                let rows = 4.min(h - 4 * ty);
                output_transform(simd, wt, m, ms, nt, o, w, out_c, offset, rows, tx0);
            }
        })
    };
    let out = &mut out[..h * w * out_c];
    if rayon::current_num_threads() > 1 && th > 1 {
        out.par_chunks_mut(4 * w * out_c)
            .enumerate()
            .for_each(|(ty, o)| run_row(ty, o));
    } else {
        out.chunks_mut(4 * w * out_c)
            .enumerate()
            .for_each(|(ty, o)| run_row(ty, o));
    }
}

/// `Bᵀ d` for one column (or row) of six vectors.
#[inline(always)]
fn bt(d: [V; 6]) -> [V; 6] {
    let mut o = [[0f32; L]; 6]; // registers after inlining
    for l in 0..L {
        let [d0, d1, d2, d3, d4, d5] = [d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]];
        o[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        o[1][l] = (d3 + d4) - 4.0 * (d1 + d2);
        o[2][l] = 4.0 * (d1 - d2) + (d4 - d3);
        o[3][l] = 2.0 * (d3 - d1) + (d4 - d2);
        o[4][l] = 2.0 * (d1 - d3) + (d4 - d2);
        o[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
    o
}

/// `Aᵀ m` for one column (or row) of six vectors.
#[inline(always)]
fn at(m: [V; 6]) -> [V; 4] {
    let mut o = [[0f32; L]; 4];
    for l in 0..L {
        let [m0, m1, m2, m3, m4, m5] = [m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]];
        let (a, b) = (m1 + m2, m1 - m2);
        let (c, d) = (m3 + m4, m3 - m4);
        o[0][l] = m0 + a + c;
        o[1][l] = b + 2.0 * d;
        o[2][l] = a + 4.0 * c;
        o[3][l] = b + 8.0 * d + m5;
    }
    o
}

#[inline(always)]
fn load(s: &[f32], i: usize) -> V {
    s[i..i + L].try_into().unwrap()
}

/// Tiles `tx0..tx0 + nt` of tile row `ty` → `v[point · vs + t · cp + c]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn input_generic(
    padded: &[f32],
    pw: usize,
    cp: usize,
    ty: usize,
    tx0: usize,
    nt: usize,
    v: &mut [f32],
    vs: usize,
) {
    for t in 0..nt {
        let (y0, x0) = (4 * ty, 4 * (tx0 + t));
        for c in (0..cp).step_by(L) {
            // Columns first (Bᵀ over rows of the tile), then rows; arrays built in place, no
            // zero-fill (a memset per tile was 7 % of the pass).
            let cols: [[V; 6]; 6] = std::array::from_fn(|j| {
                bt(std::array::from_fn(|i| {
                    load(padded, ((y0 + i) * pw + x0 + j) * cp + c)
                }))
            });
            for i in 0..6 {
                let r = bt(std::array::from_fn(|j| cols[j][i]));
                for (j, x) in r.iter().enumerate() {
                    let d: &mut V = (&mut v[(i * 6 + j) * vs + t * cp + c..][..L])
                        .try_into()
                        .unwrap();
                    *d = *x;
                }
            }
        }
    }
}

/// Products `m[point · ms + t · cout_pad + c]` → 4×4 outputs of each tile, bias and activation
/// applied, clipped to the map (`rows` output rows in this tile row, `w` columns).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn output_generic(
    wt: &Weights,
    m: &[f32],
    ms: usize,
    nt: usize,
    o: &mut [f32],
    w: usize,
    out_c: usize,
    offset: usize,
    rows: usize,
    tx0: usize,
) {
    for t in 0..nt {
        let x0 = 4 * (tx0 + t);
        let cols_in = 4.min(w - x0);
        for c in (0..wt.cout).step_by(L) {
            let n = L.min(wt.cout - c);
            let cols: [[V; 4]; 6] = std::array::from_fn(|j| {
                at(std::array::from_fn(|i| {
                    load(m, (i * 6 + j) * ms + t * wt.cout_pad + c)
                }))
            });
            let bias = load(&wt.bias, c);
            let slope = load(&wt.slope, c);
            for i in 0..rows {
                let r = at(std::array::from_fn(|j| cols[j][i]));
                for (j, y) in r.iter().enumerate().take(cols_in) {
                    let z: V = std::array::from_fn(|l| {
                        let x = y[l] + bias[l];
                        x.max(x * slope[l])
                    });
                    let px = i * w + x0 + j;
                    let dst = &mut o[px * out_c + offset + c..][..n];
                    if n == L {
                        let dst: &mut V = dst.try_into().unwrap();
                        *dst = z;
                    } else {
                        dst.copy_from_slice(&z[..n]);
                    }
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn input_transform(
    simd: Simd,
    padded: &[f32],
    pw: usize,
    cp: usize,
    ty: usize,
    tx0: usize,
    nt: usize,
    v: &mut [f32],
    vs: usize,
) {
    if nt == 0 {
        return;
    }
    // Last value read: row 4·ty + 5, column 4·(tx0 + nt − 1) + 5, channel cp − 1; last written:
    // point 35, tile nt − 1, channel cp − 1.
    assert!(((4 * ty + 5) * pw + 4 * (tx0 + nt - 1) + 6) * cp <= padded.len());
    assert!(35 * vs + nt * cp <= v.len() && cp.is_multiple_of(L));
    #[cfg(target_arch = "x86_64")]
    if simd != Simd::Portable && Simd::Avx2.supported() {
        // SAFETY: AVX2 + FMA present; the asserts above bound every load and store.
        unsafe { avx2::input(padded.as_ptr(), pw, cp, ty, tx0, nt, v.as_mut_ptr(), vs) };
        return;
    }
    let _ = simd;
    input_generic(padded, pw, cp, ty, tx0, nt, v, vs)
}

#[allow(clippy::too_many_arguments)]
fn output_transform(
    simd: Simd,
    wt: &Weights,
    m: &[f32],
    ms: usize,
    nt: usize,
    o: &mut [f32],
    w: usize,
    out_c: usize,
    offset: usize,
    rows: usize,
    tx0: usize,
) {
    if nt == 0 || rows == 0 {
        return;
    }
    assert!(35 * ms + nt * wt.cout_pad <= m.len() && rows <= 4);
    assert!(4 * (tx0 + nt - 1) < w && offset + wt.cout <= out_c);
    // Last pixel written: row rows − 1, column min(4·(tx0 + nt), w) − 1.
    let last_px = (rows - 1) * w + (4 * (tx0 + nt)).min(w) - 1;
    assert!(last_px * out_c + offset + wt.cout <= o.len());
    #[cfg(target_arch = "x86_64")]
    if simd != Simd::Portable && Simd::Avx2.supported() {
        // SAFETY: AVX2 + FMA present; the asserts above bound every load of `m` and every
        // store to `o` (pixels clipped to `rows` × `w`, channels to `cout`); bias and slope
        // hold `cout_pad` values.
        unsafe {
            avx2::output(
                wt,
                m.as_ptr(),
                ms,
                nt,
                o.as_mut_ptr(),
                w,
                out_c,
                offset,
                rows,
                tx0,
            )
        };
        return;
    }
    let _ = simd;
    output_generic(wt, m, ms, nt, o, w, out_c, offset, rows, tx0)
}

/// The transforms in AVX2 intrinsics: the generic versions compiled for AVX2 left
/// `array::from_fn` calls out of line (6 % of a pass at 640×480).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Weights, L};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn bt(d: [__m256; 6]) -> [__m256; 6] {
        let (f2, f4, f5) = (
            _mm256_set1_ps(2.0),
            _mm256_set1_ps(4.0),
            _mm256_set1_ps(5.0),
        );
        let [d0, d1, d2, d3, d4, d5] = d;
        let d42 = _mm256_sub_ps(d4, d2);
        [
            _mm256_fmadd_ps(f4, d0, _mm256_fnmadd_ps(f5, d2, d4)),
            _mm256_fnmadd_ps(f4, _mm256_add_ps(d1, d2), _mm256_add_ps(d3, d4)),
            _mm256_fmadd_ps(f4, _mm256_sub_ps(d1, d2), _mm256_sub_ps(d4, d3)),
            _mm256_fmadd_ps(f2, _mm256_sub_ps(d3, d1), d42),
            _mm256_fmadd_ps(f2, _mm256_sub_ps(d1, d3), d42),
            _mm256_fmadd_ps(f4, d1, _mm256_fnmadd_ps(f5, d3, d5)),
        ]
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn at(m: [__m256; 6]) -> [__m256; 4] {
        let [m0, m1, m2, m3, m4, m5] = m;
        let (a, b) = (_mm256_add_ps(m1, m2), _mm256_sub_ps(m1, m2));
        let (c, d) = (_mm256_add_ps(m3, m4), _mm256_sub_ps(m3, m4));
        [
            _mm256_add_ps(_mm256_add_ps(m0, a), c),
            _mm256_fmadd_ps(_mm256_set1_ps(2.0), d, b),
            _mm256_fmadd_ps(_mm256_set1_ps(4.0), c, a),
            _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(8.0), d, b), m5),
        ]
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn input(
        padded: *const f32,
        pw: usize,
        cp: usize,
        ty: usize,
        tx0: usize,
        nt: usize,
        v: *mut f32,
        vs: usize,
    ) {
        for t in 0..nt {
            let (y0, x0) = (4 * ty, 4 * (tx0 + t));
            for c in (0..cp).step_by(L) {
                let mut cols = [[_mm256_setzero_ps(); 6]; 6];
                for (j, col) in cols.iter_mut().enumerate() {
                    let mut d = [_mm256_setzero_ps(); 6];
                    for (i, x) in d.iter_mut().enumerate() {
                        *x = _mm256_loadu_ps(padded.add(((y0 + i) * pw + x0 + j) * cp + c));
                    }
                    *col = bt(d);
                }
                for i in 0..6 {
                    let r = bt([
                        cols[0][i], cols[1][i], cols[2][i], cols[3][i], cols[4][i], cols[5][i],
                    ]);
                    for (j, x) in r.iter().enumerate() {
                        _mm256_storeu_ps(v.add((i * 6 + j) * vs + t * cp + c), *x);
                    }
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn output(
        wt: &Weights,
        m: *const f32,
        ms: usize,
        nt: usize,
        o: *mut f32,
        w: usize,
        out_c: usize,
        offset: usize,
        rows: usize,
        tx0: usize,
    ) {
        for t in 0..nt {
            let x0 = 4 * (tx0 + t);
            let cols_in = 4.min(w - x0);
            for c in (0..wt.cout).step_by(L) {
                let n = L.min(wt.cout - c);
                let mut cols = [[_mm256_setzero_ps(); 4]; 6];
                for (j, col) in cols.iter_mut().enumerate() {
                    let mut d = [_mm256_setzero_ps(); 6];
                    for (i, x) in d.iter_mut().enumerate() {
                        *x = _mm256_loadu_ps(m.add((i * 6 + j) * ms + t * wt.cout_pad + c));
                    }
                    *col = at(d);
                }
                let bias = _mm256_loadu_ps(wt.bias.as_ptr().add(c));
                let slope = _mm256_loadu_ps(wt.slope.as_ptr().add(c));
                for i in 0..rows {
                    let r = at([
                        cols[0][i], cols[1][i], cols[2][i], cols[3][i], cols[4][i], cols[5][i],
                    ]);
                    for (j, y) in r.iter().enumerate().take(cols_in) {
                        let x = _mm256_add_ps(*y, bias);
                        let z = _mm256_max_ps(x, _mm256_mul_ps(x, slope));
                        let dst = o.add((i * w + x0 + j) * out_c + offset + c);
                        if n == L {
                            _mm256_storeu_ps(dst, z);
                        } else {
                            let mut tmp = [0f32; L];
                            _mm256_storeu_ps(tmp.as_mut_ptr(), z);
                            std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, n);
                        }
                    }
                }
            }
        }
    }
}
