//! Analysis by synthesis on its own: fit the branch's parameters (a fresh decoder, one code,
//! camera and light per face) to face crops by gradient descent on L_pixel. It checks that
//! the renderer and the loss can explain a real face, and draws what they make of it.

use super::loss::pixel_loss;
use super::{Renderer, Rendering};
use crate::network::MeshDecoder;
use burn::module::{Module, Param};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use retinaface::mesh::decoder::DecoderSpec;
use retinaface::mesh::Mesh;
use retinaface::weights::WeightsError;

/// The parameters being fitted.
#[derive(Module, Debug)]
struct Fit {
    decoder: MeshDecoder,
    code: Param<Tensor<2>>,
    camera: Param<Tensor<2>>,
    light: Param<Tensor<2>>,
}

impl Fit {
    fn render(&self, renderer: &Renderer, canonical: &Tensor<3>) -> Rendering {
        let raw = self.decoder.forward(self.code.val());
        let [m, n, _] = raw.dims();
        let vertices = canonical.clone().expand([m, n, 3]) + raw.clone().narrow(2, 0, 3);
        let albedo = raw.narrow(2, 3, 3) + 0.5;
        renderer.render(vertices, albedo, self.camera.val(), self.light.val())
    }
}

/// L_pixel at each step, and the renderings before and after.
#[derive(Debug, Clone)]
pub struct FitReport {
    pub losses: Vec<f32>,
    pub before: Vec<RgbImage>,
    pub after: Vec<RgbImage>,
}

/// Fit `faces` crops (`[faces, size, size, 3]` in [0, 1], as [`super::loss::crops`] makes
/// them) with Adam at `lr` for `steps` steps, on `device` (an autodiff one).
pub fn fit_crops(
    targets: &[f32],
    faces: usize,
    size: usize,
    steps: usize,
    lr: f64,
    seed: u64,
    device: &Device,
) -> Result<FitReport, WeightsError> {
    let mesh = Mesh::canonical();
    let renderer = Renderer::new(mesh, size, device);
    let flat: Vec<f32> = mesh.vertices.iter().flatten().copied().collect();
    let canonical = Tensor::<3>::from_data(TensorData::new(flat, vec![1, mesh.len(), 3]), device);
    let spec = DecoderSpec::default();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let code: Vec<f32> = (0..faces * spec.latent)
        .map(|_| rng.random_range(-0.1..0.1))
        .collect();
    let mut fit = Fit {
        decoder: MeshDecoder::new(&spec, None, device, seed)?,
        code: Param::from_tensor(Tensor::from_data(
            TensorData::new(code, vec![faces, spec.latent]),
            device,
        )),
        camera: Param::from_tensor(Tensor::zeros([faces, super::CAMERA_PARAMS], device)),
        light: Param::from_tensor(Tensor::zeros([faces, super::LIGHT_PARAMS], device)),
    };
    let before = fit.render(&renderer, &canonical).images(faces, size);
    let mut optim = AdamConfig::new().init();
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        let rendering = fit.render(&renderer, &canonical);
        let loss = pixel_loss(&rendering, targets, size);
        losses.push(
            loss.clone()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap_or_default()[0],
        );
        let grads = GradientsParams::from_grads(loss.backward(), &fit);
        fit = optim.step(lr, fit, grads);
    }
    let after = fit.render(&renderer, &canonical).images(faces, size);
    Ok(FitReport {
        losses,
        before,
        after,
    })
}
