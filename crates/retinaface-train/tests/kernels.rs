//! The trainer's own kernels against references: the depthwise convolution's forward pass and
//! gradients against a direct f64 evaluation for every instruction set this machine has, and
//! the burn operation's values and gradients against burn's grouped convolution and against
//! finite differences. Limit: 1e-4 relative to the largest value compared.

use burn::tensor::activation;
use burn::tensor::module::{batch_norm_train, conv2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use retinaface_train::kernels::norm::{self, Planes, Slope};
use retinaface_train::kernels::{
    batch_norm_act, convolution, depthwise_conv2d, leaky_relu, Geometry, Isa,
};
use retinaface_train::kernels::{depthwise, patches};

const LIMIT: f64 = 1e-4;

/// Shapes with stride 2, padding 0–2, odd sizes, channel counts that are not a multiple of
/// the SIMD width, and an image smaller than the filter's reach.
fn geometries() -> Vec<Geometry> {
    let mut v = Vec::new();
    for (batch, channels, height, width) in
        [(2, 3, 9, 11), (1, 13, 16, 17), (3, 8, 5, 33), (1, 1, 2, 3)]
    {
        for (kernel, stride, pad) in [
            (3, 1, 1),
            (3, 2, 1),
            (3, 1, 0),
            (3, 2, 0),
            (5, 1, 2),
            (1, 2, 0),
            (1, 1, 0),
        ] {
            v.push(geometry((
                batch, channels, height, width, kernel, stride, pad,
            )));
        }
    }
    v
}

/// A geometry from (batch, channels, height, width, kernel, stride, pad).
fn geometry(
    (batch, channels, height, width, kernel, stride, pad): (
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
    ),
) -> Geometry {
    Geometry {
        batch,
        channels,
        height,
        width,
        kernel,
        stride,
        pad,
    }
}

fn random(n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Direct evaluation in f64: y, then dx, dw, db for the output gradient `dy`.
#[allow(clippy::type_complexity)]
fn reference(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    dy: &[f32],
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let (oh, ow) = g.output();
    let k = g.kernel;
    let mut y = vec![0.0; g.batch * g.channels * oh * ow];
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    let mut db = vec![0.0; b.len()];
    for n in 0..g.batch {
        for c in 0..g.channels {
            let plane = n * g.channels + c;
            for oy in 0..oh {
                for ox in 0..ow {
                    let o = (plane * oh + oy) * ow + ox;
                    let mut acc = f64::from(b[c]);
                    db[c] += f64::from(dy[o]);
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                            let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                            if iy < 0 || ix < 0 || iy >= g.height as isize || ix >= g.width as isize
                            {
                                continue;
                            }
                            let i = (plane * g.height + iy as usize) * g.width + ix as usize;
                            let wi = (c * k + ky) * k + kx;
                            acc += f64::from(w[wi]) * f64::from(x[i]);
                            dx[i] += f64::from(w[wi]) * f64::from(dy[o]);
                            dw[wi] += f64::from(x[i]) * f64::from(dy[o]);
                        }
                    }
                    y[o] = acc;
                }
            }
        }
    }
    (y, dx, dw, db)
}

fn relative(found: &[f32], expected: &[f64]) -> f64 {
    assert_eq!(found.len(), expected.len(), "lengths differ");
    let scale = expected.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
    let worst = found
        .iter()
        .zip(expected)
        .map(|(f, e)| (f64::from(*f) - e).abs())
        .fold(0.0f64, |m, d| {
            if d.is_nan() || m.is_nan() {
                f64::NAN
            } else {
                m.max(d)
            }
        });
    worst / scale
}

fn check(what: &str, found: &[f32], expected: &[f64]) {
    let r = relative(found, expected);
    assert!(
        r <= LIMIT,
        "{what}: relative difference {r:e} (NaN fails too)"
    );
}

#[test]
fn depthwise_kernels_match_direct_evaluation_on_every_instruction_set() {
    let mut untested = Vec::new();
    for isa in Isa::ALL {
        if !isa.supported() {
            untested.push(format!("{isa:?}"));
            continue;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for g in geometries() {
            let (oh, ow) = g.output();
            let x = random(g.batch * g.channels * g.height * g.width, &mut rng);
            let w = random(g.channels * g.kernel * g.kernel, &mut rng);
            let b = random(g.channels, &mut rng);
            let dy = random(g.batch * g.channels * oh * ow, &mut rng);
            let (y_ref, dx_ref, dw_ref, db_ref) = reference(&g, &x, &w, &b, &dy);
            let what = |t: &str| format!("{t} {g:?} {isa:?}");
            check(
                &what("forward"),
                &depthwise::forward(&g, &x, &w, Some(&b), isa),
                &y_ref,
            );
            check(
                &what("input gradient"),
                &depthwise::backward_input(&g, &dy, &w, isa),
                &dx_ref,
            );
            let (dw, db) = depthwise::backward_weight(&g, &x, &dy, isa);
            check(&what("weight gradient"), &dw, &dw_ref);
            check(&what("bias gradient"), &db, &db_ref);
        }
    }
    if !untested.is_empty() {
        println!(
            "instruction sets this machine lacks, not tested: {}",
            untested.join(", ")
        );
    }
}

fn t4(v: &[f32], shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape.to_vec()), device)
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_else(|e| panic!("{e:?}"))
}

/// Through burn's autodiff: the custom operation and burn's grouped convolution give the same
/// output and the same gradients of input, weights and bias.
#[test]
fn depthwise_operation_matches_burns_grouped_convolution() {
    let device = Device::flex().autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // burn's convolution rejects an empty output; the kernels' own test covers it.
    for g in geometries()
        .into_iter()
        .filter(|g| g.output().0 * g.output().1 > 0)
    {
        let (oh, ow) = g.output();
        let xs = random(g.batch * g.channels * g.height * g.width, &mut rng);
        let ws = random(g.channels * g.kernel * g.kernel, &mut rng);
        let bs = random(g.channels, &mut rng);
        let r = random(g.batch * g.channels * oh * ow, &mut rng);
        let run = |custom: bool| {
            let x = t4(&xs, [g.batch, g.channels, g.height, g.width], &device).require_grad();
            let w = t4(&ws, [g.channels, 1, g.kernel, g.kernel], &device).require_grad();
            let b = Tensor::<1>::from_data(TensorData::new(bs.clone(), vec![g.channels]), &device)
                .require_grad();
            let y = if custom {
                depthwise_conv2d(x.clone(), w.clone(), Some(b.clone()), g.stride, g.pad)
            } else {
                let options = ConvOptions::new([g.stride; 2], [g.pad; 2], [1, 1], g.channels);
                conv2d(x.clone(), w.clone(), Some(b.clone()), options)
            };
            let weights = t4(&r, [g.batch, g.channels, oh, ow], &device);
            let grads = (y.clone() * weights).sum().backward();
            (
                host(y),
                x.grad(&grads).map(host).unwrap_or_default(),
                w.grad(&grads).map(host).unwrap_or_default(),
                b.grad(&grads).map(host).unwrap_or_default(),
            )
        };
        let ours = run(true);
        let burn = run(false);
        let as64 = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        check(&format!("output {g:?}"), &ours.0, &as64(&burn.0));
        check(&format!("input gradient {g:?}"), &ours.1, &as64(&burn.1));
        check(&format!("weight gradient {g:?}"), &ours.2, &as64(&burn.2));
        check(&format!("bias gradient {g:?}"), &ours.3, &as64(&burn.3));
    }
}

/// The operation's gradients against finite differences of `L = Σ y·r`. L is linear in each
/// of x, w and b, so a central difference with a step of 0.5 is exact up to rounding.
#[test]
fn depthwise_gradients_match_finite_differences() {
    let device = Device::flex().autodiff();
    let plain = Device::flex();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let g = Geometry {
        batch: 2,
        channels: 5,
        height: 7,
        width: 9,
        kernel: 3,
        stride: 2,
        pad: 1,
    };
    let (oh, ow) = g.output();
    let xs = random(g.batch * g.channels * g.height * g.width, &mut rng);
    let ws = random(g.channels * 9, &mut rng);
    let bs = random(g.channels, &mut rng);
    let r = random(g.batch * g.channels * oh * ow, &mut rng);
    let loss = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
        let y = depthwise_conv2d(
            t4(x, [g.batch, g.channels, g.height, g.width], &plain),
            t4(w, [g.channels, 1, 3, 3], &plain),
            Some(Tensor::from_data(
                TensorData::new(b.to_vec(), vec![g.channels]),
                &plain,
            )),
            g.stride,
            g.pad,
        );
        host(y)
            .iter()
            .zip(&r)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum()
    };
    let x = t4(&xs, [g.batch, g.channels, g.height, g.width], &device).require_grad();
    let w = t4(&ws, [g.channels, 1, 3, 3], &device).require_grad();
    let b = Tensor::<1>::from_data(TensorData::new(bs.clone(), vec![g.channels]), &device)
        .require_grad();
    let y = depthwise_conv2d(x.clone(), w.clone(), Some(b.clone()), g.stride, g.pad);
    let grads = (y * t4(&r, [g.batch, g.channels, oh, ow], &device))
        .sum()
        .backward();
    let dx = x.grad(&grads).map(host).unwrap_or_default();
    let dw = w.grad(&grads).map(host).unwrap_or_default();
    let db = b.grad(&grads).map(host).unwrap_or_default();
    let h = 0.5f32;
    let numeric = |which: usize, len: usize| -> Vec<f64> {
        (0..len)
            .map(|i| {
                let (mut xp, mut wp, mut bp) = (xs.clone(), ws.clone(), bs.clone());
                let (mut xm, mut wm, mut bm) = (xs.clone(), ws.clone(), bs.clone());
                match which {
                    0 => (xp[i] += h, xm[i] -= h),
                    1 => (wp[i] += h, wm[i] -= h),
                    _ => (bp[i] += h, bm[i] -= h),
                };
                (loss(&xp, &wp, &bp) - loss(&xm, &wm, &bm)) / (2.0 * f64::from(h))
            })
            .collect()
    };
    check(
        "input gradient vs finite differences",
        &dx,
        &numeric(0, xs.len()),
    );
    check(
        "weight gradient vs finite differences",
        &dw,
        &numeric(1, ws.len()),
    );
    check(
        "bias gradient vs finite differences",
        &db,
        &numeric(2, bs.len()),
    );
}

/// Shapes for the fused BatchNorm: odd plane sizes, one pixel per plane, channel counts that
/// are not a multiple of the SIMD width; every activation setting.
fn norm_cases() -> Vec<(Planes, Slope)> {
    let mut v = Vec::new();
    for (batch, channels, pixels) in [(2, 3, 35), (1, 13, 33), (3, 8, 1), (4, 5, 64)] {
        for slope in [None, Some(0.0), Some(0.1)] {
            v.push((
                Planes {
                    batch,
                    channels,
                    pixels,
                },
                slope,
            ));
        }
    }
    v
}

/// BatchNorm with batch statistics and activation in f64: y, mean, var, dx, dγ, dβ.
#[allow(clippy::type_complexity)]
fn norm_reference(
    p: &Planes,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    dy: &[f32],
    eps: f64,
    slope: Slope,
) -> [Vec<f64>; 6] {
    let m = (p.batch * p.pixels) as f64;
    let at = |n: usize, c: usize, i: usize| (n * p.channels + c) * p.pixels + i;
    let mut out: [Vec<f64>; 6] = Default::default();
    out[0] = vec![0.0; x.len()];
    out[3] = vec![0.0; x.len()];
    for c in 0..p.channels {
        let vals = |f: &dyn Fn(usize, usize) -> f64| -> f64 {
            (0..p.batch)
                .flat_map(|n| (0..p.pixels).map(move |i| (n, i)))
                .map(|(n, i)| f(n, i))
                .sum()
        };
        let mean = vals(&|n, i| f64::from(x[at(n, c, i)])) / m;
        let var = vals(&|n, i| (f64::from(x[at(n, c, i)]) - mean).powi(2)) / m;
        let inv = 1.0 / (var + eps).sqrt();
        let (g0, b0) = (f64::from(gamma[c]), f64::from(beta[c]));
        let xhat = |n: usize, i: usize| (f64::from(x[at(n, c, i)]) - mean) * inv;
        let grad = |n: usize, i: usize| {
            let z = g0 * xhat(n, i) + b0;
            let d = f64::from(dy[at(n, c, i)]);
            match slope {
                Some(s) if z <= 0.0 => d * f64::from(s),
                _ => d,
            }
        };
        let sg = vals(&|n, i| grad(n, i));
        let sgx = vals(&|n, i| grad(n, i) * xhat(n, i));
        for n in 0..p.batch {
            for i in 0..p.pixels {
                let z = g0 * xhat(n, i) + b0;
                out[0][at(n, c, i)] = match slope {
                    Some(s) if z < 0.0 => z * f64::from(s),
                    _ => z,
                };
                out[3][at(n, c, i)] = g0 * inv * (grad(n, i) - sg / m - xhat(n, i) * sgx / m);
            }
        }
        out[1].push(mean);
        out[2].push(var);
        out[4].push(sgx);
        out[5].push(sg);
    }
    out
}

#[test]
fn norm_kernels_match_direct_evaluation_on_every_instruction_set() {
    let mut untested = Vec::new();
    for isa in Isa::ALL {
        if !isa.supported() {
            untested.push(format!("{isa:?}"));
            continue;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for (p, slope) in norm_cases() {
            let len = p.batch * p.channels * p.pixels;
            // An offset and a spread unlike the normalised values.
            let x: Vec<f32> = random(len, &mut rng)
                .iter()
                .map(|v| 3.0 + 4.0 * v)
                .collect();
            let gamma = random(p.channels, &mut rng);
            let beta = random(p.channels, &mut rng);
            let dy = random(len, &mut rng);
            let eps = 1e-5;
            let r = norm_reference(&p, &x, &gamma, &beta, &dy, eps, slope);
            let what = |t: &str| format!("{t} {p:?} {slope:?} {isa:?}");
            let (mean, var) = norm::channel_stats(&p, &x, isa);
            check(&what("mean"), &mean, &r[1]);
            check(&what("variance"), &var, &r[2]);
            let y = norm::forward(&p, &x, &gamma, &beta, &mean, &var, eps, slope, isa);
            check(&what("output"), &y, &r[0]);
            let (dx, dgamma, dbeta) =
                norm::backward(&p, &x, &dy, &gamma, &beta, &mean, &var, eps, slope, isa);
            check(&what("input gradient"), &dx, &r[3]);
            check(&what("gamma gradient"), &dgamma, &r[4]);
            check(&what("beta gradient"), &dbeta, &r[5]);
        }
    }
    if !untested.is_empty() {
        println!(
            "instruction sets this machine lacks, not tested: {}",
            untested.join(", ")
        );
    }
}

/// Through burn's autodiff: the fused operation against burn's `batch_norm_train` followed by
/// burn's activation, in value, statistics and every gradient.
#[test]
fn fused_batch_norm_matches_burns_batch_norm_and_activation() {
    let device = Device::flex().autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for (p, slope) in norm_cases() {
        let h = p.pixels;
        let shape = [p.batch, p.channels, h, 1];
        let len = p.batch * p.channels * h;
        let xs: Vec<f32> = random(len, &mut rng)
            .iter()
            .map(|v| 1.0 + 2.0 * v)
            .collect();
        let gs = random(p.channels, &mut rng);
        let bs = random(p.channels, &mut rng);
        let r = random(len, &mut rng);
        let run = |custom: bool| {
            let x = t4(&xs, shape, &device).require_grad();
            let vec1 = |v: &[f32]| {
                Tensor::<1>::from_data(TensorData::new(v.to_vec(), vec![p.channels]), &device)
                    .require_grad()
            };
            let (gamma, beta) = (vec1(&gs), vec1(&bs));
            let (y, mean, var) = if custom {
                batch_norm_act(x.clone(), gamma.clone(), beta.clone(), 1e-5, slope)
                    .unwrap_or_else(|| panic!("the fused kernel runs on the Flex backend"))
            } else {
                let o = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5);
                let y = match slope {
                    None => o.output,
                    Some(0.0) => activation::relu(o.output),
                    Some(s) => activation::leaky_relu(o.output, f64::from(s)),
                };
                (y, o.mean, o.variance)
            };
            let grads = (y.clone() * t4(&r, shape, &device)).sum().backward();
            [
                host(y),
                host(mean),
                host(var),
                x.grad(&grads).map(host).unwrap_or_default(),
                gamma.grad(&grads).map(host).unwrap_or_default(),
                beta.grad(&grads).map(host).unwrap_or_default(),
            ]
        };
        let ours = run(true);
        let burn = run(false);
        let names = [
            "output",
            "mean",
            "variance",
            "input gradient",
            "gamma gradient",
            "beta gradient",
        ];
        for ((name, o), b) in names.iter().zip(&ours).zip(&burn) {
            let b64: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
            check(&format!("{name} {p:?} {slope:?}"), o, &b64);
        }
    }
}

/// The fused operation's gradients against central differences of `L = Σ y·r` (no
/// activation, so L is smooth; step 1e-2, error O(h²)), and the activation's alone away from
/// its kink (piecewise linear, so exact).
#[test]
fn fused_batch_norm_and_activation_gradients_match_finite_differences() {
    let plain = Device::flex();
    let device = Device::flex().autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let p = Planes {
        batch: 2,
        channels: 3,
        pixels: 6,
    };
    let shape = [2, 3, 6, 1];
    let xs: Vec<f32> = random(36, &mut rng).iter().map(|v| 1.0 + 2.0 * v).collect();
    let gs = random(3, &mut rng);
    let bs = random(3, &mut rng);
    let r = random(36, &mut rng);
    let vec1 =
        |v: &[f32], d: &Device| Tensor::<1>::from_data(TensorData::new(v.to_vec(), vec![3]), d);
    let loss = |x: &[f32], g: &[f32], b: &[f32]| -> f64 {
        let (y, _, _) = batch_norm_act(
            t4(x, shape, &plain),
            vec1(g, &plain),
            vec1(b, &plain),
            1e-5,
            None,
        )
        .unwrap_or_else(|| panic!("the fused kernel runs on the Flex backend"));
        host(y)
            .iter()
            .zip(&r)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum()
    };
    let x = t4(&xs, shape, &device).require_grad();
    let (gamma, beta) = (
        vec1(&gs, &device).require_grad(),
        vec1(&bs, &device).require_grad(),
    );
    let (y, _, _) = batch_norm_act(x.clone(), gamma.clone(), beta.clone(), 1e-5, None)
        .unwrap_or_else(|| panic!("the fused kernel runs on the Flex backend"));
    let grads = (y * t4(&r, shape, &device)).sum().backward();
    let analytic = [
        x.grad(&grads).map(host).unwrap_or_default(),
        gamma.grad(&grads).map(host).unwrap_or_default(),
        beta.grad(&grads).map(host).unwrap_or_default(),
    ];
    let h = 1e-2f32;
    for (which, (name, base)) in [("input", &xs), ("gamma", &gs), ("beta", &bs)]
        .into_iter()
        .enumerate()
    {
        let numeric: Vec<f64> = (0..base.len())
            .map(|i| {
                let mut args = [xs.clone(), gs.clone(), bs.clone()];
                args[which][i] += h;
                let up = loss(&args[0], &args[1], &args[2]);
                args[which][i] -= 2.0 * h;
                let down = loss(&args[0], &args[1], &args[2]);
                (up - down) / (2.0 * f64::from(h))
            })
            .collect();
        let r = relative(&analytic[which], &numeric);
        println!("{name} gradient vs finite differences: {r:e}");
        assert!(
            r <= LIMIT,
            "{name} gradient vs finite differences: {r:e} ({p:?})"
        );
    }

    // The activation alone, inputs kept 0.1 away from the kink.
    let xs: Vec<f32> = random(36, &mut rng)
        .iter()
        .map(|v| if *v < 0.0 { v - 0.1 } else { v + 0.1 })
        .collect();
    let x = t4(&xs, shape, &device).require_grad();
    let grads = (leaky_relu(x.clone(), 0.1) * t4(&r, shape, &device))
        .sum()
        .backward();
    let dx = x.grad(&grads).map(host).unwrap_or_default();
    let act_loss = |v: &[f32]| -> f64 {
        host(leaky_relu(t4(v, shape, &plain), 0.1))
            .iter()
            .zip(&r)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum()
    };
    let numeric: Vec<f64> = (0..xs.len())
        .map(|i| {
            let (mut up, mut down) = (xs.clone(), xs.clone());
            up[i] += 0.05;
            down[i] -= 0.05;
            (act_loss(&up) - act_loss(&down)) / 0.1
        })
        .collect();
    check("activation gradient vs finite differences", &dx, &numeric);
}

/// The patches (im2col) against direct indexing, and their fold against the adjoint identity
/// `⟨fold(c), x⟩ = ⟨c, unfold(x)⟩`, for every instruction set this machine has.
#[test]
fn patch_kernels_match_direct_evaluation_on_every_instruction_set() {
    for isa in Isa::ALL.into_iter().filter(|i| i.supported()) {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        for g in geometries() {
            let (oh, ow) = g.output();
            let taps = g.kernel * g.kernel;
            let x = random(g.batch * g.channels * g.height * g.width, &mut rng);
            let cols = patches::unfold(&g, &x, isa);
            let mut expected = vec![0.0f64; g.batch * g.channels * taps * oh * ow];
            for n in 0..g.batch {
                for c in 0..g.channels {
                    for t in 0..taps {
                        let (ky, kx) = (t / g.kernel, t % g.kernel);
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                                let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                                let inside = iy >= 0
                                    && ix >= 0
                                    && (iy as usize) < g.height
                                    && (ix as usize) < g.width;
                                let o = (((n * g.channels + c) * taps + t) * oh + oy) * ow + ox;
                                if inside {
                                    let i = ((n * g.channels + c) * g.height + iy as usize)
                                        * g.width
                                        + ix as usize;
                                    expected[o] = f64::from(x[i]);
                                }
                            }
                        }
                    }
                }
            }
            check(&format!("patches {g:?} {isa:?}"), &cols, &expected);
            let c = random(cols.len(), &mut rng);
            let folded = patches::fold(&g, &c, isa);
            let lhs: f64 = folded
                .iter()
                .zip(&x)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let rhs: f64 = c
                .iter()
                .zip(&cols)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let scale = lhs.abs().max(rhs.abs()).max(1.0);
            assert!(
                (lhs - rhs).abs() / scale <= LIMIT,
                "fold is not the adjoint of unfold: {lhs} vs {rhs} {g:?} {isa:?}"
            );
        }
    }
}

/// Dense convolutions as the trainer runs them (1×1 as a matrix product, larger filters on
/// the engine's convolution at stride 1 and, where the input needs no gradient, at any
/// stride up to their size; other strided layers as patches times weights) against burn's
/// `conv2d`, values and gradients, through autodiff; and their
/// gradients against finite differences (linear, so a step of 0.5 is exact up to rounding).
/// 16 output channels put the input's gradient on the engine's Winograd path too (8
/// channels or more). Besides the shared shapes: the stems (7×7 and 3×3 at stride 2 over 3
/// channels, one large enough for several chunks of patches), a 5×5 at stride 2 and a 3×3
/// at stride 3.
#[test]
fn dense_convolution_matches_burns_and_finite_differences() {
    let device = Device::flex().autodiff();
    let plain = Device::flex();
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    let more = [
        (2, 3, 19, 23, 7, 2, 3),
        (1, 3, 20, 21, 3, 2, 1),
        (1, 5, 12, 13, 5, 2, 2),
        (2, 4, 10, 11, 3, 3, 1),
        // 120 output rows of 100 pixels: the weight gradient in chunks of 17 rows, the last
        // of one row.
        (1, 3, 240, 200, 7, 2, 3),
    ]
    .map(geometry);
    let cases = geometries()
        .into_iter()
        .chain(more)
        .filter(|g| g.output().0 * g.output().1 > 0)
        .flat_map(|g| [(g, 6), (g, 16)]);
    for (g, cout) in cases {
        let (oh, ow) = g.output();
        let k = g.kernel;
        let xs = random(g.batch * g.channels * g.height * g.width, &mut rng);
        let ws = random(cout * g.channels * k * k, &mut rng);
        let bs = random(cout, &mut rng);
        let r = random(g.batch * cout * oh * ow, &mut rng);
        let xshape = [g.batch, g.channels, g.height, g.width];
        let wshape = [cout, g.channels, k, k];
        let bias = |v: &[f32], d: &Device| {
            Tensor::<1>::from_data(TensorData::new(v.to_vec(), vec![cout]), d)
        };
        let run = |ours: bool, track_x: bool| {
            let x = t4(&xs, xshape, &device);
            let x = if track_x { x.require_grad() } else { x };
            let w = t4(&ws, wshape, &device).require_grad();
            let b = bias(&bs, &device).require_grad();
            let y = if ours {
                convolution(x.clone(), w.clone(), Some(b.clone()), g.stride, g.pad, 1)
            } else {
                let options = ConvOptions::new([g.stride; 2], [g.pad; 2], [1, 1], 1);
                conv2d(x.clone(), w.clone(), Some(b.clone()), options)
            };
            let grads = (y.clone() * t4(&r, [g.batch, cout, oh, ow], &device))
                .sum()
                .backward();
            [
                host(y),
                x.grad(&grads).map(host).unwrap_or_default(),
                w.grad(&grads).map(host).unwrap_or_default(),
                b.grad(&grads).map(host).unwrap_or_default(),
            ]
        };
        // An input that needs no gradient (a stem's) takes the strided layers to the
        // engine's convolution; one that does keeps them on patches.
        for track_x in [true, false] {
            let ours = run(true, track_x);
            let burn = run(false, track_x);
            for (name, (o, b)) in [
                "output",
                "input gradient",
                "weight gradient",
                "bias gradient",
            ]
            .iter()
            .zip(ours.iter().zip(&burn))
            {
                let b64: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
                check(
                    &format!("convolution {name} {g:?} cout {cout} input tracked {track_x}"),
                    o,
                    &b64,
                );
            }
        }
        let ours = run(true, false);
        // Finite differences on a few weights (all would be slow in a debug build).
        let loss = |w: &[f32]| -> f64 {
            let y = convolution(
                t4(&xs, xshape, &plain),
                t4(w, wshape, &plain),
                Some(bias(&bs, &plain)),
                g.stride,
                g.pad,
                1,
            );
            host(y)
                .iter()
                .zip(&r)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum()
        };
        let picks: Vec<usize> = (0..ws.len()).step_by((ws.len() / 7).max(1)).collect();
        let numeric: Vec<f64> = picks
            .iter()
            .map(|&i| {
                let (mut up, mut down) = (ws.clone(), ws.clone());
                up[i] += 0.5;
                down[i] -= 0.5;
                loss(&up) - loss(&down)
            })
            .collect();
        let analytic: Vec<f32> = picks.iter().map(|&i| ours[2][i]).collect();
        check(
            &format!("weight gradient vs finite differences {g:?} cout {cout}"),
            &analytic,
            &numeric,
        );
    }
}

/// Nearest resizing on the trainer's kernel against burn's `select` by PyTorch's source
/// index ⌊i·in/out⌋: output and input gradient, through autodiff (the output exactly, a copy
/// of the same values; the gradient within 1e-6, sums of the same values).
#[test]
fn nearest_upsampling_matches_selects() {
    use burn::tensor::Int;
    let device = Device::flex().autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    for (shape, (h, w)) in [
        ([2, 3, 5, 7], (10, 14)),
        ([1, 4, 5, 7], (9, 13)),
        ([2, 2, 6, 8], (3, 4)),
        ([1, 1, 1, 1], (2, 2)),
    ] {
        let xs = random(shape.iter().product(), &mut rng);
        let r = random(shape[0] * shape[1] * h * w, &mut rng);
        let run = |ours: bool| {
            let x = t4(&xs, shape, &device).require_grad();
            let y = if ours {
                retinaface_train::kernels::upsample_nearest(x.clone(), h, w)
                    .expect("the trainer's kernels run on Flex")
            } else {
                let index = |n_out: usize, n_in: usize| {
                    let idx: Vec<i64> = (0..n_out).map(|i| (i * n_in / n_out) as i64).collect();
                    Tensor::<1, Int>::from_data(TensorData::new(idx, vec![n_out]), &device)
                };
                x.clone()
                    .select(2, index(h, shape[2]))
                    .select(3, index(w, shape[3]))
            };
            let grads = (y.clone() * t4(&r, [shape[0], shape[1], h, w], &device))
                .sum()
                .backward();
            (host(y), x.grad(&grads).map(host).unwrap_or_default())
        };
        let (ours, burn) = (run(true), run(false));
        assert_eq!(ours.0, burn.0, "output {shape:?} → {h}×{w}");
        assert_eq!(ours.1.len(), burn.1.len());
        for (a, b) in ours.1.iter().zip(&burn.1) {
            assert!(
                (a - b).abs() <= 1e-6,
                "gradient {shape:?} → {h}×{w}: {a} vs {b}"
            );
        }
    }
}
