//! Depthwise convolution (one `k × k` filter per channel) on NCHW `f32` data: the forward
//! pass and both gradients, each plane on its own rayon task.
//!
//! Why hand-written: burn's default weight gradient of a grouped convolution runs one
//! convolution per group (256 for MobileNet's last stage), and its input gradient goes
//! through a grouped transposed convolution. Measured with
//! `cargo run --release -p retinaface-train --example profile_step` (batch 8, 640×640, two
//! threads, AVX2): the 13 depthwise layers took 803 ms of backward per step with burn's
//! operations and 189 ms with these (forward: 80 ms with burn's, 127 ms with these; see
//! docs/training.md).
//!
//! Rows are walked so that the innermost loop runs over consecutive outputs: at stride 1 it
//! is a contiguous `y += w·x` that the compiler vectorises for the instruction set the caller
//! enabled (see [`super::Isa`]); the weight gradient's dot products keep eight partial sums so
//! that they vectorise too.

use super::{filled, isa_fn, written, Geometry, Isa};
use rayon::prelude::*;

/// `y = depthwise(x, w) + bias`: `x` is `[N, C, H, W]`, `w` `[C, 1, k, k]`, `bias` `[C]`.
pub fn forward(g: &Geometry, x: &[f32], w: &[f32], bias: Option<&[f32]>, isa: Isa) -> Vec<f32> {
    let kk = g.kernel * g.kernel;
    let len = g.batch * g.channels * g.out_plane();
    // SAFETY: each plane is filled with its bias before the kernel adds to it.
    unsafe {
        written(len, g.out_plane(), |i, out| {
            let c = i % g.channels;
            let xp = &x[i * g.plane()..(i + 1) * g.plane()];
            let wc = &w[c * kk..(c + 1) * kk];
            let out = filled(out, bias.map_or(0.0, |b| b[c]));
            forward_plane(isa, g, xp, wc, out);
        })
    }
}

isa_fn! {
    /// Adds the plane's convolution to `out` (which holds the bias).
    fn forward_plane(g: &Geometry, x: &[f32], w: &[f32], out: &mut [f32]) {
        let (oh, ow) = g.output();
        let k = g.kernel;
        let phases = Phases::of(g, x);

        for oy in 0..oh {
            let orow = &mut out[oy * ow..(oy + 1) * ow];
            for ky in 0..k {
                let Some(iy) = g.row(oy, ky) else { continue };
                for kx in 0..k {
                    let cols = g.columns(kx);
                    if cols.is_empty() {
                        continue;
                    }
                    let wv = w[ky * k + kx];
                    let xs = phases.source(g, iy, kx, &cols);
                    for (o, &xv) in orow[cols].iter_mut().zip(xs) {
                        *o += wv * xv;
                    }
                }
            }
        }
    }
}

/// A plane split by column phase for a strided convolution, so that the inputs of
/// consecutive outputs are consecutive: phase `r` row `y` holds `x[y][j·s + r]`. At stride 1
/// the plane itself. (Strided gathers measured about three times slower.)
struct Phases<'a> {
    data: std::borrow::Cow<'a, [f32]>,
    /// Row length of a phase.
    len: usize,
}

impl<'a> Phases<'a> {
    /// Inlined into each instruction set's kernel, so the split vectorises there.
    #[inline(always)]
    fn of(g: &Geometry, x: &'a [f32]) -> Self {
        let s = g.stride;
        if s == 1 {
            return Phases {
                data: std::borrow::Cow::Borrowed(x),
                len: g.width,
            };
        }
        let len = g.width.div_ceil(s);
        let mut data = vec![0.0f32; s * g.height * len];
        // Phase by phase, so each destination row is written in order (a chunk of `s` per
        // output, indexed per value, was 3 % of a training step).
        let (full, rest) = (g.width / s, g.width % s);
        for y in 0..g.height {
            let row = &x[y * g.width..(y + 1) * g.width];
            for r in 0..s {
                let dst = &mut data[(r * g.height + y) * len..][..len];
                for (d, chunk) in dst[..full].iter_mut().zip(row.chunks_exact(s)) {
                    *d = chunk[r];
                }
                if r < rest {
                    dst[full] = row[full * s + r];
                }
            }
        }
        Phases {
            data: std::borrow::Cow::Owned(data),
            len,
        }
    }

    /// The inputs that outputs `cols` of input row `iy` see under filter column `kx`.
    fn source(&self, g: &Geometry, iy: usize, kx: usize, cols: &std::ops::Range<usize>) -> &[f32] {
        let (r, first) = phase_index(g, kx, cols.start);
        let row = &self.data[(r * g.height + iy) * self.len..][..self.len];
        &row[first..first + cols.len()]
    }
}

/// Phase and index within the phase row of input column `ox·s + kx − p` (inside the row).
#[inline(always)]
fn phase_index(g: &Geometry, kx: usize, ox: usize) -> (usize, usize) {
    let col = ox * g.stride + kx - g.pad;
    (col % g.stride, col / g.stride)
}

/// The gradient of the input: `dy` is `[N, C, OH, OW]`, the result `[N, C, H, W]`.
pub fn backward_input(g: &Geometry, dy: &[f32], w: &[f32], isa: Isa) -> Vec<f32> {
    let mut dx = vec![0.0f32; g.batch * g.channels * g.plane()];
    if dx.is_empty() {
        return dx;
    }
    let kk = g.kernel * g.kernel;
    dx.par_chunks_mut(g.plane())
        .enumerate()
        .for_each(|(i, dxp)| {
            let c = i % g.channels;
            let dyp = &dy[i * g.out_plane()..(i + 1) * g.out_plane()];
            let wc = &w[c * kk..(c + 1) * kk];
            backward_input_plane(isa, g, dyp, wc, dxp);
        });
    dx
}

isa_fn! {
    fn backward_input_plane(g: &Geometry, dy: &[f32], w: &[f32], dx: &mut [f32]) {
        let (oh, ow) = g.output();
        let (k, s) = (g.kernel, g.stride);
        // Accumulate by phase (contiguous), then interleave into the plane.
        let len = g.width.div_ceil(s);
        let mut acc = if s == 1 {
            Vec::new()
        } else {
            vec![0.0f32; s * g.height * len]
        };
        for oy in 0..oh {
            let dyrow = &dy[oy * ow..(oy + 1) * ow];
            for ky in 0..k {
                let Some(iy) = g.row(oy, ky) else { continue };
                for kx in 0..k {
                    let cols = g.columns(kx);
                    if cols.is_empty() {
                        continue;
                    }
                    let wv = w[ky * k + kx];
                    let (r, first) = phase_index(g, kx, cols.start);
                    let row = if s == 1 {
                        &mut dx[iy * g.width..(iy + 1) * g.width]
                    } else {
                        &mut acc[(r * g.height + iy) * len..][..len]
                    };
                    for (d, &gv) in row[first..first + cols.len()].iter_mut().zip(&dyrow[cols]) {
                        *d += wv * gv;
                    }
                }
            }
        }
        if s > 1 {
            for y in 0..g.height {
                let row = &mut dx[y * g.width..(y + 1) * g.width];
                for (j, chunk) in row.chunks_mut(s).enumerate() {
                    for (r, v) in chunk.iter_mut().enumerate() {
                        *v = acc[(r * g.height + y) * len + j];
                    }
                }
            }
        }
    }
}

/// The gradients of the weights (`[C, 1, k, k]`) and of the bias (`[C]`).
pub fn backward_weight(g: &Geometry, x: &[f32], dy: &[f32], isa: Isa) -> (Vec<f32>, Vec<f32>) {
    let kk = g.kernel * g.kernel;
    let per_channel: Vec<(Vec<f32>, f32)> = (0..g.channels)
        .into_par_iter()
        .map(|c| {
            let mut dw = vec![0.0f32; kk];
            let mut db = 0.0f32;
            for n in 0..g.batch {
                let i = n * g.channels + c;
                let xp = &x[i * g.plane()..(i + 1) * g.plane()];
                let dyp = &dy[i * g.out_plane()..(i + 1) * g.out_plane()];
                db += backward_weight_plane(isa, g, xp, dyp, &mut dw);
            }
            (dw, db)
        })
        .collect();
    let mut dw = Vec::with_capacity(g.channels * kk);
    let mut db = Vec::with_capacity(g.channels);
    for (w, b) in per_channel {
        dw.extend(w);
        db.push(b);
    }
    (dw, db)
}

isa_fn! {
    /// Adds the plane's weight gradient to `dw`; returns its bias gradient.
    fn backward_weight_plane(g: &Geometry, x: &[f32], dy: &[f32], dw: &mut [f32]) -> f32 {
        let (oh, ow) = g.output();
        let k = g.kernel;
        let phases = Phases::of(g, x);
        for oy in 0..oh {
            let dyrow = &dy[oy * ow..(oy + 1) * ow];
            for ky in 0..k {
                let Some(iy) = g.row(oy, ky) else { continue };
                for kx in 0..k {
                    let cols = g.columns(kx);
                    if cols.is_empty() {
                        continue;
                    }
                    let xs = phases.source(g, iy, kx, &cols);
                    dw[ky * k + kx] += dot(&dyrow[cols], xs);
                }
            }
        }
        sum(dy)
    }
}

/// A dot product with eight partial sums (a vector register's worth on AVX2).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let c = a.chunks_exact(8);
    let tail: f32 = c.remainder().iter().sum();
    for x in c {
        for j in 0..8 {
            acc[j] += x[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}
