//! Patches of a dense convolution's input (im2col) and their adjoint (col2im), on NCHW `f32`
//! data, so that a `k × k` convolution runs as one matrix product per image and its backward
//! pass as two, plus the adjoint for the input's gradient.
//!
//! Why: burn's CPU convolution backward (a transposed convolution for the input, a convolution
//! with the output's gradient as filter for the weights) took 502 ms of a 1.8 s step for
//! MobileNet-0.25's seventeen dense 3×3 layers (batch 8, 640×640, two threads; measured with
//! `examples/profile_step.rs`); as patches times weights, 319 ms (docs/training.md). Stride-1
//! layers now run on [`super::dense`] instead; the patches serve the strided ones (the stem).

use super::{isa_fn, Geometry, Isa};
use rayon::prelude::*;

/// `[N, C, H, W]` → `[N, C·k·k, OH·OW]`: row `(c·k + ky)·k + kx` holds, for every output
/// pixel, the input under filter tap `(ky, kx)`, 0 in the padding.
pub fn unfold(g: &Geometry, x: &[f32], isa: Isa) -> Vec<f32> {
    let taps = g.kernel * g.kernel;
    let out = g.out_plane();
    let mut cols = vec![0.0f32; g.batch * g.channels * taps * out];
    if cols.is_empty() {
        return cols;
    }
    // One chunk per (image, channel): its k·k rows.
    cols.par_chunks_mut(taps * out)
        .enumerate()
        .for_each(|(i, rows)| {
            let plane = &x[i * g.plane()..(i + 1) * g.plane()];
            unfold_channel(isa, g, plane, rows);
        });
    cols
}

isa_fn! {
    fn unfold_channel(g: &Geometry, x: &[f32], rows: &mut [f32]) {
        let (oh, ow) = g.output();
        let (k, s, p) = (g.kernel, g.stride, g.pad);
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut rows[(ky * k + kx) * oh * ow..][..oh * ow];
                let cols = g.columns(kx);
                for oy in 0..oh {
                    let Some(iy) = g.row(oy, ky) else { continue };
                    let xrow = &x[iy * g.width..(iy + 1) * g.width];
                    let orow = &mut row[oy * ow..(oy + 1) * ow];
                    if s == 1 {
                        let first = cols.start + kx - p;
                        orow[cols.clone()].copy_from_slice(&xrow[first..first + cols.len()]);
                    } else {
                        for ox in cols.clone() {
                            orow[ox] = xrow[ox * s + kx - p];
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`unfold`]: `[N, C·k·k, OH·OW]` → `[N, C, H, W]`, each input pixel the sum
/// of the patch entries it fed.
pub fn fold(g: &Geometry, cols: &[f32], isa: Isa) -> Vec<f32> {
    let taps = g.kernel * g.kernel;
    let out = g.out_plane();
    let mut x = vec![0.0f32; g.batch * g.channels * g.plane()];
    if x.is_empty() {
        return x;
    }
    x.par_chunks_mut(g.plane())
        .enumerate()
        .for_each(|(i, plane)| {
            let rows = &cols[i * taps * out..(i + 1) * taps * out];
            fold_channel(isa, g, rows, plane);
        });
    x
}

isa_fn! {
    fn fold_channel(g: &Geometry, rows: &[f32], x: &mut [f32]) {
        let (oh, ow) = g.output();
        let (k, s, p) = (g.kernel, g.stride, g.pad);
        for ky in 0..k {
            for kx in 0..k {
                let row = &rows[(ky * k + kx) * oh * ow..][..oh * ow];
                let cols = g.columns(kx);
                for oy in 0..oh {
                    let Some(iy) = g.row(oy, ky) else { continue };
                    let xrow = &mut x[iy * g.width..(iy + 1) * g.width];
                    let grow = &row[oy * ow..(oy + 1) * ow];
                    if s == 1 {
                        let first = cols.start + kx - p;
                        let len = cols.len();
                        for (d, &v) in xrow[first..first + len].iter_mut().zip(&grow[cols.clone()]) {
                            *d += v;
                        }
                    } else {
                        for ox in cols.clone() {
                            xrow[ox * s + kx - p] += grow[ox];
                        }
                    }
                }
            }
        }
    }
}
