//! The mesh branch on burn: the decoder agrees with the engine's and a new branch decodes
//! nearly the canonical face; the renderer draws exact pixels and barycentric weights on a
//! hand-made triangle, frames the canonical face with its default camera, and its gradients
//! agree with finite differences; fitting the branch's parameters to faces of a photo
//! lowers L_pixel; the engine's branch at inference gives burn's parameters and the
//! renderer's placement. (One test binary: each links burn.)

use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use retinaface::mesh::decoder::{DecoderSpec, MeshDecoder as EngineDecoder, PREFIX};
use retinaface::mesh::hierarchy::Hierarchy;
use retinaface::mesh::Mesh;
use retinaface::weights::{NamedTensors, Tensor as HostTensor};
use retinaface_train::network::MeshDecoder;
use retinaface_train::render::fit::fit_crops;
use retinaface_train::render::loss::crops;
use retinaface_train::render::raster::Fragment;
use retinaface_train::render::Renderer;

/// Weights of every layer drawn uniformly in ±`scale`.
fn random_weights(spec: &DecoderSpec, scale: f32, rng: &mut ChaCha8Rng) -> NamedTensors {
    let mut tensors = NamedTensors::new();
    for l in spec.layers(Hierarchy::canonical()) {
        for (suffix, shape) in [("weight", &l.weight), ("bias", &l.bias)] {
            let n = shape.iter().product();
            let data = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
            tensors.insert(
                format!("{PREFIX}.{}.{suffix}", l.name),
                HostTensor::new(shape.clone(), data),
            );
        }
    }
    tensors
}

fn decode_burn(net: &MeshDecoder, codes: &[Vec<f32>], device: &Device) -> Vec<f32> {
    let latent = codes[0].len();
    let flat: Vec<f32> = codes.iter().flatten().copied().collect();
    let x: Tensor<2> = Tensor::from_data(TensorData::new(flat, vec![codes.len(), latent]), device);
    let y = net.forward(x);
    assert_eq!(y.dims(), [codes.len(), 468, 6]);
    y.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

#[test]
fn burn_and_the_engine_decode_the_same_meshes() {
    let device = Device::flex();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for spec in [
        DecoderSpec::default(),
        DecoderSpec {
            latent: 16,
            channels: vec![3, 5, 7],
            order: 2,
        },
        DecoderSpec {
            latent: 8,
            channels: vec![4, 4, 4],
            order: 1,
        },
    ] {
        // Weights scaled so activations stay of order one through the layers.
        let tensors = random_weights(&spec, 0.15, &mut rng);
        let net = MeshDecoder::new(&spec, Some(&tensors), &device, 0).unwrap();
        assert_eq!(
            net.export().unwrap(),
            tensors,
            "export returns the loaded weights"
        );
        let engine = EngineDecoder::new(&spec, &tensors).unwrap();
        // More faces than one decoding pass takes (FACES_PER_PASS = 8).
        let codes: Vec<Vec<f32>> = (0..11)
            .map(|_| {
                (0..spec.latent)
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect()
            })
            .collect();
        let burn = decode_burn(&net, &codes, &device);
        let mut largest = 0f32;
        // All faces in one pass, as the detector decodes them; each alone agrees with it.
        let together = engine.decode_many(&codes.iter().map(Vec::as_slice).collect::<Vec<_>>());
        for (b, code) in codes.iter().enumerate() {
            let ours = &together[b];
            for (a, t) in engine.decode(code).iter().zip(ours) {
                assert!(
                    (a - t).abs() <= 1e-6 * t.abs().max(1.0),
                    "{spec:?}: {a} vs {t}"
                );
            }
            let theirs = &burn[b * 468 * 6..(b + 1) * 468 * 6];
            let scale = ours.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(
                scale > 1e-2,
                "{spec:?}: outputs too small to compare ({scale})"
            );
            for (a, t) in ours.iter().zip(theirs) {
                assert!(
                    (a - t).abs() <= 1e-4 * scale.max(1.0),
                    "{spec:?}: {a} vs {t}"
                );
            }
            largest = largest.max(scale);
        }
        assert!(largest.is_finite());
    }
}

#[test]
fn a_new_branch_decodes_nearly_the_canonical_face_in_grey() {
    let device = Device::flex();
    let spec = DecoderSpec::default();
    let net = MeshDecoder::new(&spec, None, &device, 11).unwrap();
    let codes = vec![vec![1.0f32; 128], vec![-1.0f32; 128]];
    let out = decode_burn(&net, &codes, &device);
    let largest = out.iter().fold(0f32, |m, v| m.max(v.abs()));
    // Offsets below a tenth of a millimetre and colours within 0.001 of grey.
    assert!(largest < 1e-2 && largest > 0.0, "{largest}");
    // The engine runs the exported scratch weights the same way.
    let engine = EngineDecoder::new(&spec, &net.export().unwrap()).unwrap();
    for (a, b) in engine.decode(&codes[0]).iter().zip(&out[..468 * 6]) {
        assert!((a - b).abs() < 1e-6);
    }
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap_or_default()
}

fn tensor<const D: usize>(data: Vec<f32>, shape: Vec<usize>, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

#[test]
fn a_triangle_with_primary_colours_renders_its_barycentric_weights() {
    let device = Device::flex();
    let mesh = Mesh {
        vertices: vec![[0.0; 3]; 3],
        triangles: vec![[0, 1, 2]],
    };
    let renderer = Renderer::new(&mesh, 12, &device);
    // Screen corners (x, y, depth) and red, green, blue corners.
    let corners = [[1.5f32, 2.0, 1.0], [10.0, 3.0, 1.0], [4.0, 11.0, 1.0]];
    let screen = tensor(
        corners.iter().flatten().copied().collect(),
        vec![1, 3, 3],
        &device,
    );
    let colours = tensor(
        vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        vec![1, 3, 3],
        &device,
    );
    let drawn = renderer.draw(screen, colours);
    let got = host(drawn.colours);
    let mut expected_pixels = Vec::new();
    for y in 0..12 {
        for x in 0..12 {
            let p = [x as f32 + 0.5, y as f32 + 0.5];
            let [a, b, c] = corners.map(|q| [q[0], q[1]]);
            let area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
            let w = |u: [f32; 2], v: [f32; 2]| {
                ((u[0] - p[0]) * (v[1] - p[1]) - (u[1] - p[1]) * (v[0] - p[0])) / area
            };
            let weights = [w(b, c), w(c, a), w(a, b)];
            if weights.iter().all(|&v| v >= 0.0) {
                expected_pixels.push((y * 12 + x, weights));
            }
        }
    }
    assert_eq!(drawn.fragments.len(), expected_pixels.len());
    assert!(expected_pixels.len() > 30);
    for ((f, rgb), (pixel, weights)) in drawn
        .fragments
        .iter()
        .zip(got.chunks_exact(3))
        .zip(&expected_pixels)
    {
        assert_eq!((f.pixel, f.triangle, f.image), (*pixel as u32, 0, 0));
        for (a, b) in rgb.iter().zip(weights) {
            assert!(
                (a - b).abs() < 1e-6,
                "pixel {pixel}: {rgb:?} vs {weights:?}"
            );
        }
        assert!((rgb.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}

#[test]
fn the_default_camera_frames_a_frontal_lit_face() {
    let device = Device::flex();
    let mesh = Mesh::canonical();
    let renderer = Renderer::new(mesh, 64, &device);
    let vertices = tensor(
        mesh.vertices.iter().flatten().copied().collect(),
        vec![1, 468, 3],
        &device,
    );
    let albedo = Tensor::<3>::ones([1, 468, 3], &device) * 0.5;
    let rendering = renderer.render(
        vertices.clone(),
        albedo,
        Tensor::zeros([1, 7], &device),
        Tensor::zeros([1, 9], &device),
    );
    let rows: Vec<u32> = rendering.fragments.iter().map(|f| f.pixel / 64).collect();
    let cols: Vec<u32> = rendering.fragments.iter().map(|f| f.pixel % 64).collect();
    let (top, bottom) = (rows.iter().min().unwrap(), rows.iter().max().unwrap());
    let (left, right) = (cols.iter().min().unwrap(), cols.iter().max().unwrap());
    // 90 % of the height at the nominal distance; the nose, nearer, makes it a little more.
    let height = bottom - top + 1;
    assert!((55..=62).contains(&height), "face height {height} of 64");
    assert!(((left + right) as i32 - 63).abs() <= 2 && ((top + bottom) as i32 - 63).abs() <= 6);
    // Lit from the camera: every visible pixel between the ambient term and full light.
    let colours = host(rendering.colours);
    assert!(colours.iter().all(|&c| (0.25..=0.5 + 1e-6).contains(&c)));
    // Normals face the camera (camera space: toward −z) over most of the face, and the nose
    // tip's points at it, tilted down a little.
    let (points, _) = renderer.to_camera(vertices, Tensor::zeros([1, 7], &device));
    let normals = host(renderer.normals(points));
    let facing = normals.chunks_exact(3).filter(|n| n[2] < 0.0).count();
    assert!(facing > 440, "{facing} of 468 normals face the camera");
    assert!(
        normals[3 + 2] < -0.9,
        "nose tip normal {:?}",
        &normals[3..6]
    );
}

/// Σ r · colour over `fragments`, for parameters given as host vectors.
struct Problem {
    renderer: Renderer,
    fragments: Vec<Fragment>,
    weights: Vec<f32>,
}

impl Problem {
    fn loss(&self, p: &[Vec<f32>; 4], device: &Device) -> Tensor<1> {
        let m = p[2].len() / 7;
        let v = tensor(p[0].clone(), vec![m, 468, 3], device);
        let albedo = tensor(p[1].clone(), vec![m, 468, 3], device);
        let camera = tensor(p[2].clone(), vec![m, 7], device);
        let light = tensor(p[3].clone(), vec![m, 9], device);
        self.loss_of(v, albedo, camera, light)
    }

    fn loss_of(
        &self,
        v: Tensor<3>,
        albedo: Tensor<3>,
        camera: Tensor<2>,
        light: Tensor<2>,
    ) -> Tensor<1> {
        let device = v.device();
        let (points, focal) = self.renderer.to_camera(v, camera);
        let screen = self.renderer.project(points.clone(), focal);
        let colours = self.renderer.shade(points, albedo, light);
        let drawn = self.renderer.interpolate(screen, colours, &self.fragments);
        let r = tensor(self.weights.clone(), vec![self.fragments.len(), 3], &device);
        (drawn * r).sum()
    }
}

#[test]
fn gradients_match_finite_differences() {
    let device = Device::flex().autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mesh = Mesh::canonical();
    let renderer = Renderer::new(mesh, 32, &device);
    // Two renderings: a face turned and shifted a little, lit from the side; its mesh
    // and albedo perturbed.
    let m = 2;
    let mut params: [Vec<f32>; 4] = [
        (0..m)
            .flat_map(|_| mesh.vertices.iter().flatten().copied().collect::<Vec<_>>())
            .map(|v| v + rng.random_range(-0.2..0.2))
            .collect(),
        (0..m * 468 * 3)
            .map(|_| rng.random_range(0.3..0.7))
            .collect(),
        vec![
            0.1, -0.05, 0.2, 0.1, -0.2, 0.05, 0.1, -0.1, 0.05, -0.3, -0.1, 0.15, 0.05, -0.05,
        ],
        vec![
            2.0, -1.0, 0.5, 0.1, 0.0, -0.1, 0.0, 0.1, 0.0, //
            -1.5, 1.0, 0.0, 0.0, 0.2, 0.0, -0.1, 0.0, 0.1,
        ],
    ];
    let first = renderer.render(
        tensor(params[0].clone(), vec![m, 468, 3], &device),
        tensor(params[1].clone(), vec![m, 468, 3], &device),
        tensor(params[2].clone(), vec![m, 7], &device),
        tensor(params[3].clone(), vec![m, 9], &device),
    );
    assert!(first.fragments.iter().any(|f| f.image == 1) && first.fragments.len() > 800);
    let weights = (0..first.fragments.len() * 3)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let problem = Problem {
        renderer,
        fragments: first.fragments,
        weights,
    };

    let shapes = [vec![m, 468, 3], vec![m, 468, 3], vec![m, 7], vec![m, 9]];
    let v = tensor::<3>(params[0].clone(), shapes[0].clone(), &device).require_grad();
    let a = tensor::<3>(params[1].clone(), shapes[1].clone(), &device).require_grad();
    let c = tensor::<2>(params[2].clone(), shapes[2].clone(), &device).require_grad();
    let l = tensor::<2>(params[3].clone(), shapes[3].clone(), &device).require_grad();
    let grads = problem
        .loss_of(v.clone(), a.clone(), c.clone(), l.clone())
        .backward();
    let analytic = [
        host(v.grad(&grads).unwrap()),
        host(a.grad(&grads).unwrap()),
        host(c.grad(&grads).unwrap()),
        host(l.grad(&grads).unwrap()),
    ];
    let names = ["vertex positions", "colours", "camera", "light"];
    for (k, name) in names.iter().enumerate() {
        let g = &analytic[k];
        let scale = g.iter().fold(0f32, |s, x| s.max(x.abs()));
        assert!(scale > 0.0, "{name}: no gradient");
        // The entries with the largest gradients (all of them for camera and light).
        let mut order: Vec<usize> = (0..g.len()).collect();
        order.sort_by(|&i, &j| g[j].abs().total_cmp(&g[i].abs()));
        // Colours enter linearly; positions, camera and light through thin triangles'
        // barycentric weights and normals, curved at the centimetre scale.
        let h = if k == 1 { 0.05 } else { 1e-3 };
        for &i in order.iter().take(12) {
            let original = params[k][i];
            params[k][i] = original + h;
            let up = host(problem.loss(&params, &device))[0];
            params[k][i] = original - h;
            let down = host(problem.loss(&params, &device))[0];
            params[k][i] = original;
            let fd = (up - down) / (2.0 * h);
            let error = (fd - g[i]).abs() / g[i].abs().max(fd.abs()).max(1e-2 * scale);
            assert!(
                error < 1e-2,
                "{name}[{i}]: autodiff {} vs finite differences {fd}",
                g[i]
            );
        }
    }
}

#[test]
fn fitting_the_branch_to_faces_of_a_photo_lowers_the_pixel_loss() {
    let device = Device::flex().autodiff();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/photos/t1.jpg");
    let image = retinaface::input::load_image(&path).unwrap();
    let detector = retinaface::Detector::default_model().unwrap();
    let faces = detector
        .detect(&image, &retinaface::DetectOptions::default())
        .unwrap();
    let boxes: Vec<[f32; 4]> = faces.iter().take(3).map(|f| f.bbox).collect();
    let size = 32;
    let targets = crops(&image, &boxes, size);
    let report = fit_crops(&targets, boxes.len(), size, 60, 0.01, 9, &device).unwrap();
    let (first, last) = (report.losses[0], report.losses[report.losses.len() - 1]);
    assert!(
        first.is_finite() && last < 0.7 * first,
        "L_pixel {first} -> {last}: {:?}",
        report.losses
    );
    // The pictures: the faces fill most of their crops before and after.
    for img in report.before.iter().chain(&report.after) {
        let covered = img.pixels().filter(|p| p.0 != [0, 0, 0]).count();
        assert!(covered > size * size / 2, "{covered} pixels drawn");
    }
}

fn head_values(out: &Option<Tensor<3>>) -> Vec<f32> {
    host(out.clone().expect("the network has the branch"))
}

#[test]
fn a_network_with_the_mesh_branch_predicts_small_parameters_for_every_anchor() {
    use retinaface::config::ModelConfig;
    use retinaface_train::network::{export_folded, export_unfolded, Model};
    let device = Device::flex();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let input: Vec<f32> = (0..3 * 96 * 128)
        .map(|_| rng.random_range(-100.0..100.0))
        .collect();
    let x = || tensor::<4>(input.clone(), vec![1, 3, 96, 128], &device);
    for config in [
        ModelConfig::mobilenet025().with_mesh(),
        ModelConfig::mobilenet025_paper().with_mesh(),
    ] {
        let model = Model::scratch(&config, &device, 4).unwrap();
        let out = model.net.forward(x());
        let anchors: usize = out.levels.iter().sum();
        let mesh = out.mesh.clone().unwrap();
        assert_eq!(mesh.dims(), [1, anchors, 144]);
        // Camera and light start near zero: the canonical face, frontal, lit from the camera.
        let values = head_values(&out.mesh);
        let largest = values
            .chunks_exact(144)
            .flat_map(|p| p[128..].iter())
            .fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            largest < 0.5,
            "{}: largest camera or light value {largest}",
            config.summary()
        );
        // The branch goes through the weight files: exported and read back, the same outputs.
        let back =
            Model::from_tensors(&config, &export_unfolded(&model).unwrap(), &device).unwrap();
        assert_eq!(head_values(&back.net.forward(x()).mesh), values);
        // The detector's file (folded) keeps the decoder: the engine decodes with it, and
        // detects with the network as it would without the branch.
        let folded = export_folded(&model).unwrap();
        let decoder = EngineDecoder::new(config.mesh.as_ref().unwrap(), &folded).unwrap();
        assert_eq!(decoder.decode(&[0.0; 128]).len(), 468 * 6);
        let detector = retinaface::Detector::new(&config, &folded).unwrap();
        let image = image::RgbImage::from_pixel(128, 96, image::Rgb([90, 120, 150]));
        assert!(detector
            .detect(&image, &retinaface::DetectOptions::default())
            .is_ok());
    }
    // Added to the port's trained model, the branch leaves its detections as they were.
    let port = retinaface::weights::embedded::tensors().unwrap();
    let plain = Model::from_tensors(&ModelConfig::mobilenet025(), &port, &device).unwrap();
    let meshed =
        Model::from_tensors(&ModelConfig::mobilenet025().with_mesh(), &port, &device).unwrap();
    let (a, b) = (plain.net.forward(x()), meshed.net.forward(x()));
    assert_eq!(host(a.class), host(b.class));
    assert_eq!(host(a.boxes), host(b.boxes));
    assert!(a.mesh.is_none() && b.mesh.is_some());
}

/// The engine's branch at inference against burn's: the parameters of every anchor, from the
/// context features the engine keeps (fused plan and interpreter), and the mesh its camera
/// places against the renderer's projection of the same decoded mesh.
#[test]
fn the_engine_evaluates_the_branch_as_burn_does() {
    use retinaface::config::ModelConfig;
    use retinaface::engine::Feature;
    use retinaface_train::network::{export_folded, Model};
    let device = Device::flex();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let (w, h) = (128u32, 96u32);
    let image = image::RgbImage::from_fn(w, h, |_, _| {
        image::Rgb([rng.random(), rng.random(), rng.random()])
    });
    for config in [
        ModelConfig::mobilenet025().with_mesh(),
        ModelConfig::mobilenet025_paper().with_mesh(),
    ] {
        let model = Model::scratch(&config, &device, 6).unwrap();
        let mut input = Feature::default();
        retinaface::input::to_tensor_into(&image, config.mean_bgr, &mut input);
        // NHWC → NCHW for burn.
        let (hh, ww) = (h as usize, w as usize);
        let mut nchw = vec![0f32; 3 * hh * ww];
        for (i, px) in input.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                nchw[c * hh * ww + i] = px[c];
            }
        }
        let out = model
            .net
            .forward(tensor::<4>(nchw, vec![1, 3, hh, ww], &device));
        let want = head_values(&out.mesh);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let detector = retinaface::Detector::new(&config, &export_folded(&model).unwrap()).unwrap();
        let branch = detector.network().mesh().expect("the branch loads");
        let mut checked = 0;
        detector.forward_with(&input, |heads| {
            let mut offset = 0;
            for (level, &count) in out.levels.iter().enumerate() {
                let context = heads.context[level].expect("context kept for the branch");
                let a = config.anchors.per_cell(level);
                let c = branch.channels();
                assert_eq!(context.h * context.w * a, count);
                for cell in 0..context.h * context.w {
                    for anchor in 0..a {
                        let features = &context.data[cell * c..(cell + 1) * c];
                        let ours = branch.params(level, anchor, features);
                        let row = offset + cell * a + anchor;
                        let theirs = &want[row * 144..(row + 1) * 144];
                        for (x, y) in ours.iter().zip(theirs) {
                            assert!((x - y).abs() <= 1e-4 * scale, "{x} vs {y}");
                        }
                        checked += 1;
                    }
                }
                offset += count;
            }
        });
        assert_eq!(
            checked,
            out.levels.iter().sum::<usize>(),
            "{}",
            config.summary()
        );
    }

    // Placement: random codes, cameras and a 64-pixel crop centred at (32, 32), so the
    // engine's image pixels are the renderer's crop pixels.
    let spec = DecoderSpec::default();
    let tensors = random_weights(&spec, 0.05, &mut rng);
    let burn_decoder = MeshDecoder::new(&spec, Some(&tensors), &device, 0).unwrap();
    let renderer = Renderer::new(Mesh::canonical(), 64, &device);
    let branch_tensors = {
        let mut t = tensors.clone();
        let config = ModelConfig::mobilenet025().with_mesh();
        let graph = retinaface::arch::Graph::new(&config);
        let b = graph.mesh.clone().unwrap();
        for head in &b.heads {
            t.insert(
                format!("{}.weight", head.name),
                HostTensor::new(
                    head.weight_shape(),
                    vec![0.0; head.weight_shape().iter().product()],
                ),
            );
            t.insert(
                format!("{}.bias", head.name),
                HostTensor::new(vec![head.cout], vec![0.0; head.cout]),
            );
        }
        (b, t)
    };
    let branch =
        retinaface::mesh::branch::BranchNet::new(&branch_tensors.0, &branch_tensors.1).unwrap();
    for _ in 0..3 {
        let mut params: Vec<f32> = (0..128).map(|_| rng.random_range(-1.0..1.0)).collect();
        params
            .extend([0.1, -0.2, 0.3, 0.2, -0.4, 0.1, 0.2].map(|v| v * rng.random_range(0.5..1.5)));
        params.extend([0.0; 9]);
        let mesh = branch.face_mesh(&params, [32.0, 32.0, 64.0, 64.0]);
        // The renderer's screen positions of the same decoded mesh.
        let code = tensor::<2>(params[..128].to_vec(), vec![1, 128], &device);
        let raw = burn_decoder.forward(code);
        let canonical: Vec<f32> = Mesh::canonical()
            .vertices
            .iter()
            .flatten()
            .copied()
            .collect();
        let vertices = tensor::<3>(canonical, vec![1, 468, 3], &device) + raw.narrow(2, 0, 3);
        let camera = tensor::<2>(params[128..135].to_vec(), vec![1, 7], &device);
        let (points, focal) = renderer.to_camera(vertices, camera);
        let screen = host(renderer.project(points, focal.clone()));
        let f = host(focal)[0];
        let centre = 50.0 + 10.0 * params[130];
        for (v, s) in mesh.vertices.iter().zip(screen.chunks_exact(3)) {
            assert!(
                (v[0] - s[0]).abs() < 1e-3 && (v[1] - s[1]).abs() < 1e-3,
                "{v:?} vs {s:?}"
            );
            let depth = (s[2] - centre) * f / centre;
            assert!((v[2] - depth).abs() < 1e-3, "{} vs {depth}", v[2]);
        }
    }
}
