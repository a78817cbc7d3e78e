//! Where a training step's time goes: the step's phases (forward, loss, backward, optimiser)
//! on real batches, then every layer of the network alone at its shape in the step, forward
//! and backward, its convolution, BatchNorm and activation timed apart and summed per layer
//! kind. Medians of `--reps` runs.
//!
//! ```sh
//! cargo run --release -p retinaface-train --example profile_step -- \
//!     --data ../shared/data/widerface/train/images --batch 8 --size 640 --bn train
//! ```
//! `--no-layers` stops after the phases (each step's loss is printed, to compare runs);
//! `--threads N` sets the pool; `--config FILE` profiles another network; `--burn-ops`
//! runs burn's own operations instead of the trainer's kernels (depthwise and patch
//! convolutions, fused BatchNorm and activation).

use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor};
use retinaface::arch::{ConvKind, Op};
use retinaface_train::config::{BatchNormSetting, TrainConfig};
use retinaface_train::data::{Dataset, Loader};
use retinaface_train::kernels::set_custom_kernels;
use retinaface_train::loss::multibox_loss;
use retinaface_train::network::{record_layer_inputs, tensor, BnMode, ConvBn, LayerBuilder, Model};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

struct Args {
    data: PathBuf,
    config: Option<PathBuf>,
    batch: usize,
    size: usize,
    bn: BnMode,
    reps: usize,
    threads: Option<usize>,
    burn_ops: bool,
    layers: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        data: PathBuf::from("../shared/data/widerface/train/images"),
        config: None,
        batch: 8,
        size: 640,
        bn: BnMode::Train,
        reps: 3,
        threads: None,
        burn_ops: false,
        layers: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--data" => a.data = PathBuf::from(value()?),
            "--config" => a.config = Some(PathBuf::from(value()?)),
            "--batch" => a.batch = number(value()?)?,
            "--size" => a.size = number(value()?)?,
            "--reps" => a.reps = number(value()?)?.max(1),
            "--burn-ops" => a.burn_ops = true,
            "--no-layers" => a.layers = false,
            "--threads" => a.threads = Some(number(value()?)?.max(1)),
            "--bn" => {
                a.bn = match value()?.as_str() {
                    "train" => BnMode::Train,
                    "frozen" => BnMode::Frozen,
                    other => return Err(format!("--bn train|frozen, not {other}")),
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The kind a layer is reported under.
fn kind(layer: &ConvBn, spec: &retinaface::model::ConvSpec) -> String {
    match spec.kind {
        ConvKind::Depthwise => format!("depthwise {0}×{0}", spec.k),
        ConvKind::Dense if spec.cin == 3 => format!("stem {0}×{0}", spec.k),
        ConvKind::Dense if layer.bn.is_none() => format!("head {0}×{0}", spec.k),
        ConvKind::Dense => format!("dense {0}×{0}", spec.k),
        ConvKind::Deformable => "deformable 3×3".into(),
        ConvKind::Transposed => "transposed 2×2".into(),
    }
}

/// Forward and backward milliseconds of `f` on a random input of `dims` (the gradient of
/// the sum of its output flows back; `grad_input` whether the input needs one too).
fn time_layer(
    f: &dyn Fn(Tensor<4>) -> Tensor<4>,
    dims: [usize; 4],
    grad_input: bool,
    device: &Device,
    reps: usize,
) -> (f64, f64) {
    let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
    for _ in 0..reps + 1 {
        let x = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), device);
        let x = if grad_input { x.require_grad() } else { x };
        let t = Instant::now();
        let y = f(x);
        // The forward of an eager backend is done when it returns; reading one value makes
        // sure of it.
        let _ = y
            .clone()
            .slice([0..1, 0..1, 0..1, 0..1])
            .into_scalar::<f32>();
        fwd.push(ms(t));
        let t = Instant::now();
        let _ = y.sum().backward();
        bwd.push(ms(t));
    }
    // The first run warms caches and allocators.
    (median(fwd[1..].to_vec()), median(bwd[1..].to_vec()))
}

#[derive(Default)]
struct Row {
    layers: usize,
    conv: (f64, f64),
    bn: (f64, f64),
    act: (f64, f64),
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = args()?;
    retinaface_train::memory::keep_freed_memory();
    if let Some(n) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
    }
    set_custom_kernels(!a.burn_ops);
    let mut config = match &a.config {
        Some(p) => TrainConfig::load(p)?,
        None => TrainConfig::default(),
    };
    config.data.images = a.data.clone();
    config.data.image_size = a.size;
    config.optim.batch = a.batch;
    config.run.batch_norm = match a.bn {
        BnMode::Train => BatchNormSetting::Train,
        BnMode::Frozen => BatchNormSetting::Frozen,
    };
    let device = Device::flex().autodiff();
    let model_config = config.model.model_config();
    let b = LayerBuilder::scratch(&device, 0).with_bn_mode(a.bn);
    let mut model = Model::build(&model_config, b)?;
    let dataset = Dataset::load(&config.data.images, &config.data.labels_path())?;
    let loader = Loader::new(
        dataset,
        &model_config,
        config.augment.clone(),
        config.matching,
        a.size,
        a.batch,
        0,
    );
    println!(
        "{} at {}×{}, batch {}, BatchNorm {:?}, {} threads, {}",
        model_config.summary(),
        a.size,
        a.size,
        a.batch,
        a.bn,
        rayon::current_num_threads(),
        if a.burn_ops {
            "burn"
        } else {
            "the trainer's kernels"
        }
    );

    // The whole step, phase by phase, on real batches.
    let mut optim = burn::optim::SgdConfig::new().init();
    let mut phases: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut shapes = Default::default();
    for i in 0..a.reps + 1 {
        let t = Instant::now();
        let batch = loader.load(0, i);
        let load = ms(t);
        let s = batch.size;
        let x = tensor(batch.images.clone(), vec![batch.len(), 3, s, s], &device);
        let t = Instant::now();
        let mut out = None;
        let traced = record_layer_inputs(|| out = Some(model.net.forward(x)));
        let Some(out) = out else { continue };
        let _ = out.class.clone().sum().into_scalar::<f32>();
        let forward = ms(t);
        shapes = traced;
        let t = Instant::now();
        let loss = multibox_loss(&out, &batch.targets, &config.loss);
        let value = loss.total.clone().into_scalar::<f32>();
        let loss_fwd = ms(t);
        println!("step {i}: loss {value:.6}");
        let t = Instant::now();
        let grads = GradientsParams::from_grads(loss.total.backward(), &model.net);
        let backward = ms(t);
        let t = Instant::now();
        let net = model.net.clone();
        model.net = optim.step(1e-4, net, grads);
        let step = ms(t);
        if i == 0 {
            continue;
        }
        for (k, v) in [
            ("1 load batch (on the loader's threads in training)", load),
            ("2 forward", forward),
            ("3 loss forward (OHEM included)", loss_fwd),
            ("4 backward (loss and network)", backward),
            ("5 optimiser step", step),
            (
                "6 total without loading",
                forward + loss_fwd + backward + step,
            ),
        ] {
            phases.entry(k).or_default().push(v);
        }
    }
    println!("\nstep phases, median ms of {} steps:", a.reps);
    let total = median(phases["6 total without loading"].clone());
    for (k, v) in &phases {
        let m = median(v.clone());
        println!("  {:<52} {:>9.1} ms", &k[2..], m);
    }
    println!(
        "  => {:.2} images/s for the step alone",
        a.batch as f64 / total * 1e3
    );

    if !a.layers {
        return Ok(());
    }
    // Every layer alone at its shape in the step.
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let layers = model.net.layers();
    let ops = &model.net.graph.ops;
    for (i, (layer, spec)) in layers.iter().zip(&model.specs).enumerate() {
        let Some(&dims) = shapes.get(&layer.conv.weight.id) else {
            continue;
        };
        let plain = ops
            .iter()
            .any(|op| matches!(op, Op::Conv { layer: l, .. } if *l == i));
        if !plain {
            continue;
        }
        let grad_input = dims[1] != 3;
        // The convolution as the network runs it.
        let conv = |x: Tensor<4>| layer.convolve(x);
        let whole = |x: Tensor<4>| layer.forward(x);
        let without_act = |x: Tensor<4>| {
            let mut l = (*layer).clone();
            l.activate = false;
            l.forward(x)
        };
        let c = time_layer(&conv, dims, grad_input, &device, a.reps);
        let n = time_layer(&without_act, dims, grad_input, &device, a.reps);
        let w = time_layer(&whole, dims, grad_input, &device, a.reps);
        let row = rows.entry(kind(layer, spec)).or_default();
        row.layers += 1;
        row.conv.0 += c.0;
        row.conv.1 += c.1;
        if layer.bn.is_some() {
            row.bn.0 += n.0 - c.0;
            row.bn.1 += n.1 - c.1;
        }
        if layer.activate {
            row.act.0 += w.0 - n.0;
            row.act.1 += w.1 - n.1;
        }
    }
    println!(
        "\nper layer kind, each layer alone, ms (forward / backward; BatchNorm {:?}):",
        a.bn
    );
    println!(
        "  {:<16} {:>6} {:>19} {:>19} {:>19}",
        "kind", "layers", "convolution", "BatchNorm", "activation"
    );
    let mut sum = 0.0;
    for (k, r) in &rows {
        println!(
            "  {:<16} {:>6} {:>9.1} / {:>7.1} {:>9.1} / {:>7.1} {:>9.1} / {:>7.1}",
            k, r.layers, r.conv.0, r.conv.1, r.bn.0, r.bn.1, r.act.0, r.act.1
        );
        sum += r.conv.0 + r.conv.1 + r.bn.0 + r.bn.1 + r.act.0 + r.act.1;
    }
    println!(
        "  layers alone: {:.1} ms of the step's {:.1} ms; the rest is the other operations \
         (pyramid merges, concatenations, head reshapes), the loss and the optimiser",
        sum, total
    );
    Ok(())
}
