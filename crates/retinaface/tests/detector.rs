//! The detector on real photos: known faces, parity with the ONNX Runtime reference, and the
//! embedded model being exactly what `convert` makes of the published ONNX file.

mod common;

use retinaface::post::nms::iou_plus1;
use retinaface::weights::{self, safetensors};
use retinaface::{model, DetectOptions, Detector, Face, ModelConfig};
use serde::Deserialize;

#[derive(Deserialize)]
struct Record {
    image: String,
    width: u32,
    height: u32,
    faces: Vec<Face>,
}

#[test]
fn group_photo_has_six_faces_with_landmarks_inside() {
    let detector = Detector::default_model().unwrap();
    let img = retinaface::input::load_image(&common::photo()).unwrap();
    let faces = detector.detect(&img, &DetectOptions::default()).unwrap();
    assert_eq!(faces.len(), 6, "{faces:#?}");
    for f in &faces {
        assert!(f.score > 0.5);
        for p in f.landmarks.expect("the port predicts landmarks") {
            let [x1, y1, x2, y2] = f.bbox;
            assert!(
                p[0] >= x1 && p[0] <= x2 && p[1] >= y1 && p[1] <= y2,
                "landmark {p:?} outside {:?}",
                f.bbox
            );
        }
    }
}

#[test]
fn embedded_model_is_convert_of_the_onnx() {
    let tensors = weights::read_file(&common::onnx_model()).unwrap();
    assert_eq!(tensors.len(), 112, "the port's export has 112 initializers");
    let config = retinaface::weights::infer_config(&tensors);
    let folded = model::folded_tensors(&config, &tensors).unwrap();
    let bytes = safetensors::write(&folded, &config).unwrap();
    assert!(
        bytes == weights::embedded::BYTES,
        "crates/retinaface/models/retinaface-mobilenet0.25.safetensors is not `convert` of the ONNX"
    );
}

/// The embedded model with its mesh branch detects exactly what its detection weights alone
/// detect (the branch's training froze them): the same faces, bit for bit, on the group photo
/// and the 145 validation images at the WIDER FACE protocol's threshold (so the same AP),
/// with a mesh for each; its tensors are
/// the ONNX file's (folded) plus the branch's.
#[test]
fn the_mesh_branch_leaves_the_embedded_models_detections_unchanged() {
    let meshed = Detector::default_model().unwrap();
    assert!(meshed.has_mesh());
    let onnx = weights::read_file(&common::onnx_model()).unwrap();
    let config = retinaface::weights::infer_config(&onnx);
    let folded = model::folded_tensors(&config, &onnx).unwrap();
    let embedded = weights::embedded::tensors().unwrap();
    for (name, t) in &folded {
        assert_eq!(embedded[name].data, t.data, "{name}");
    }
    let extra: Vec<&String> = embedded
        .keys()
        .filter(|k| !folded.contains_key(*k))
        .collect();
    assert!(
        extra
            .iter()
            .all(|k| k.starts_with("MeshHead.") || k.starts_with("mesh_decoder.")),
        "{extra:?}"
    );
    let plain = Detector::new(&ModelConfig::mobilenet025(), &folded).unwrap();
    assert!(!plain.has_mesh());
    let mut photos = vec![common::photo()];
    let val = common::shared().join("data/widerface/val/images");
    for event in std::fs::read_dir(&val).unwrap() {
        for f in std::fs::read_dir(event.unwrap().path()).unwrap() {
            photos.push(f.unwrap().path());
        }
    }
    photos.sort();
    assert_eq!(photos.len(), 146);
    // The WIDER FACE protocol's output (what AP is computed from).
    let opts = DetectOptions {
        threshold: 0.02,
        max_side: None,
        ..DetectOptions::default()
    };
    let mut total = 0;
    for path in &photos {
        let img = retinaface::input::load_image(path).unwrap();
        let want = plain.detect(&img, &opts).unwrap();
        // `detect` is `detect_meshes` without the meshes (one code path).
        let with_meshes = meshed.detect_meshes(&img, &opts).unwrap();
        let faces: Vec<Face> = with_meshes.iter().map(|(f, _)| *f).collect();
        assert_eq!(faces, want, "{}", path.display());
        assert!(with_meshes.iter().all(|(_, m)| m.vertices.len() == 468));
        total += want.len();
    }
    assert!(total > 1000, "{total} faces");
}

/// A resized pass with meshes: the faces are the resized photo's, mapped back, and every
/// mesh moves with its face (its landmark vertices inside the box in the photo's pixels).
#[test]
fn meshes_of_a_resized_pass_are_in_the_photos_pixels() {
    let detector = Detector::default_model().unwrap();
    let img = retinaface::input::load_image(&common::photo()).unwrap();
    let (w, h) = img.dimensions();
    let (pw, ph) = (w / 2, h / 2);
    let opts = DetectOptions::default();
    let found = detector
        .detect_meshes_resized(&img, (pw, ph), &opts)
        .unwrap();
    let small = retinaface::input::resize::resize_bilinear(&img, pw, ph);
    let (sx, sy) = (w as f32 / pw as f32, h as f32 / ph as f32);
    let want: Vec<Face> = detector
        .detect(&small, &opts)
        .unwrap()
        .iter()
        .map(|f| f.scaled(sx, sy))
        .collect();
    let faces: Vec<Face> = found.iter().map(|(f, _)| *f).collect();
    assert_eq!(faces, want);
    assert!(faces.len() >= 5, "{faces:?}");
    for (face, mesh) in &found {
        let [x1, y1, x2, y2] = face.bbox;
        for [x, y] in mesh.landmarks() {
            assert!(
                x > x1 && x < x2 && y > y1 && y < y2,
                "{:?} vs {:?}",
                [x, y],
                face.bbox
            );
        }
    }
    // At the photo's own size it is `detect_meshes`.
    let same = detector.detect_meshes_resized(&img, (w, h), &opts).unwrap();
    assert_eq!(same, detector.detect_meshes(&img, &opts).unwrap());
}

/// Parity with `retinaface_ort.py --conf 0.3` on five photos (fixtures/reference_ort.json),
/// with the tolerances of CONVENTIONS.md: every face above 0.5 on one side matched at IoU > 0.9
/// among faces above 0.499 on the other; boxes and landmarks within 0.5 px, scores within 1e-3.
#[test]
fn parity_with_onnx_runtime_reference() {
    let refs: Vec<Record> =
        serde_json::from_str(include_str!("fixtures/reference_ort.json")).unwrap();
    let detector = Detector::from_file(&common::onnx_model()).unwrap();
    let dirs = [
        "data/photos",
        "data/widerface/val/images/0--Parade",
        "data/widerface/val/images/1--Handshaking",
    ];
    let opts = DetectOptions {
        threshold: 0.3,
        ..Default::default()
    };
    let mut matched = 0;
    for r in &refs {
        let path = dirs
            .iter()
            .map(|d| common::shared().join(d).join(&r.image))
            .find(|p| p.exists())
            .unwrap();
        let img = retinaface::input::load_image(&path).unwrap();
        assert_eq!((img.width(), img.height()), (r.width, r.height));
        let ours = detector.detect(&img, &opts).unwrap();
        for (a, b, side) in [(&r.faces, &ours, "reference"), (&ours, &r.faces, "ours")] {
            for f in a.iter().filter(|f| f.score > 0.5) {
                let g = b
                    .iter()
                    .filter(|g| g.score > 0.499)
                    .max_by(|x, y| {
                        iou_plus1(&f.bbox, &x.bbox).total_cmp(&iou_plus1(&f.bbox, &y.bbox))
                    })
                    .unwrap_or_else(|| panic!("{}: {side} face {f:?} has no counterpart", r.image));
                assert!(
                    iou_plus1(&f.bbox, &g.bbox) > 0.9,
                    "{}: {side} face {f:?} unmatched",
                    r.image
                );
                for (x, y) in f.bbox.iter().zip(g.bbox) {
                    assert!(
                        (x - y).abs() <= 0.5,
                        "{}: box {:?} vs {:?}",
                        r.image,
                        f.bbox,
                        g.bbox
                    );
                }
                for (p, q) in f
                    .landmarks
                    .iter()
                    .flatten()
                    .zip(g.landmarks.iter().flatten())
                {
                    assert!(
                        (p[0] - q[0]).abs() <= 0.5 && (p[1] - q[1]).abs() <= 0.5,
                        "{}: landmarks",
                        r.image
                    );
                }
                assert!(
                    (f.score - g.score).abs() <= 1e-3,
                    "{}: score {} vs {}",
                    r.image,
                    f.score,
                    g.score
                );
                matched += 1;
            }
        }
    }
    assert_eq!(
        matched,
        2 * (6 + 5 + 18 + 21 + 3),
        "every face above 0.5 on both sides"
    );
}

#[test]
fn legacy_and_zip_checkpoints_detect_the_group_photo() {
    let img = retinaface::input::load_image(&common::photo()).unwrap();
    for f in [
        "mobilenet0.25_biubug6_layout_legacy.pth",
        "mobilenet0.25_biubug6_layout_zip.pth",
    ] {
        let detector =
            Detector::from_file(&common::shared().join("models/retinaface").join(f)).unwrap();
        let faces = detector.detect(&img, &DetectOptions::default()).unwrap();
        assert_eq!(faces.len(), 6, "{f}");
    }
}

/// The ResNet-50 configuration builds from a checkpoint of the port's names and shapes
/// (BatchNorm unfolded) and runs; no ResNet-50 file exists here, so the weights are synthetic.
#[test]
fn resnet50_builds_from_port_names_and_runs() {
    let config = ModelConfig::resnet50();
    let mut tensors = weights::NamedTensors::new();
    let mut seed = 1u32;
    for spec in model::Network::conv_specs(&config) {
        let shape = spec.weight_shape();
        let n: usize = shape.iter().product();
        let fan_in = (n / spec.cout) as f32;
        let data = (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * (6.0 / fan_in).sqrt()
            })
            .collect();
        tensors.insert(
            format!("{}.weight", spec.name),
            weights::Tensor::new(shape, data),
        );
        match &spec.bn {
            Some(bn) => {
                for (p, v) in [
                    ("weight", 1.0),
                    ("bias", 0.01),
                    ("running_mean", 0.0),
                    ("running_var", 1.0),
                ] {
                    tensors.insert(
                        format!("{bn}.{p}"),
                        weights::Tensor::new(vec![spec.cout], vec![v; spec.cout]),
                    );
                }
            }
            None => {
                tensors.insert(
                    format!("{}.bias", spec.name),
                    weights::Tensor::new(vec![spec.cout], vec![0.0; spec.cout]),
                );
            }
        }
    }
    assert!(tensors.contains_key("body.layer4.2.bn3.running_var"));
    assert!(tensors.contains_key("body.layer2.0.downsample.0.weight"));
    assert_eq!(retinaface::weights::infer_config(&tensors), config);
    let detector = Detector::new(&config, &tensors).unwrap();
    let img = image::RgbImage::from_fn(70, 50, |x, y| {
        image::Rgb([(x * 3) as u8, (y * 5) as u8, 90])
    });
    let faces = detector
        .detect(
            &img,
            &DetectOptions {
                threshold: 0.0,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(
        !faces.is_empty()
            && faces
                .iter()
                .all(|f| f.score.is_finite() && f.bbox.iter().all(|v| v.is_finite()))
    );
}
