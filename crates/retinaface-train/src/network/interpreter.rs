//! The description ([`retinaface::arch::Graph`]) run op by op on burn tensors: the trainer's
//! instance of the same network the engine runs.

use super::layers::ConvBn;
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Int, Tensor, TensorData};
use retinaface::arch::{Graph, Op, Value};

/// Every value of `graph` that `outputs` need, computed from `input` with `layers`.
pub(super) fn run(
    graph: &Graph,
    layers: &[ConvBn],
    input: Tensor<4>,
    outputs: &[Value],
) -> Vec<Option<Tensor<4>>> {
    let needed = graph.needed(outputs);
    let mut values: Vec<Option<Tensor<4>>> = vec![None; graph.ops.len() + 1];
    values[0] = Some(input);
    for (i, op) in graph.ops.iter().enumerate() {
        if !needed[i + 1] {
            continue;
        }
        let get = |v: Value| match &values[v] {
            Some(t) => t.clone(),
            None => unreachable!("value {v} is read before it is computed"),
        };
        let y = match op {
            Op::Conv { layer, input } => layers[*layer].forward(get(*input)),
            Op::DeformConv {
                layer,
                offsets,
                input,
            } => {
                let x = get(*input);
                let off = layers[*offsets].forward(x.clone());
                layers[*layer].forward_deformable(x, off)
            }
            Op::ConvTranspose { layer, input, like } => {
                let [_, _, h, w] = get(*like).dims();
                layers[*layer].forward_transposed(get(*input), h, w)
            }
            Op::MaxPool { input } => {
                let pool = MaxPoolOptions::new([3, 3])
                    .with_stride([2, 2])
                    .with_padding([1, 1]);
                max_pool2d(get(*input), pool)
            }
            Op::Add { a, b, relu: r } => {
                let s = get(*a) + get(*b);
                if *r {
                    relu(s)
                } else {
                    s
                }
            }
            Op::UpsampleAdd { a, b } => {
                let a = get(*a);
                let [_, _, h, w] = a.dims();
                a + upsample_nearest(get(*b), h, w)
            }
            Op::Gate { a, b } => {
                let a = get(*a);
                a.clone() * get(*b) + a
            }
            Op::Concat { inputs } => Tensor::cat(inputs.iter().map(|&v| get(v)).collect(), 1),
        };
        values[i + 1] = Some(y);
    }
    values
}

/// PyTorch's `interpolate(mode="nearest", size=(h, w))`: source index `floor(i · in / out)`.
pub fn upsample_nearest(x: Tensor<4>, h: usize, w: usize) -> Tensor<4> {
    if let Some(y) = crate::kernels::upsample_nearest(x.clone(), h, w) {
        return y;
    }
    let [_, _, ih, iw] = x.dims();
    let device = x.device();
    let index = |n_out: usize, n_in: usize| {
        let idx: Vec<i64> = (0..n_out)
            .map(|i| ((i * n_in / n_out).min(n_in - 1)) as i64)
            .collect();
        Tensor::<1, Int>::from_data(TensorData::new(idx, vec![n_out]), &device)
    };
    x.select(2, index(h, ih)).select(3, index(w, iw))
}
