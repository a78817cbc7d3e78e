//! The matrix products of dense convolutions on NCHW data, where one side is a layer's small
//! weight matrix and the other a feature map of thousands of pixels: [`forward`]
//! (`y = w · x + bias` per image; also the input's gradient `wᵀ · dy`) and [`weight_grad`]
//! (`Σ_images dy · xᵀ`, a reduction over pixels, and the bias gradient).
//!
//! Both run the inference engine's register-blocked micro-kernel
//! ([`retinaface::engine::strip`], AVX-512 / AVX2 intrinsics, portable elsewhere) on blocks
//! of 256 pixels: a block of the wide side is packed into the kernel's panels (it stays in
//! cache), and every row of the weights passes over it. Why: burn's `matmul` (the `gemm`
//! crate) runs these short, wide products far below the machine's FMA rate for some of
//! RetinaFace's shapes — the input gradient of a 3×3 layer (`[576, 64] · [64, 6400]`) and the
//! 1×1 layers of few channels over many pixels (`[16, 8] · [8, 102400]`). Measured with
//! `cargo run --release -p retinaface-train --example bench_product` (docs/training.md).

use super::Isa;
use rayon::prelude::*;
use retinaface::engine::{strip, Packed};

/// Pixels per block: `k × PIXEL_BLOCK` floats of the wide side, packed, stay in L2 while
/// every row of the weights passes over them (k ≤ 576 in RetinaFace: 590 KB).
const PIXEL_BLOCK: usize = 256;

/// `y[n][i][p] = bias[i] + Σ_j a[i][j] · x[n][j][p]` for `n < batch`: `a` is `[m, k]`, `x`
/// `[batch, k, pixels]`, the result `[batch, m, pixels]`. One rayon task per image.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    a: &[f32],
    m: usize,
    k: usize,
    x: &[f32],
    batch: usize,
    pixels: usize,
    bias: Option<&[f32]>,
    isa: Isa,
) -> Vec<f32> {
    assert_eq!(a.len(), m * k, "weights are [m, k]");
    assert_eq!(x.len(), batch * k * pixels, "input is [batch, k, pixels]");
    if let Some(b) = bias {
        assert_eq!(b.len(), m, "one bias per row");
    }
    let mut y = vec![0.0f32; batch * m * pixels];
    if y.is_empty() {
        return y;
    }
    if k == 0 {
        if let Some(b) = bias {
            for plane in y.chunks_mut(m * pixels) {
                for (row, &v) in plane.chunks_mut(pixels).zip(b) {
                    row.fill(v);
                }
            }
        }
        return y;
    }
    let zeros = vec![0.0f32; PIXEL_BLOCK];
    let ones = vec![1.0f32; PIXEL_BLOCK];
    y.par_chunks_mut(m * pixels)
        .zip(x.par_chunks(k * pixels))
        .for_each(|(ys, xs)| {
            for p0 in (0..pixels).step_by(PIXEL_BLOCK) {
                let width = PIXEL_BLOCK.min(pixels - p0);
                // The block's pixels are the kernel's "output channels", the rows of `a` its
                // "pixels": c[i·pixels + p0 + q] = Σ_j a[i·k + j] · x[j][p0 + q].
                let panel = Packed::new(
                    1,
                    k,
                    width,
                    |_, j, q| xs[j * pixels + p0 + q],
                    &zeros[..width],
                    &ones[..width],
                );
                strip(isa, &panel, a, 0, k, &[0], ys, p0, pixels, m);
                if let Some(b) = bias {
                    for (i, &v) in b.iter().enumerate() {
                        for y in &mut ys[i * pixels + p0..][..width] {
                            *y += v;
                        }
                    }
                }
            }
        });
    y
}

/// `g[i][j] = Σ_n Σ_p dy[n][i][p] · x[n][j][p]`: `dy` is `[batch, m, pixels]`, `x`
/// `[batch, k, pixels]`, the result `[m, k]` (a weight gradient), with
/// `gb[i] = Σ_n Σ_p dy[n][i][p]` (the bias gradient). One rayon task per image, their sums
/// added at the end.
pub fn weight_grad(
    dy: &[f32],
    m: usize,
    x: &[f32],
    k: usize,
    batch: usize,
    pixels: usize,
    isa: Isa,
) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(
        dy.len(),
        batch * m * pixels,
        "output gradient is [batch, m, pixels]"
    );
    assert_eq!(x.len(), batch * k * pixels, "input is [batch, k, pixels]");
    let zero = || (vec![0.0f32; m * k], vec![0.0f32; m]);
    if m == 0 || k == 0 || pixels == 0 || batch == 0 {
        let (g, mut gb) = zero();
        for (i, s) in gb.iter_mut().enumerate() {
            *s = (0..batch)
                .map(|n| dy[(n * m + i) * pixels..][..pixels].iter().sum::<f32>())
                .sum();
        }
        return (g, gb);
    }
    let zeros = vec![0.0f32; k];
    let ones = vec![1.0f32; k];
    dy.par_chunks(m * pixels)
        .zip(x.par_chunks(k * pixels))
        .map(|(d, xs)| {
            let (mut g, mut gb) = zero();
            let mut block = vec![0.0f32; m * k];
            for p0 in (0..pixels).step_by(PIXEL_BLOCK) {
                let width = PIXEL_BLOCK.min(pixels - p0);
                // xᵀ's block as the kernel's weights (depth: the block's pixels; outputs: the
                // k rows of x), dy's rows as its "pixels":
                // block[i·k + j] = Σ_q dy[i][p0 + q] · x[j][p0 + q].
                let panel = Packed::new(
                    1,
                    width,
                    k,
                    |_, q, j| xs[j * pixels + p0 + q],
                    &zeros,
                    &ones,
                );
                strip(isa, &panel, d, p0, pixels, &[0], &mut block, 0, k, m);
                for (s, v) in g.iter_mut().zip(&block) {
                    *s += v;
                }
                for (i, s) in gb.iter_mut().enumerate() {
                    *s += d[i * pixels + p0..][..width].iter().sum::<f32>();
                }
            }
            (g, gb)
        })
        .reduce(zero, |(mut g, mut gb), (h, hb)| {
            for (s, v) in g.iter_mut().zip(h) {
                *s += v;
            }
            for (s, v) in gb.iter_mut().zip(hb) {
                *s += v;
            }
            (g, gb)
        })
}
