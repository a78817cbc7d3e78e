//! The autodiff gradients of the layers the network is made of, against gradients computed by
//! hand in plain Rust: dense and depthwise convolutions with bias (every layer of a folded,
//! pretrained file has one), strided and padded, and the frozen BatchNorm that follows them.

use burn::module::Param;
use burn::nn::conv::Conv2dConfig;
use burn::nn::PaddingConfig2d;
use burn::tensor::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use retinaface_train::network::tensor;

fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap_or_default()
}

struct Case {
    n: usize,
    cin: usize,
    cout: usize,
    groups: usize,
    k: usize,
    stride: usize,
    pad: usize,
    h: usize,
    w: usize,
}

impl Case {
    fn out(&self, size: usize) -> usize {
        (size + 2 * self.pad - self.k) / self.stride + 1
    }
}

/// `Σ r · conv(x)` differentiated by hand: returns `(dx, dw, db)`.
// Index loops: they spell out the convolution's formula.
#[allow(clippy::needless_range_loop)]
fn by_hand(c: &Case, x: &[f32], w: &[f32], r: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (oh, ow) = (c.out(c.h), c.out(c.w));
    let cin_g = c.cin / c.groups;
    let cout_g = c.cout / c.groups;
    let mut dx = vec![0.0f32; x.len()];
    let mut dw = vec![0.0f32; w.len()];
    let mut db = vec![0.0f32; c.cout];
    for n in 0..c.n {
        for o in 0..c.cout {
            let g = o / cout_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    let ri = ((n * c.cout + o) * oh + oy) * ow + ox;
                    let rv = r[ri];
                    db[o] += rv;
                    for ci in 0..cin_g {
                        let ic = g * cin_g + ci;
                        for ky in 0..c.k {
                            for kx in 0..c.k {
                                let iy = (oy * c.stride + ky) as isize - c.pad as isize;
                                let ix = (ox * c.stride + kx) as isize - c.pad as isize;
                                if iy < 0 || ix < 0 || iy >= c.h as isize || ix >= c.w as isize {
                                    continue;
                                }
                                let xi = ((n * c.cin + ic) * c.h + iy as usize) * c.w + ix as usize;
                                let wi = ((o * cin_g + ci) * c.k + ky) * c.k + kx;
                                dw[wi] += rv * x[xi];
                                dx[xi] += rv * w[wi];
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw, db)
}

fn assert_close(what: &str, ours: &[f32], reference: &[f32]) {
    assert_eq!(ours.len(), reference.len(), "{what}: lengths");
    let scale = reference
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(1e-6);
    let diff = ours
        .iter()
        .zip(reference)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("{what}: max |Δ| {diff:.2e} of max |ref| {scale:.3}");
    assert!(diff <= 1e-4 * scale, "{what}: max |Δ| {diff} of {scale}");
}

fn check(c: &Case, frozen_bn: bool) {
    let device = Device::flex().autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let x = random(&mut rng, c.n * c.cin * c.h * c.w);
    let w = random(&mut rng, c.cout * (c.cin / c.groups) * c.k * c.k);
    let b = random(&mut rng, c.cout);
    let r = random(&mut rng, c.n * c.cout * c.out(c.h) * c.out(c.w));
    let mut conv = Conv2dConfig::new([c.cin, c.cout], [c.k, c.k])
        .with_stride([c.stride, c.stride])
        .with_padding(PaddingConfig2d::Explicit(c.pad, c.pad, c.pad, c.pad))
        .with_groups(c.groups)
        .with_bias(true)
        .init(&device);
    let wshape = vec![c.cout, c.cin / c.groups, c.k, c.k];
    conv.weight = Param::from_tensor(tensor(w.clone(), wshape, &device));
    conv.bias = Some(Param::from_tensor(tensor(b, vec![c.cout], &device)));
    let xt: Tensor<4> = tensor(x.clone(), vec![c.n, c.cin, c.h, c.w], &device).require_grad();
    let shape = vec![c.n, c.cout, c.out(c.h), c.out(c.w)];
    let mut y = conv.forward(xt.clone());
    if frozen_bn {
        // The identity BatchNorm of a folded file, in inference mode as training keeps it.
        let mut bn = burn::nn::BatchNormConfig::new(c.cout)
            .with_epsilon(1e-5)
            .init(&device);
        bn.running_var = burn::module::RunningState::new(tensor(
            vec![1.0 - 1e-5; c.cout],
            vec![c.cout],
            &device,
        ));
        bn.training = Param::from_bool(false);
        y = bn.forward(y);
    }
    let loss = (y * tensor::<4>(r.clone(), shape, &device)).sum();
    let grads = loss.backward();
    let (dx, dw, db) = by_hand(c, &x, &w, &r);
    let label = format!(
        "{}→{} groups {} k{} s{} p{}{}",
        c.cin,
        c.cout,
        c.groups,
        c.k,
        c.stride,
        c.pad,
        if frozen_bn { " + frozen BN" } else { "" }
    );
    let got = |t: Option<Tensor<4>>| t.map(host).unwrap_or_default();
    assert_close(&format!("{label} dx"), &got(xt.grad(&grads)), &dx);
    assert_close(
        &format!("{label} dw"),
        &got(conv.weight.val().grad(&grads)),
        &dw,
    );
    let bias_grad = conv
        .bias
        .as_ref()
        .and_then(|p| p.val().grad(&grads))
        .map(host)
        .unwrap_or_default();
    assert_close(&format!("{label} db"), &bias_grad, &db);
}

#[test]
fn dense_convolution_with_bias() {
    for (k, stride, pad) in [(1, 1, 0), (3, 1, 1), (3, 2, 1)] {
        let case = Case {
            n: 2,
            cin: 3,
            cout: 5,
            groups: 1,
            k,
            stride,
            pad,
            h: 9,
            w: 7,
        };
        check(&case, false);
        check(&case, true);
    }
}

#[test]
fn depthwise_convolution_with_bias() {
    for stride in [1, 2] {
        let case = Case {
            n: 2,
            cin: 4,
            cout: 4,
            groups: 4,
            k: 3,
            stride,
            pad: 1,
            h: 10,
            w: 8,
        };
        check(&case, false);
        check(&case, true);
    }
}
