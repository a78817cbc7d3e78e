//! BatchNorm in training mode fused with the LeakyReLU (or ReLU) after it, and the activation
//! alone, on NCHW `f32` data: forward passes and gradients.
//!
//! Why: composed from burn's element-wise operations, a BatchNorm and its activation read and
//! write the whole feature map a dozen times forward and backward. Measured with
//! `cargo run --release -p retinaface-train --example profile_step` (MobileNet-0.25, batch 8,
//! 640×640, two threads, AVX2): BatchNorm took 845 ms and the activations 1,475 ms of a
//! 4,250 ms step; fused (the statistics two reads of the input, the output one write, the
//! gradient two reads and one write), 350 ms for both together (docs/training.md).
//!
//! The variance is the biased one (divided by the number of values), the one burn's
//! BatchNorm normalises with and keeps as its running variance.

use super::{isa_fn, written, Isa};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// An NCHW shape: batch, channels, and pixels per plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planes {
    pub batch: usize,
    pub channels: usize,
    pub pixels: usize,
}

impl Planes {
    fn count(&self) -> f64 {
        (self.batch * self.pixels) as f64
    }
}

/// The activation after the normalisation: `None`, or LeakyReLU with this negative slope
/// (0 is ReLU).
pub type Slope = Option<f32>;

/// The factor on the negative side: the slope, or 1 without an activation.
fn negative_factor(slope: Slope) -> f32 {
    slope.unwrap_or(1.0)
}

/// `max(z, 0) + s·min(z, 0)`: branch-free, so that it vectorises (with random signs a branch
/// mispredicts half the time; measured 50 ms instead of 8 ms for 13 M values).
#[inline(always)]
fn act(z: f32, s: f32) -> f32 {
    z.max(0.0) + s * z.min(0.0)
}

/// The gradient through the activation at `z` (at 0 the negative side's, as PyTorch).
#[inline(always)]
fn act_grad(z: f32, g: f32, s: f32) -> f32 {
    g * if z > 0.0 { 1.0 } else { s }
}

/// Two sums of `f(i)` over a plane in one pass, each with eight partial sums, added in f64.
#[inline(always)]
fn plane_sums2(n: usize, f: impl Fn(usize) -> (f32, f32)) -> (f64, f64) {
    let (mut a, mut b) = ([0.0f32; 8], [0.0f32; 8]);
    let full = n / 8 * 8;
    let mut i = 0;
    while i < full {
        for j in 0..8 {
            let (u, v) = f(i + j);
            a[j] += u;
            b[j] += v;
        }
        i += 8;
    }
    let (mut ta, mut tb) = (0.0f32, 0.0f32);
    for i in full..n {
        let (u, v) = f(i);
        ta += u;
        tb += v;
    }
    let total =
        |acc: [f32; 8], tail: f32| acc.iter().map(|&v| f64::from(v)).sum::<f64>() + f64::from(tail);
    (total(a, ta), total(b, tb))
}

/// Per-channel mean and biased variance over batch and pixels (two passes, for accuracy).
pub fn channel_stats(p: &Planes, x: &[f32], isa: Isa) -> (Vec<f32>, Vec<f32>) {
    (0..p.channels)
        .into_par_iter()
        .map(|c| channel_moments(isa, p, x, c))
        .unzip()
}

isa_fn! {
    /// Channel `c`'s mean and biased variance.
    fn channel_moments(p: &Planes, x: &[f32], c: usize) -> (f32, f32) {
        // Plain loops over each plane: the closures this was written with were not inlined
        // (4 % of a training step in calls per value).
        let (mut sum, mut sq) = (0.0f64, 0.0f64);
        for n in 0..p.batch {
            let v = &x[(n * p.channels + c) * p.pixels..][..p.pixels];
            let mut acc = [0.0f32; 16];
            let chunks = v.chunks_exact(16);
            let tail: f32 = chunks.remainder().iter().sum();
            for chunk in chunks {
                for (a, &u) in acc.iter_mut().zip(chunk) {
                    *a += u;
                }
            }
            sum += acc.iter().map(|&a| f64::from(a)).sum::<f64>() + f64::from(tail);
        }
        let mean = (sum / p.count()) as f32;
        for n in 0..p.batch {
            let v = &x[(n * p.channels + c) * p.pixels..][..p.pixels];
            let mut acc = [0.0f32; 16];
            let chunks = v.chunks_exact(16);
            let tail: f32 = chunks.remainder().iter().map(|&u| (u - mean) * (u - mean)).sum();
            for chunk in chunks {
                for (a, &u) in acc.iter_mut().zip(chunk) {
                    *a += (u - mean) * (u - mean);
                }
            }
            sq += acc.iter().map(|&a| f64::from(a)).sum::<f64>() + f64::from(tail);
        }
        (mean, (sq / p.count()) as f32)
    }
}

/// Per-channel `scale = γ/√(σ² + ε)` and `shift = β − μ·scale`.
fn affine(gamma: &[f32], beta: &[f32], mean: &[f32], var: &[f32], eps: f64) -> Vec<(f32, f32)> {
    (0..gamma.len())
        .map(|c| {
            let scale = (f64::from(gamma[c]) / (f64::from(var[c]) + eps).sqrt()) as f32;
            (scale, beta[c] - mean[c] * scale)
        })
        .collect()
}

/// `y = act(γ·(x − μ)/√(σ² + ε) + β)` with the given statistics.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    p: &Planes,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
    slope: Slope,
    isa: Isa,
) -> Vec<f32> {
    let ab = affine(gamma, beta, mean, var, eps);
    let s = negative_factor(slope);
    let plane = |i: usize, yp: &mut [MaybeUninit<f32>]| {
        let xp = &x[i * p.pixels..][..yp.len()];
        let (a, b) = ab[i % p.channels];
        normalise_plane(isa, yp, xp, a, b, s);
    };
    // SAFETY: each plane's kernel writes every value of it (as long as the input plane).
    unsafe { written(x.len(), p.pixels, plane) }
}

isa_fn! {
    /// `y = act(a·x + b)` over a plane.
    fn normalise_plane(y: &mut [MaybeUninit<f32>], x: &[f32], a: f32, b: f32, s: f32) {
        for (o, &v) in y.iter_mut().zip(x) {
            o.write(act(a * v + b, s));
        }
    }
}

/// The gradients of the input, γ and β, from the output's gradient `dy` and the statistics
/// the forward pass normalised with.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    p: &Planes,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
    slope: Slope,
    isa: Isa,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let ab = affine(gamma, beta, mean, var, eps);
    let s = negative_factor(slope);
    let inv_std: Vec<f32> = var
        .iter()
        .map(|&v| (1.0 / (f64::from(v) + eps).sqrt()) as f32)
        .collect();
    // Per channel: Σ g and Σ g·x̂, with g the gradient before the activation.
    let (dbeta, dgamma): (Vec<f32>, Vec<f32>) = (0..p.channels)
        .into_par_iter()
        .map(|c| {
            let (a, b) = ab[c];
            grad_sums(isa, p, x, dy, c, (a, b), (mean[c], inv_std[c]), s)
        })
        .unzip();
    let count = p.count() as f32;
    let plane = |i: usize, dxp: &mut [MaybeUninit<f32>]| {
        let c = i % p.channels;
        let (a, b) = ab[c];
        let (m, is) = (mean[c], inv_std[c]);
        // dx = γ/σ · (g − Σg/M − x̂·Σgx̂/M)
        let k = gamma[c] * is;
        let (mg, mgx) = (dbeta[c] / count, dgamma[c] / count);
        let at = i * p.pixels;
        let (xv, gv) = (&x[at..][..dxp.len()], &dy[at..][..dxp.len()]);
        grad_plane(isa, dxp, xv, gv, (a, b), (m, is), s, (k, mg, mgx));
    };
    // SAFETY: each plane's kernel writes every value of it (as long as its inputs).
    let dx = unsafe { written(x.len(), p.pixels, plane) };
    (dx, dgamma, dbeta)
}

isa_fn! {
    /// Channel `c`'s Σ g and Σ g·x̂, with g the gradient before the activation, for the
    /// normalisation `(a, b)` and statistics `(mean, 1/σ)`.
    fn grad_sums(
        p: &Planes,
        x: &[f32],
        dy: &[f32],
        c: usize,
        affine: (f32, f32),
        stats: (f32, f32),
        s: f32,
    ) -> (f32, f32) {
        let ((a, b), (m, is)) = (affine, stats);
        // One pass over x and dy for both sums (two passes were 8 % of a training step).
        let (mut sg, mut sgx) = (0.0f64, 0.0f64);
        for n in 0..p.batch {
            let at = (n * p.channels + c) * p.pixels;
            let (xv, gv) = (&x[at..at + p.pixels], &dy[at..at + p.pixels]);
            let (one, centred) = plane_sums2(p.pixels, |i| {
                let g = act_grad(a * xv[i] + b, gv[i], s);
                (g, g * (xv[i] - m))
            });
            sg += one;
            sgx += centred;
        }
        (sg as f32, (sgx * f64::from(is)) as f32)
    }
}

isa_fn! {
    /// A plane's input gradient: `dx = k·(g − mg − x̂·mgx)`.
    fn grad_plane(
        dx: &mut [MaybeUninit<f32>],
        x: &[f32],
        dy: &[f32],
        affine: (f32, f32),
        stats: (f32, f32),
        s: f32,
        terms: (f32, f32, f32),
    ) {
        let ((a, b), (m, is), (k, mg, mgx)) = (affine, stats, terms);
        for ((d, &v), &gy) in dx.iter_mut().zip(x).zip(dy) {
            let g = act_grad(a * v + b, gy, s);
            d.write(k * (g - mg - (v - m) * is * mgx));
        }
    }
}

/// LeakyReLU alone (0 is ReLU).
pub fn activation(x: &[f32], slope: f32, isa: Isa) -> Vec<f32> {
    const CHUNK: usize = 1 << 14;
    let chunk = |i: usize, yc: &mut [MaybeUninit<f32>]| {
        activate(isa, yc, &x[i * CHUNK..][..yc.len()], slope)
    };
    // SAFETY: the kernel writes every value of each chunk (as long as its input).
    unsafe { written(x.len(), CHUNK, chunk) }
}

/// The gradient of [`activation`] at `x`.
pub fn activation_grad(x: &[f32], dy: &[f32], slope: f32, isa: Isa) -> Vec<f32> {
    const CHUNK: usize = 1 << 14;
    let chunk = |i: usize, dc: &mut [MaybeUninit<f32>]| {
        let at = i * CHUNK;
        activate_grad(isa, dc, &x[at..][..dc.len()], &dy[at..][..dc.len()], slope)
    };
    // SAFETY: the kernel writes every value of each chunk (as long as its inputs).
    unsafe { written(x.len(), CHUNK, chunk) }
}

isa_fn! {
    fn activate(y: &mut [MaybeUninit<f32>], x: &[f32], slope: f32) {
        for (o, &v) in y.iter_mut().zip(x) {
            o.write(act(v, slope));
        }
    }
}

isa_fn! {
    fn activate_grad(dx: &mut [MaybeUninit<f32>], x: &[f32], dy: &[f32], slope: f32) {
        for ((d, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
            d.write(act_grad(v, g, slope));
        }
    }
}
