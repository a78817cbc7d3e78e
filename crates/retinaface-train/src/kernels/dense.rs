//! Dense convolutions for training, on NCHW `f32` data (stride-1 1×1 ones go to
//! [`super::pointwise`]). For 2×2 to 7×7 filters the forward pass and the input's gradient
//! run the inference engine's convolution on channels-last copies of each image (the forward
//! pass its direct kernel, the input's gradient Winograd where it applies: 3×3 over 8
//! channels or more), and the weights' gradient is one matrix product per filter row over a
//! padded channels-last copy of the input, so no patches (im2col, 9× the input) are written.
//!
//! Why: as patches times weights, MobileNet-0.25's seventeen dense 3×3 layers took 168 ms
//! forward and 254 ms backward of a 1.15 s step (batch 8, 640×640, 2 threads, AVX-512;
//! `examples/profile_step.rs`), against PyTorch's 61 and 112 ms; the figures after this
//! change are in docs/training.md.
//!
//! The layouts: an image `[C, H, W]` becomes `[H + 2p, W + 2p, C]` with its padding `p`
//! written as zeros (the "virtual" grid, `vw = W + 2p` pixels a row). The output gradient is
//! laid on the same row width, `[OH, vw, Cout]`, zero beyond column `OW`, so that for filter
//! tap `(ky, kx)` output pixel `q` of that grid reads the padded input at pixel
//! `q + ky·vw + kx`: every tap is a constant offset, and a filter row's three taps are
//! adjacent columns of one matrix.
//!
//! Stride `s` > 1, for a layer whose input needs no gradient (the stems: 3 channels at full
//! resolution): the forward pass is the engine's strided direct kernel, and the weights'
//! gradient is patches times the output's gradient, in chunks of output rows whose patches
//! (`k²·C` values a pixel, from the padded channels-last copy, `k·C` adjacent values a
//! filter row) fill about 1 MB, the L2 cache of a core, never the whole image's. Measured as each
//! layer alone (`profile_step`, 2 threads, 640×640), forward + backward: the 50-layer
//! ResNet's 7×7 stem went from 50–57 + 147–149 ms to 31–34 + 46–52 ms at batch 2 (its
//! 147-value patches were 60 MB an image), its step from 3.69–3.77 s to 3.59–3.65 s;
//! MobileNet-0.25's 3×3 stem from 26–30 + 9–10 ms to 13–19 + 19–23 ms at batch 8, no
//! change beyond the runs' spread. Two alternatives measured slower: the stride-1
//! tap-offset products on the input's `s²` phases are 8 × 6 by 100,000 products for a
//! MobileNet stem, which gemm runs at a fraction of its speed (36 ms backward); and the
//! input's gradient as the stride-1 one over the output's gradient spread `s` apart made
//! the ResNet's step 4–5 % slower than patches for its strided 3×3s, which stay on patches.

use super::{isa_fn, pointwise, Geometry, Isa};
use rayon::prelude::*;
use retinaface::engine::{Activation, Conv2d, Feature};

/// Pixels × channels of a tile of the transpose back to channel planes: both sides stay in L1.
const TILE: usize = 16;

/// Whether this module computes the convolution: a filter of 1×1 (as matrix products,
/// [`super::pointwise`]) to 7×7 (the engine's limit) at stride 1, or of 2×2 to 7×7 at a
/// stride up to its size when the input needs no gradient (`input_grad` false), with
/// padding below its size, and a non-empty input and output.
pub fn applies(g: &Geometry, cout: usize, input_grad: bool) -> bool {
    let (oh, ow) = g.output();
    let stride = g.stride == 1 || (!input_grad && g.kernel > 1 && g.stride <= g.kernel);
    stride
        && (1..=7).contains(&g.kernel)
        && g.pad < g.kernel
        && g.batch * g.channels * cout * oh * ow > 0
}

/// `[c, h, w]` (channel planes) → channels-last rows of `dst_w` pixels: pixel `(y, x)` lands
/// at row `y + top`, column `x + left`; other entries are left as they are.
fn to_last(
    src: &[f32],
    (c, h, w): (usize, usize, usize),
    dst: &mut [f32],
    dst_w: usize,
    top: usize,
    left: usize,
) {
    for y in 0..h {
        let row = &mut dst[((y + top) * dst_w + left) * c..][..w * c];
        to_last_row(Isa::active(), &src[y * w..], h * w, c, row);
    }
}

isa_fn! {
    /// One row: `row[x·c + ch] = src[ch·plane + x]`, in blocks of 8 pixels × 8 channels
    /// transposed in registers (one strided store per value took 80 % of the time).
    fn to_last_row(src: &[f32], plane: usize, c: usize, row: &mut [f32]) {
        let w = row.len() / c;
        let (wb, cb) = (w / 8 * 8, c / 8 * 8);
        for x0 in (0..wb).step_by(8) {
            for c0 in (0..cb).step_by(8) {
                let mut tile = [[0.0f32; 8]; 8];
                for (j, t) in tile.iter_mut().enumerate() {
                    t.copy_from_slice(&src[(c0 + j) * plane + x0..][..8]);
                }
                for i in 0..8 {
                    let out = &mut row[(x0 + i) * c + c0..][..8];
                    for j in 0..8 {
                        out[j] = tile[j][i];
                    }
                }
            }
            for ch in cb..c {
                for i in 0..8 {
                    row[(x0 + i) * c + ch] = src[ch * plane + x0 + i];
                }
            }
        }
        for x in wb..w {
            for ch in 0..c {
                row[x * c + ch] = src[ch * plane + x];
            }
        }
    }
}

/// Channels-last rows of `src_w` pixels → `[c, h, w]`, reading the first `w` of each row.
fn to_first(src: &[f32], (c, h, w): (usize, usize, usize), src_w: usize, dst: &mut [f32]) {
    for y in 0..h {
        let row = &src[y * src_w * c..][..w * c];
        for c0 in (0..c).step_by(TILE) {
            for x0 in (0..w).step_by(TILE) {
                let x1 = (x0 + TILE).min(w);
                for ch in c0..(c0 + TILE).min(c) {
                    let plane = &mut dst[ch * h * w + y * w..][..w];
                    for x in x0..x1 {
                        plane[x] = row[x * c + ch];
                    }
                }
            }
        }
    }
}

/// The convolution's output `[N, Cout, OH, OW]` for input `x` `[N, C, H, W]`, weights
/// `[Cout, C, k, k]` and bias `[Cout]`. Requires [`applies`].
pub fn forward(g: &Geometry, x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    if g.kernel == 1 {
        return pointwise::forward(x, weight, bias, (g.channels, g.plane()));
    }
    let cout = bias.len();
    let (oh, ow) = g.output();
    // Direct, not Winograd: the forward pass is what the network parity tests compare with
    // the engine to 1e-4, and the Winograd transforms' rounding took the 50-layer ResNet
    // past it (1.1e-4 against 9.7e-5). The cost: MobileNet-0.25's dense 3×3 forward passes
    // take 72 ms a step instead of 48 (batch 8, 640×640, 2 threads; `profile_step`).
    let conv = Conv2d::direct_from_oihw(
        weight,
        bias,
        (cout, g.channels, g.kernel),
        g.stride,
        g.pad,
        Activation::Identity,
    );
    debug_assert_eq!(conv.out_hw(g.height, g.width), (oh, ow));
    let mut y = vec![0.0f32; g.batch * cout * oh * ow];
    y.par_chunks_mut(cout * oh * ow)
        .zip(x.par_chunks(g.channels * g.plane()))
        .for_each(|(yi, xi)| {
            let mut input = Feature::zeros(g.height, g.width, g.channels);
            to_last(
                xi,
                (g.channels, g.height, g.width),
                &mut input.data,
                g.width,
                0,
                0,
            );
            let mut out = Feature::default();
            conv.forward(&input, &mut out, &mut Vec::new());
            to_first(&out.data, (cout, oh, ow), ow, yi);
        });
    y
}

/// The gradients a backward pass asked for: the input's, and the weights' with the bias's.
pub type Gradients = (Option<Vec<f32>>, Option<(Vec<f32>, Vec<f32>)>);

/// The gradients of the input (`[N, C, H, W]`, if `input`) and of the weights and bias (if
/// `params`) from the output's, `dy` `[N, Cout, OH, OW]`. Requires [`applies`].
pub fn backward(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    input: bool,
    params: bool,
) -> Gradients {
    if g.kernel == 1 {
        return pointwise::backward(x, weight, dy, (g.channels, g.plane()), input, params);
    }
    let (k, p, cin, s) = (g.kernel, g.pad, g.channels, g.stride);
    let (oh, ow) = g.output();
    let cout = weight.len() / (cin * k * k);
    let vw = g.width + 2 * p;
    assert!(
        s == 1 || !input,
        "a strided layer's input gradient is not computed here"
    );
    // The input's gradient is the output's, convolved with the filters turned by 180° and
    // their channels swapped, padded by k − 1 − p: `[OH, vw]` in, `[H, W + k − 1]` out.
    let transposed = input.then(|| {
        let mut turned = vec![0.0f32; weight.len()];
        for co in 0..cout {
            for ci in 0..cin {
                for t in 0..k * k {
                    turned[(ci * cout + co) * k * k + (k * k - 1 - t)] =
                        weight[(co * cin + ci) * k * k + t];
                }
            }
        }
        Conv2d::from_oihw(
            &turned,
            &vec![0.0; cin],
            (cin, cout, k),
            1,
            k - 1 - p,
            false,
            Activation::Identity,
        )
    });
    // The grid's row width: the padded input's at stride 1 (the tap offsets), the output's
    // otherwise (the patches).
    let gw = if s == 1 { vw } else { ow };
    let mut dx = vec![0.0f32; if input { g.batch * cin * g.plane() } else { 0 }];
    let dx_chunks: Vec<&mut [f32]> = if input {
        dx.chunks_mut(cin * g.plane()).collect()
    } else {
        (0..g.batch).map(|_| &mut [][..]).collect()
    };
    let taps = k * k * cin * cout;
    let sums = dx_chunks
        .into_par_iter()
        .zip(dy.par_chunks(cout * oh * ow))
        .zip(x.par_chunks(cin * g.plane()))
        .map(|((dxi, dyi), xi)| {
            let mut grid = Feature::zeros(oh, gw, cout);
            to_last(dyi, (cout, oh, ow), &mut grid.data, gw, 0, 0);
            let mut dw = vec![0.0f32; if params { taps + cout } else { 0 }];
            if params {
                let (sums, bias) = dw.split_at_mut(taps);
                if s == 1 {
                    weight_grad(g, xi, &grid.data, cout, sums);
                } else {
                    weight_grad_strided(g, xi, &grid.data, cout, sums);
                }
                // Columns past OW of the stride-1 grid are zeros.
                for px in grid.data.chunks_exact(cout) {
                    bias.iter_mut().zip(px).for_each(|(s, v)| *s += v);
                }
            }
            if let Some(conv) = &transposed {
                let mut out = Feature::default();
                conv.forward(&grid, &mut out, &mut Vec::new());
                to_first(&out.data, (cin, g.height, g.width), out.w, dxi);
            }
            dw
        })
        .reduce(Vec::new, |mut a, b| {
            if a.len() < b.len() {
                return b;
            }
            a.iter_mut().zip(&b).for_each(|(s, v)| *s += v);
            a
        });
    let params = params.then(|| {
        // `[ky][co][kx][ci]` (stride 1) or `[co][ky][kx][ci]` → `[co][ci][ky][kx]`.
        let mut dw = vec![0.0f32; taps];
        for ky in 0..k {
            for co in 0..cout {
                let from = if s == 1 { ky * cout + co } else { co * k + ky };
                for kx in 0..k {
                    for ci in 0..cin {
                        dw[((co * cin + ci) * k + ky) * k + kx] = sums[(from * k + kx) * cin + ci];
                    }
                }
            }
        }
        (dw, sums[taps..].to_vec())
    });
    (input.then_some(dx), params)
}

/// One image's weight gradient added to `sums` (`[ky][co][kx][ci]`), from its input
/// `[C, H, W]` and its output gradient on the grid (`[OH, vw, Cout]`). Stride 1.
fn weight_grad(g: &Geometry, x: &[f32], grid: &[f32], cout: usize, sums: &mut [f32]) {
    let (k, p, cin) = (g.kernel, g.pad, g.channels);
    let (oh, _) = g.output();
    let vw = g.width + 2 * p;
    let rows = g.height + 2 * p;
    // Output pixel q reads up to q + (k − 1)·vw + k − 1: k spare pixels past the grid.
    let mut padded = vec![0.0f32; (rows * vw + k) * cin];
    to_last(x, (cin, g.height, g.width), &mut padded, vw, p, p);
    let q = oh * vw;
    for ky in 0..k {
        let dst = &mut sums[ky * cout * k * cin..][..cout * k * cin];
        let rhs = &padded[ky * vw * cin..];
        assert!(rhs.len() >= (q - 1 + k) * cin);
        // SAFETY: dst is cout × k·cin (row stride k·cin); lhs, the grid transposed, is
        // cout × q (column stride cout) inside `grid` (q · cout values); rhs is q × k·cin
        // with row stride cin, its last element at (q − 1 + k)·cin − 1, inside `rhs`
        // (asserted above); dst does not alias either input.
        unsafe {
            pointwise::product(
                (cout, k * cin, q),
                dst.as_mut_ptr(),
                k * cin,
                true,
                (grid.as_ptr(), 1, cout),
                (rhs.as_ptr(), cin, 1),
            );
        }
    }
}

/// Values in a chunk of the strided weight gradient's patches (1 MB; `k²·C` values an output
/// pixel: 27 for a 3×3 stem over RGB, 147 for a 7×7), about the L2 cache of a core.
const CHUNK: usize = 1 << 18;

/// [`weight_grad`] at stride > 1, `sums` as `[co][ky][kx][ci]`, from the output gradient on
/// `[OH, OW, Cout]`: patches times the grid, a chunk of rows at a time.
fn weight_grad_strided(g: &Geometry, x: &[f32], grid: &[f32], cout: usize, sums: &mut [f32]) {
    let (k, p, cin, s) = (g.kernel, g.pad, g.channels, g.stride);
    let (oh, ow) = g.output();
    let vw = g.width + 2 * p;
    let mut padded = vec![0.0f32; (g.height + 2 * p) * vw * cin];
    to_last(x, (cin, g.height, g.width), &mut padded, vw, p, p);
    let row = k * cin;
    let width = k * row;
    let rows = (CHUNK / (width * ow)).clamp(1, oh);
    let mut patches = vec![0.0f32; rows * ow * width];
    for y0 in (0..oh).step_by(rows) {
        let n = (rows.min(oh - y0)) * ow;
        for (i, patch) in patches[..n * width].chunks_exact_mut(width).enumerate() {
            let (oy, ox) = (y0 + i / ow, i % ow);
            for (ky, taps) in patch.chunks_exact_mut(row).enumerate() {
                // The filter row's k pixels are adjacent in the padded copy; an output
                // pixel's window lies inside it (oy·s + k ≤ H + 2p, the same for columns).
                taps.copy_from_slice(&padded[((oy * s + ky) * vw + ox * s) * cin..][..row]);
            }
        }
        let lhs = &grid[y0 * ow * cout..][..n * cout];
        // SAFETY: dst is cout × width (row stride width), `sums` exactly; lhs, the chunk's
        // grid transposed, is cout × n (column stride cout) inside `lhs` (n · cout values);
        // rhs is n × width (row stride width) inside `patches`; dst aliases neither.
        unsafe {
            pointwise::product(
                (cout, width, n),
                sums.as_mut_ptr(),
                width,
                true,
                (lhs.as_ptr(), 1, cout),
                (patches.as_ptr(), width, 1),
            );
        }
    }
}
