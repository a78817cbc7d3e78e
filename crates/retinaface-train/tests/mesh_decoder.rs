//! The mesh decoder on burn agrees with the engine's, and a new branch decodes nearly the
//! canonical face.

use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use retinaface::mesh::decoder::{DecoderSpec, MeshDecoder as EngineDecoder, PREFIX};
use retinaface::mesh::hierarchy::Hierarchy;
use retinaface::weights::{NamedTensors, Tensor as HostTensor};
use retinaface_train::network::MeshDecoder;

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
        let codes: Vec<Vec<f32>> = (0..3)
            .map(|_| {
                (0..spec.latent)
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect()
            })
            .collect();
        let burn = decode_burn(&net, &codes, &device);
        let mut largest = 0f32;
        for (b, code) in codes.iter().enumerate() {
            let ours = engine.decode(code);
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
