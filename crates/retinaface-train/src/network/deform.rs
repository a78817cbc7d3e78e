//! The deformable convolution composed from differentiable tensor ops: bilinear sampling by
//! row selection and weights, then one matrix product.
//!
//! Why not the backend's `deform_conv2d`: its CPU backward loops over every output channel,
//! pixel, input channel and tap with a bilinear interpolation each, on one core. One training
//! step of `resnet50-paper` at 256×256, batch 2, took over 4 minutes that way; composed, the
//! gradients are scatter-adds and matrix products that the backend runs in parallel. The
//! function is torchvision's (`deform_conv2d` without mask, one offset group) and agrees
//! with the backend's in value and gradients (`tests/network.rs`).

use burn::tensor::ops::PadMode;
use burn::tensor::{Int, Tensor, TensorData};

/// `k × k` deformable convolution of `x` (`[B, C, H, W]`) with `weight` (`[O, C, k, k]`) and
/// `bias`, sampling tap `t = ky·k + kx` of output pixel `(y, x)` at
/// `(y·s − p + ky + Δy, x·s − p + kx + Δx)` with `Δy = offsets[:, 2t]`, `Δx = offsets[:, 2t+1]`
/// (`[B, 2k², H', W']`); points outside the map read zero.
pub fn deform_conv2d(
    x: Tensor<4>,
    offsets: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    stride: usize,
    pad: usize,
) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let [o, _, k, _] = weight.dims();
    let [_, _, oh, ow] = offsets.dims();
    let kk = k * k;
    let n = b * oh * ow * kk;
    let device = x.device();

    // Sampling positions, ordered (b, y, x, tap).
    let off = offsets.reshape([b, kk, 2, oh, ow]);
    let along = |i: usize| -> Tensor<4> {
        off.clone()
            .narrow(2, i, 1)
            .reshape([b, kk, oh, ow])
            .permute([0, 2, 3, 1])
    };
    let grid = |f: &dyn Fn(usize, usize, usize) -> f32| -> Tensor<4> {
        let mut v = Vec::with_capacity(oh * ow * kk);
        for y in 0..oh {
            for xx in 0..ow {
                for t in 0..kk {
                    v.push(f(y, xx, t));
                }
            }
        }
        Tensor::from_data(TensorData::new(v, vec![1, oh, ow, kk]), &device)
    };
    let base_y = grid(&|y, _, t| (y * stride + t / k) as f32 - pad as f32);
    let base_x = grid(&|_, xx, t| (xx * stride + t % k) as f32 - pad as f32);
    let py = (along(0) + base_y).reshape([n]);
    let px = (along(1) + base_x).reshape([n]);

    // Corners and weights. Positions are detached for the indices; the weights keep the
    // gradient with respect to the offsets.
    let (pyd, pxd) = (py.clone().detach(), px.clone().detach());
    let inside = pyd
        .clone()
        .greater_elem(-1.0)
        .float()
        .mul(pyd.clone().lower_elem(h as f32).float())
        .mul(pxd.clone().greater_elem(-1.0).float())
        .mul(pxd.clone().lower_elem(w as f32).float());
    let y0 = pyd.floor().clamp(-1.0, h as f32 - 1.0);
    let x0 = pxd.floor().clamp(-1.0, w as f32 - 1.0);
    let ly = py - y0.clone();
    let lx = px - x0.clone();
    let (hy, hx) = (ly.clone().neg() + 1.0, lx.clone().neg() + 1.0);

    // Rows of the zero-bordered map, `[B·(H+2)·(W+2), C]`: every corner of an inside point is
    // a row, those beyond the map land on the border.
    let (ph, pw) = (h + 2, w + 2);
    let rows = x
        .pad([(1, 1), (1, 1)], PadMode::Constant(0.0))
        .permute([0, 2, 3, 1])
        .reshape([b * ph * pw, c]);
    // Row of each point's top-left corner, in integers (a float index stops being exact past
    // 2²⁴ rows): its image's first row, then (y0 + 1, x0 + 1) in the bordered map.
    let batch: Vec<i64> = (0..b)
        .flat_map(|i| std::iter::repeat_n((i * ph * pw) as i64, oh * ow * kk))
        .collect();
    let batch = Tensor::<1, Int>::from_data(TensorData::new(batch, vec![n]), &device);
    let top_left = (y0.clone().int() + 1) * pw as i64 + (x0.clone().int() + 1) + batch;
    let index = |dy: i64, dx: i64| -> Tensor<1, Int> { top_left.clone() + (dy * pw as i64 + dx) };
    let corner = |dy: i64, dx: i64, wt: Tensor<1>| -> Tensor<2> {
        rows.clone().select(0, index(dy, dx)) * (wt * inside.clone()).reshape([n, 1])
    };
    let sampled = corner(0, 0, hy.clone() * hx.clone())
        + corner(0, 1, hy * lx.clone())
        + corner(1, 0, ly.clone() * hx)
        + corner(1, 1, ly * lx);

    // `[B·H'·W', k²·C] × [k²·C, O]`.
    let cols = sampled.reshape([b * oh * ow, kk * c]);
    let wmat = weight.permute([2, 3, 1, 0]).reshape([kk * c, o]);
    let mut y = cols.matmul(wmat);
    if let Some(bias) = bias {
        y = y + bias.reshape([1, o]);
    }
    y.reshape([b, oh, ow, o]).permute([0, 3, 1, 2])
}
