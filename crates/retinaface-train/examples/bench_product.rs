//! The dense convolutions' matrix products at MobileNet-0.25 RetinaFace's shapes (batch 8,
//! 640×640): `kernels::product` against burn's `matmul` on the same data, forward
//! (`w · x`), input gradient (`wᵀ · dy`) and weight gradient (`Σ dy · xᵀ`). Prints the median
//! of `--reps` runs of each and their ratio.
//!
//! ```sh
//! cargo run --release -p retinaface-train --example bench_product -- --threads 2
//! ```

use burn::tensor::{Device, Distribution, Tensor};
use retinaface_train::kernels::{product, Isa};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

fn values<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}

fn main() {
    let mut threads = 2;
    let mut reps = 5;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => threads = args.next().and_then(|v| v.parse().ok()).unwrap_or(2),
            "--reps" => reps = args.next().and_then(|v| v.parse().ok()).unwrap_or(5),
            _ => {}
        }
    }
    // As in training: freed memory stays in the heap, so neither side pays page faults.
    retinaface_train::memory::keep_freed_memory();
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .ok();
    let device = Device::default();
    let isa = Isa::active();
    let n = 8;
    // (name, rows m, depth k, pixels): 1×1 layers (k = Cin) and 3×3 ones (k = 9·Cin).
    let shapes = [
        ("1x1 8→16 @320²", 16, 8, 102_400),
        ("1x1 32→32 @160²", 32, 32, 25_600),
        ("1x1 64→64 @80²", 64, 64, 6_400),
        ("1x1 128→128 @40²", 128, 128, 1_600),
        ("1x1 256→256 @20²", 256, 256, 400),
        ("3x3 64→64 @80²", 64, 576, 6_400),
        ("3x3 64→32 @80²", 32, 576, 6_400),
        ("3x3 16→16 @80²", 16, 144, 6_400),
    ];
    println!("{isa:?}, {threads} threads, batch {n}; ms, medians of {reps}");
    println!(
        "{:<20} {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6}",
        "shape",
        "fwd burn",
        "ours",
        "ratio",
        "dx burn",
        "ours",
        "ratio",
        "dw burn",
        "ours",
        "ratio"
    );
    let mut totals = [0.0f64; 6];
    for (name, m, k, p) in shapes {
        let w: Tensor<2> = Tensor::random([m, k], Distribution::Normal(0.0, 1.0), &device);
        let x: Tensor<3> = Tensor::random([n, k, p], Distribution::Normal(0.0, 1.0), &device);
        let dy: Tensor<3> = Tensor::random([n, m, p], Distribution::Normal(0.0, 1.0), &device);
        let (wv, xv, dyv) = (values(&w), values(&x), values(&dy));
        let wt: Vec<f32> = (0..k * m).map(|i| wv[(i % m) * k + i / m]).collect();

        let w3 = w.clone().reshape([1, m, k]);
        let fb = time(reps, || {
            let _ = w3.clone().matmul(x.clone());
        });
        let fo = time(reps, || {
            let _ = product::forward(&wv, m, k, &xv, n, p, None, isa);
        });
        let wt3 = w.clone().transpose().reshape([1, k, m]);
        let db = time(reps, || {
            let _ = wt3.clone().matmul(dy.clone());
        });
        let dox = time(reps, || {
            let _ = product::forward(&wt, k, m, &dyv, n, p, None, isa);
        });
        let gb = time(reps, || {
            let _ = dy.clone().matmul(x.clone().swap_dims(1, 2)).sum_dim(0);
        });
        let go = time(reps, || {
            let _ = product::weight_grad(&dyv, m, &xv, k, n, p, isa);
        });
        // The two implementations agree (relative to the largest value).
        let y_ref = values(&w3.clone().matmul(x.clone()));
        let y = product::forward(&wv, m, k, &xv, n, p, None, isa);
        let g_ref = values(&dy.clone().matmul(x.clone().swap_dims(1, 2)).sum_dim(0));
        let (g, _) = product::weight_grad(&dyv, m, &xv, k, n, p, isa);
        let rel = |a: &[f32], b: &[f32]| {
            let scale = b.iter().fold(0f32, |s, v| s.max(v.abs())).max(1e-30);
            a.iter().zip(b).fold(0f32, |s, (u, v)| s.max((u - v).abs())) / scale
        };
        println!(
            "{name:<20} {fb:9.1} {fo:9.1} {:6.2} | {db:9.1} {dox:9.1} {:6.2} | {gb:9.1} {go:9.1} {:6.2}   (diff {:.1e} {:.1e})",
            fb / fo,
            db / dox,
            gb / go,
            rel(&y, &y_ref),
            rel(&g, &g_ref)
        );
        for (t, v) in totals.iter_mut().zip([fb, fo, db, dox, gb, go]) {
            *t += v;
        }
    }
    println!(
        "{:<20} {:9.1} {:9.1} {:6.2} | {:9.1} {:9.1} {:6.2} | {:9.1} {:9.1} {:6.2}",
        "total",
        totals[0],
        totals[1],
        totals[0] / totals[1],
        totals[2],
        totals[3],
        totals[2] / totals[3],
        totals[4],
        totals[5],
        totals[4] / totals[5]
    );
}
