//! The mesh decoder on burn tensors: the layers [`retinaface::mesh::decoder::DecoderSpec`]
//! describes, run as dense products (the largest operator is the 468 × 468 scaled
//! Laplacian), named as the engine's [`retinaface::mesh::decoder::MeshDecoder`] reads them.

use super::layers::{take, tensor, values};
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use retinaface::mesh::chebyshev::scaled_laplacian;
use retinaface::mesh::decoder::{DecoderSpec, LayerShape, PREFIX};
use retinaface::mesh::hierarchy::Hierarchy;
use retinaface::weights::{NamedTensors, Tensor as HostTensor, WeightsError};

/// The decoder's parameters and its constant operators.
#[derive(Module, Debug)]
pub struct MeshDecoder {
    /// `[out, in]`.
    pub fc_weight: Param<Tensor<2>>,
    pub fc_bias: Param<Tensor<1>>,
    /// `[K, in, out]` per Chebyshev layer, coarsest first, the output layer last.
    pub cheb_weight: Vec<Param<Tensor<3>>>,
    pub cheb_bias: Vec<Param<Tensor<1>>>,
    /// Dense L̃ per level, `[n, n]`.
    #[module(skip)]
    laplacians: Vec<Tensor<2>>,
    /// Dense up-sampling from level l + 1 to level l, `[n_l, n_(l+1)]`.
    #[module(skip)]
    upsampling: Vec<Tensor<2>>,
    /// The description's layers, `fc` first.
    #[module(skip)]
    layers: Vec<LayerShape>,
}

impl MeshDecoder {
    /// From `tensors` (the engine's names), or drawn from `seed` when `None`: Xavier-uniform
    /// layers, the output layer at a thousandth of that, biases zero, so a new branch decodes
    /// nearly the canonical face in grey.
    pub fn new(
        spec: &DecoderSpec,
        tensors: Option<&NamedTensors>,
        device: &Device,
        seed: u64,
    ) -> Result<Self, WeightsError> {
        let hierarchy = Hierarchy::canonical();
        spec.validate(hierarchy).map_err(WeightsError::Mismatch)?;
        let layers = spec.layers(hierarchy);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let last = layers.len() - 1;
        let mut load = |k: usize, l: &LayerShape| -> Result<(Vec<f32>, Vec<f32>), WeightsError> {
            match tensors {
                Some(t) => Ok((
                    take(t, &format!("{PREFIX}.{}.weight", l.name), &l.weight)?,
                    take(t, &format!("{PREFIX}.{}.bias", l.name), &l.bias)?,
                )),
                None => {
                    // Fan-in and fan-out of one output value.
                    let (fan_in, fan_out) = match l.weight[..] {
                        [out, inp] => (inp, out),
                        [k, inp, out] => (k * inp, out),
                        _ => (1, 1),
                    };
                    let mut bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
                    if k == last {
                        bound *= 1e-3;
                    }
                    let n: usize = l.weight.iter().product();
                    let w = (0..n)
                        .map(|_| rng.random_range(-bound..bound) as f32)
                        .collect();
                    Ok((w, vec![0.0; l.bias[0]]))
                }
            }
        };
        let (w, b) = load(0, &layers[0])?;
        let fc_weight = Param::from_tensor(tensor(w, layers[0].weight.clone(), device));
        let fc_bias = Param::from_tensor(tensor(b, layers[0].bias.clone(), device));
        let mut cheb_weight = Vec::new();
        let mut cheb_bias = Vec::new();
        for (k, l) in layers.iter().enumerate().skip(1) {
            let (w, b) = load(k, l)?;
            cheb_weight.push(Param::from_tensor(tensor(w, l.weight.clone(), device)));
            cheb_bias.push(Param::from_tensor(tensor(b, l.bias.clone(), device)));
        }
        let laplacians = hierarchy
            .levels
            .iter()
            .map(|m| {
                let l = scaled_laplacian(&m.adjacency()).0;
                tensor(l.dense(), vec![l.n, l.n], device)
            })
            .collect();
        let upsampling = hierarchy
            .up
            .iter()
            .enumerate()
            .map(|(l, placements)| {
                let coarse = hierarchy.levels[l + 1].len();
                let mut m = vec![0f32; placements.len() * coarse];
                for (i, p) in placements.iter().enumerate() {
                    for &(v, w) in p {
                        m[i * coarse + v as usize] += w;
                    }
                }
                tensor(m, vec![placements.len(), coarse], device)
            })
            .collect();
        Ok(MeshDecoder {
            fc_weight,
            fc_bias,
            cheb_weight,
            cheb_bias,
            laplacians,
            upsampling,
            layers,
        })
    }

    /// Codes `[B, latent]` → `[B, 468, 6]`: position offsets (cm) and colours less ½.
    pub fn forward(&self, code: Tensor<2>) -> Tensor<3> {
        let batch = code.dims()[0];
        // The fully connected layer's output, read as the coarsest level's vertices × the
        // first Chebyshev layer's input channels.
        let coarsest = self.laplacians[self.layers[0].level].dims()[0];
        let channels = self.layers[1].weight[1];
        let x = code.matmul(self.fc_weight.val().transpose()) + self.fc_bias.val().unsqueeze::<2>();
        let mut x: Tensor<3> = x.reshape([batch, coarsest, channels]);
        for ((w, b), layer) in self
            .cheb_weight
            .iter()
            .zip(&self.cheb_bias)
            .zip(&self.layers[1..])
        {
            if layer.upsample {
                x = apply(&self.upsampling[layer.level], x);
            }
            x = chebyshev(&self.laplacians[layer.level], x, w.val(), b.val());
            if layer.elu {
                x = elu(x);
            }
        }
        x
    }

    /// The weights under the engine's names.
    pub fn export(&self) -> Result<NamedTensors, WeightsError> {
        let layers = &self.layers;
        let mut out = NamedTensors::new();
        let mut put = |name: &str, shape: &[usize], data: Vec<f32>| {
            out.insert(
                format!("{PREFIX}.{name}"),
                HostTensor::new(shape.to_vec(), data),
            );
        };
        put(
            "fc.weight",
            &layers[0].weight,
            values(self.fc_weight.val())?,
        );
        put("fc.bias", &layers[0].bias, values(self.fc_bias.val())?);
        for (l, (w, b)) in layers[1..]
            .iter()
            .zip(self.cheb_weight.iter().zip(&self.cheb_bias))
        {
            put(&format!("{}.weight", l.name), &l.weight, values(w.val())?);
            put(&format!("{}.bias", l.name), &l.bias, values(b.val())?);
        }
        Ok(out)
    }
}

/// `m · x` for every item of the batch: `[n, m] × [B, m, C]` → `[B, n, C]`.
fn apply(m: &Tensor<2>, x: Tensor<3>) -> Tensor<3> {
    let [batch, rows, channels] = x.dims();
    let n = m.dims()[0];
    // As one product: [n, m] × [m, B·C].
    let flat = x.swap_dims(0, 1).reshape([rows, batch * channels]);
    m.clone()
        .matmul(flat)
        .reshape([n, batch, channels])
        .swap_dims(0, 1)
}

/// Σ_k T_k(L̃) X Θ_k + b.
fn chebyshev(l: &Tensor<2>, x: Tensor<3>, weight: Tensor<3>, bias: Tensor<1>) -> Tensor<3> {
    let [batch, n, inputs] = x.dims();
    let [order, _, outputs] = weight.dims();
    let theta = |k: usize| -> Tensor<2> {
        weight
            .clone()
            .slice([k..k + 1, 0..inputs, 0..outputs])
            .reshape([inputs, outputs])
    };
    let project = |t: &Tensor<3>, k: usize| -> Tensor<3> {
        t.clone()
            .reshape([batch * n, inputs])
            .matmul(theta(k))
            .reshape([batch, n, outputs])
    };
    let mut y = project(&x, 0) + bias.reshape([1, 1, outputs]);
    let mut previous = x.clone();
    let mut current = x;
    for k in 1..order {
        let next = if k == 1 {
            apply(l, current.clone())
        } else {
            apply(l, current.clone()) * 2.0 - previous
        };
        y = y + project(&next, k);
        previous = current;
        current = next;
    }
    y
}

/// ELU, α = 1.
fn elu(x: Tensor<3>) -> Tensor<3> {
    x.clone().clamp_min(0.0) + (x.clamp_max(0.0).exp() - 1.0)
}
