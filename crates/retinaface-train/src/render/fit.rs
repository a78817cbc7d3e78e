//! Analysis by synthesis on its own: fit the branch's parameters (a fresh decoder, one code,
//! camera and light per face) to face crops by gradient descent on L_pixel. It checks that
//! the renderer and the loss can explain a real face, and draws what they make of it.

use super::loss::{pixel_loss, BranchTerm};
use super::Rendering;
use crate::network::MeshDecoder;
use burn::module::{Module, Param};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use retinaface::mesh::decoder::DecoderSpec;
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
    fn render(&self, term: &BranchTerm) -> Rendering {
        let raw = self.decoder.forward(self.code.val());
        term.render_decoded(raw, self.camera.val(), self.light.val())
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
    let term = BranchTerm::new(size, device);
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
    let before = fit.render(&term).images(faces, size);
    let mut optim = AdamConfig::new().init();
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        let rendering = fit.render(&term);
        let loss = pixel_loss(&rendering, targets, size);
        losses.push(loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &fit);
        fit = optim.step(lr, fit, grads);
    }
    let after = fit.render(&term).images(faces, size);
    Ok(FitReport {
        losses,
        before,
        after,
    })
}
