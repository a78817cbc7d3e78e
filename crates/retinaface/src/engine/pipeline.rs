//! A dense stem followed by (depthwise 3×3, pointwise 1×1) pairs, run row by row through
//! rings of three rows per intermediate map: a row of each layer is made when the next layer
//! first needs it, and no intermediate map is ever stored whole.
//!
//! MobileNet's first stage (stride 2 to 8) is where the maps are large: at 1920×1080 the stem
//! and the first pair's outputs were 17 and 33 MB, written and read back once each per pass
//! from DRAM (the depthwise layers reading them were 20 % of the time, load-bound), plus a
//! 25 MB zero-padded copy of the input for the stem. Rings keep every intermediate row in
//! L1/L2. The output rows are cut into bands, one task each; a band recomputes the few rows
//! of halo above it at every level (under 1 % extra work at two bands per thread).

use super::conv::Conv2d;
use super::kernel::strip;
use super::simd::Simd;
use super::{depthwise, Feature};
use rayon::prelude::*;
use std::cell::RefCell;

/// Most pairs in one pipeline.
const MAX_LEVELS: usize = 16;

/// The rings of one band (kept in the workspace, reused across passes).
#[derive(Debug, Default)]
pub struct RowRings {
    rings: Vec<Ring>,
}

impl RowRings {
    /// Bytes held by the rings.
    pub fn bytes(&self) -> usize {
        self.rings.iter().map(|r| r.data.capacity() * 4).sum()
    }
}

#[derive(Debug, Default)]
struct Ring {
    /// Three rows of `w × c`; row `y` lives in slot `y % 3`.
    data: Vec<f32>,
    h: usize,
    w: usize,
    c: usize,
    /// The next row to make, once started.
    next: Option<usize>,
}

impl Ring {
    fn setup(&mut self, (h, w, c): (usize, usize, usize)) {
        (self.h, self.w, self.c, self.next) = (h, w, c, None);
        if self.data.len() != 3 * w * c {
            self.data.resize(3 * w * c, 0.0);
        }
    }

    fn slot(&self, y: usize) -> usize {
        (y % 3) * self.w * self.c
    }
}

thread_local! {
    /// Per thread: the stem's zero-padded input rows, and one depthwise output row.
    static TMP: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `pairs` alternates depthwise and pointwise layers; `out` gets the last pointwise output.
/// Without a stem the first depthwise layer reads `input` itself.
pub fn stem_then_pairs(
    stem: Option<&Conv2d>,
    pairs: &[Conv2d],
    input: &Feature,
    out: &mut Feature,
    bands: &mut Vec<RowRings>,
) {
    run(Simd::active(), stem, pairs, input, out, bands)
}

pub(crate) fn run(
    simd: Simd,
    stem: Option<&Conv2d>,
    pairs: &[Conv2d],
    input: &Feature,
    out: &mut Feature,
    bands: &mut Vec<RowRings>,
) {
    let n = pairs.len() / 2;
    assert!(n >= 1 && pairs.len() == 2 * n && n <= MAX_LEVELS);
    for p in pairs.chunks_exact(2) {
        assert!(p[0].is_depthwise() && p[1].is_pointwise() && p[1].cin == p[0].cout);
    }
    // dims[l]: map `l` (0: the stem's output or the input, l + 1: pair l's output).
    let mut dims = [(0usize, 0usize, 0usize); MAX_LEVELS + 1];
    dims[0] = match stem {
        Some(st) => {
            assert_eq!(input.c, st.cin);
            let (h0, w0) = st.out_hw(input.h, input.w);
            (h0, w0, st.cout)
        }
        None => (input.h, input.w, input.c),
    };
    assert!(input.data.len() >= input.h * input.w * input.c);
    for l in 0..n {
        assert_eq!(pairs[2 * l].cin, dims[l].2);
        let (h, w) = pairs[2 * l].out_hw(dims[l].0, dims[l].1);
        dims[l + 1] = (h, w, pairs[2 * l + 1].cout);
    }
    let (oh, ow, oc) = dims[n];
    out.reshape(oh, ow, oc);
    if oh == 0 || ow == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let nb = if threads > 1 && oh >= 8 {
        2 * threads
    } else {
        1
    };
    if bands.len() < nb {
        bands.resize_with(nb, RowRings::default);
    }
    let rpb = oh.div_ceil(nb);
    let job = |(b, (o, rings)): (usize, (&mut [f32], &mut RowRings))| {
        if rings.rings.len() < n {
            rings.rings.resize_with(n, Ring::default);
        }
        for (l, ring) in rings.rings.iter_mut().take(n).enumerate() {
            ring.setup(dims[l]);
        }
        let mut ctx = Ctx {
            simd,
            stem,
            pairs,
            input,
            rings: &mut rings.rings[..n],
        };
        for (i, orow) in o.chunks_exact_mut(ow * oc).enumerate() {
            ctx.pair_row(n - 1, b * rpb + i, orow);
        }
    };
    if nb > 1 {
        out.data
            .par_chunks_mut(rpb * ow * oc)
            .zip(bands.par_iter_mut())
            .enumerate()
            .for_each(job);
    } else {
        out.data
            .chunks_mut(rpb * ow * oc)
            .zip(bands.iter_mut())
            .enumerate()
            .for_each(job);
    }
}

struct Ctx<'a> {
    simd: Simd,
    stem: Option<&'a Conv2d>,
    pairs: &'a [Conv2d],
    input: &'a Feature,
    rings: &'a mut [Ring],
}

impl Ctx<'_> {
    /// Make rows `lo..=hi` of map `l` (clamped to the map) present in its ring.
    fn ensure(&mut self, l: usize, lo: isize, hi: isize) {
        if l == 0 && self.stem.is_none() {
            return; // map 0 is the input, all there
        }
        let h = self.rings[l].h as isize;
        let (lo, hi) = (lo.max(0), hi.min(h - 1));
        if lo > hi {
            return;
        }
        let (lo, hi) = (lo as usize, hi as usize);
        // Rows only ever move forward: a consumer needs at most three consecutive rows.
        let mut next = match self.rings[l].next {
            Some(q) if q >= lo => q,
            _ => lo,
        };
        while next <= hi {
            // Take the ring's buffer out while the lower levels fill theirs (no allocation).
            let mut data = std::mem::take(&mut self.rings[l].data);
            let slot = self.rings[l].slot(next);
            let len = self.rings[l].w * self.rings[l].c;
            let dst = &mut data[slot..slot + len];
            if l == 0 {
                self.stem_row(next, dst);
            } else {
                self.pair_row(l - 1, next, dst);
            }
            self.rings[l].data = data;
            next += 1;
        }
        self.rings[l].next = Some(next);
    }

    /// Row `q` of pair `p`'s output (map `p + 1`) into `orow`, from map `p`.
    fn pair_row(&mut self, p: usize, q: usize, orow: &mut [f32]) {
        let (dw, pw) = (&self.pairs[2 * p], &self.pairs[2 * p + 1]);
        let s = dw.stride as isize;
        self.ensure(p, q as isize * s - 1, q as isize * s + 1);
        let (dwp, bias, slope) = dw.depthwise_parts();
        // The source map: the input itself, or a ring.
        let direct = p == 0 && self.stem.is_none();
        let ring = &self.rings[p];
        let (src, (h, w, c)): (&[f32], _) = if direct {
            let i = self.input;
            (&i.data, (i.h, i.w, i.c))
        } else {
            (&ring.data, (ring.h, ring.w, ring.c))
        };
        let locate = |y: usize| if direct { y * w * c } else { ring.slot(y) };
        let ow = (w + 2 - 3) / dw.stride + 1;
        TMP.with(|tmp| {
            let tmp = &mut tmp.borrow_mut().1;
            if tmp.len() < ow * c {
                tmp.resize(ow * c, 0.0);
            }
            let tmp = &mut tmp[..ow * c];
            depthwise::row_with(
                self.simd,
                src,
                (h, w, c),
                locate,
                dwp,
                bias,
                slope,
                dw.stride,
                q,
                tmp,
                c,
                0,
            );
            strip(
                self.simd,
                pw.direct_packed(),
                tmp,
                0,
                c,
                &[0],
                orow,
                0,
                pw.cout,
                ow,
            );
        });
    }

    /// Row `q` of the stem's output, from up to `k` zero-padded input rows.
    fn stem_row(&mut self, q: usize, orow: &mut [f32]) {
        let Some(st) = self.stem else {
            unreachable!("map 0 is the input")
        };
        let (k, s, pad) = (st.k, st.stride, st.pad);
        let inp = self.input;
        let (h, w, c) = (inp.h, inp.w, inp.c);
        let pw = w + 2 * pad;
        let ow = (pw - k) / s + 1;
        TMP.with(|tmp| {
            let buf = &mut tmp.borrow_mut().0;
            if buf.len() < k * pw * c {
                buf.resize(k * pw * c, 0.0);
            }
            let buf = &mut buf[..k * pw * c];
            for (ky, row) in buf.chunks_exact_mut(pw * c).enumerate() {
                let iy = (q * s + ky) as isize - pad as isize;
                if iy < 0 || iy >= h as isize {
                    row.fill(0.0);
                } else {
                    row[..pad * c].fill(0.0);
                    row[pad * c..(pad + w) * c]
                        .copy_from_slice(&inp.data[iy as usize * w * c..][..w * c]);
                    row[(pad + w) * c..].fill(0.0);
                }
            }
            let mut offs = [0usize; 49];
            for ky in 0..k {
                for kx in 0..k {
                    offs[ky * k + kx] = (ky * pw + kx) * c;
                }
            }
            strip(
                self.simd,
                st.direct_packed(),
                buf,
                0,
                s * c,
                &offs[..k * k],
                orow,
                0,
                st.cout,
                ow,
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_util::pseudo;
    use crate::engine::Activation;

    /// The pipeline equals the layers run one by one, on every path, in one band and many.
    #[test]
    fn rows_through_rings_equal_whole_maps() {
        let act = Activation::Leaky(0.1);
        let stem = Conv2d::from_oihw(
            &pseudo(8 * 3 * 9, 1),
            &pseudo(8, 2),
            (8, 3, 3),
            2,
            1,
            false,
            act,
        );
        // (channels in, channels out, depthwise stride)
        let spec = [(8, 16, 1), (16, 12, 2), (12, 24, 1), (24, 8, 2)];
        let mut pairs = Vec::new();
        for (i, &(ci, co, s)) in spec.iter().enumerate() {
            let seed = 10 + 4 * i as u32;
            pairs.push(Conv2d::from_oihw(
                &pseudo(ci * 9, seed),
                &pseudo(ci, seed + 1),
                (ci, ci, 3),
                s,
                1,
                true,
                act,
            ));
            pairs.push(Conv2d::from_oihw(
                &pseudo(co * ci, seed + 2),
                &pseudo(co, seed + 3),
                (co, ci, 1),
                1,
                0,
                false,
                act,
            ));
        }
        for &(h, w) in &[(37, 29), (64, 48), (5, 3)] {
            let input = Feature {
                h,
                w,
                c: 3,
                data: pseudo(h * w * 3, h as u32),
            };
            let mut want = Feature::default();
            stem.forward(&input, &mut want, &mut Vec::new());
            for p in &pairs {
                let mut next = Feature::default();
                p.forward(&want, &mut next, &mut Vec::new());
                want = next;
            }
            let mut mid = Feature::default();
            stem.forward(&input, &mut mid, &mut Vec::new());
            for simd in Simd::ALL.into_iter().filter(|s| s.supported()) {
                // Without a stem, from the stem's output.
                let mut got = Feature::default();
                run(simd, None, &pairs, &mid, &mut got, &mut Vec::new());
                assert_eq!(got.data.len(), want.data.len());
                for (a, b) in got.data.iter().zip(&want.data) {
                    assert!(
                        (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                        "{simd:?} no stem: {a} vs {b}"
                    );
                }
                for threads in [1, 3] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let mut got = Feature::default();
                    let mut bands = Vec::new();
                    pool.install(|| run(simd, Some(&stem), &pairs, &input, &mut got, &mut bands));
                    assert_eq!((got.h, got.w, got.c), (want.h, want.w, want.c));
                    for (a, b) in got.data.iter().zip(&want.data) {
                        assert!(
                            (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                            "{simd:?} {h}×{w} ×{threads}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}
