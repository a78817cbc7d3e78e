//! 1×1 convolutions (stride 1, no padding) for training, on NCHW `f32` data: per image one
//! matrix product forward (`[Cout, Cin] · [Cin, H·W]`), and two backward, on the `gemm`
//! crate directly, writing into the result's memory.
//!
//! Why: as burn `matmul`s with the weights broadcast over the batch, the products were the
//! same but burn copied operands and results and zero-filled buffers around them (about 5 %
//! of a training step in `memmove` and `memset` under `perf`, MobileNet-0.25, batch 8); the
//! figures after this change are in docs/training.md.

use super::dense::Gradients;
use super::{filled, written};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `dst (m × n) = lhs (m × k) · rhs (k × n)` on one thread, each given by its row and
/// column strides (`dst`'s columns adjacent); with `accumulate`, added to what `dst` holds.
///
/// # Safety
/// Every element the strides address must lie inside its buffer, and `dst` must not alias
/// `lhs` or `rhs`; `dst` must hold initialised values when `accumulate` is set.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    (lhs, lhs_rs, lhs_cs): (*const f32, usize, usize),
    (rhs, rhs_rs, rhs_cs): (*const f32, usize, usize),
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// The output `[N, Cout, P]` of input `x` `[N, Cin, P]`, weights `[Cout, Cin]` and bias.
pub fn forward(x: &[f32], weight: &[f32], bias: &[f32], (cin, pixels): (usize, usize)) -> Vec<f32> {
    let cout = bias.len();
    let batch = x.len() / (cin * pixels).max(1);
    let image = cout * pixels;
    if batch * image == 0 {
        return Vec::new();
    }
    let image_output = |i: usize, yi: &mut [MaybeUninit<f32>]| {
        let xi = &x[i * cin * pixels..(i + 1) * cin * pixels];
        // The bias first, the product added to it: one write of the output before it.
        for (row, &b) in yi.chunks_exact_mut(pixels).zip(bias) {
            filled(row, b);
        }
        // SAFETY: every value was just written, and MaybeUninit<f32> has f32's layout.
        let yi = unsafe { &mut *(yi as *mut [MaybeUninit<f32>] as *mut [f32]) };
        // SAFETY: yi is cout × pixels (row stride pixels); weight is cout × cin (row
        // stride cin); xi is cin × pixels (row stride pixels); yi is a separate buffer.
        unsafe {
            product(
                (cout, pixels, cin),
                yi.as_mut_ptr(),
                pixels,
                true,
                (weight.as_ptr(), cin, 1),
                (xi.as_ptr(), pixels, 1),
            );
        }
    };
    // SAFETY: every row of every image is filled with its bias before the product adds to it.
    unsafe { written(batch * image, image, image_output) }
}

/// The gradients of the input (`[N, Cin, P]`, if `input`) and of the weights (`[Cout, Cin]`)
/// and bias (if `params`) from the output's, `dy` `[N, Cout, P]`.
pub fn backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    (cin, pixels): (usize, usize),
    input: bool,
    params: bool,
) -> Gradients {
    let cout = weight.len() / cin.max(1);
    let batch = x.len() / (cin * pixels).max(1);
    let dx = input.then(|| {
        let mut dx: Vec<f32> = Vec::with_capacity(batch * cin * pixels);
        let spare = &mut dx.spare_capacity_mut()[..batch * cin * pixels];
        spare
            .par_chunks_mut(cin * pixels)
            .zip(dy.par_chunks(cout * pixels))
            .for_each(|(dxi, dyi)| {
                // SAFETY: dxi is cin × pixels (row stride pixels), written whole without
                // being read; weightᵀ is cin × cout (rows 1 apart, columns cin apart); dyi
                // is cout × pixels (row stride pixels).
                unsafe {
                    product(
                        (cin, pixels, cout),
                        dxi.as_mut_ptr().cast::<f32>(),
                        pixels,
                        false,
                        (weight.as_ptr(), 1, cin),
                        (dyi.as_ptr(), pixels, 1),
                    );
                }
            });
        // SAFETY: the products above wrote every one of these values.
        unsafe { dx.set_len(batch * cin * pixels) };
        dx
    });
    let params = params.then(|| {
        let sums = dy
            .par_chunks(cout * pixels)
            .zip(x.par_chunks(cin * pixels))
            .map(|(dyi, xi)| {
                let mut dw = vec![0.0f32; cout * cin + cout];
                let (w, b) = dw.split_at_mut(cout * cin);
                // SAFETY: w is cout × cin (row stride cin); dyi is cout × pixels (row stride
                // pixels); xiᵀ is pixels × cin (rows 1 apart, columns pixels apart).
                unsafe {
                    product(
                        (cout, cin, pixels),
                        w.as_mut_ptr(),
                        cin,
                        true,
                        (dyi.as_ptr(), pixels, 1),
                        (xi.as_ptr(), 1, pixels),
                    );
                }
                for (s, row) in b.iter_mut().zip(dyi.chunks_exact(pixels)) {
                    *s = sum(row);
                }
                dw
            })
            .reduce(
                || vec![0.0f32; cout * cin + cout],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(s, v)| *s += v);
                    a
                },
            );
        let bias = sums[cout * cin..].to_vec();
        let mut w = sums;
        w.truncate(cout * cin);
        (w, bias)
    });
    (dx, params)
}

/// A sum with sixteen partial sums (a plain `iter().sum()` of `f32` runs one addition at a
/// time, its latency apart).
fn sum(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = v.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (a, &u) in acc.iter_mut().zip(chunk) {
            *a += u;
        }
    }
    acc.iter().sum::<f32>() + tail
}
