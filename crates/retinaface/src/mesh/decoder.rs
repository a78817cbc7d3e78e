//! The mesh decoder of the dense regression branch (SPEC §1.7, COMA's decoder): a
//! per-face code P_ST → a fully connected layer to the coarsest level's features → for
//! each finer level, up-sampling and a Chebyshev convolution with ELU → a last Chebyshev
//! convolution to six values per vertex: the offset of its position from the canonical
//! face (x, y, z, cm) and its colour less mid-grey (r, g, b). Zero output is the canonical
//! face in grey.
//!
//! The layers are described here once ([`DecoderSpec::layers`]); the engine runs them with
//! [`MeshDecoder`], the trainer instantiates the same list on burn tensors.

use super::chebyshev::{clenshaw_into, scaled_laplacian, ChebConv, ClenshawBuffers, Sparse};
use super::hierarchy::Hierarchy;
use crate::engine::{Activation, Conv2d, Feature};
use crate::weights::{NamedTensors, WeightsError};

/// The prefix of the decoder's tensors in a weights file.
pub const PREFIX: &str = "mesh_decoder";

/// Values per output vertex: position offset and colour.
pub const OUTPUTS: usize = 6;

/// The decoder's sizes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderSpec {
    /// The length of P_ST.
    pub latent: usize,
    /// Channels per level, finest first (one per level of the hierarchy).
    pub channels: Vec<usize>,
    /// The Chebyshev order K.
    pub order: usize,
}

impl Default for DecoderSpec {
    /// SPEC §1.7: a 128-long code, K = 6; channels 16, 32, 64 on the 468-, 117- and
    /// 30-vertex levels.
    fn default() -> Self {
        DecoderSpec {
            latent: 128,
            channels: vec![16, 32, 64],
            order: 6,
        }
    }
}

/// One layer of the description: its name (without the prefix), weight and bias shapes, and
/// where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerShape {
    pub name: String,
    pub weight: Vec<usize>,
    pub bias: Vec<usize>,
    /// The hierarchy level it works on (its output's, and a Chebyshev layer's Laplacian).
    pub level: usize,
    /// Whether its input is first up-sampled to `level` from the level above.
    pub upsample: bool,
    /// Whether ELU follows it.
    pub elu: bool,
}

impl DecoderSpec {
    /// The layers in order: `fc` (weight `[out, in]`, PyTorch's Linear layout), then
    /// `cheb{i}` (weight `[K, in, out]`) from the coarsest up-sampled level to the output.
    pub fn layers(&self, hierarchy: &Hierarchy) -> Vec<LayerShape> {
        let levels = self.channels.len();
        let coarsest = hierarchy.levels[levels - 1].len();
        let mut layers = vec![LayerShape {
            name: "fc".into(),
            weight: vec![coarsest * self.channels[levels - 1], self.latent],
            bias: vec![coarsest * self.channels[levels - 1]],
            level: levels - 1,
            upsample: false,
            elu: false,
        }];
        // Up-sampled to level l, then a convolution to that level's channels.
        for l in (0..levels - 1).rev() {
            layers.push(LayerShape {
                name: format!("cheb{}", layers.len() - 1),
                weight: vec![self.order, self.channels[l + 1], self.channels[l]],
                bias: vec![self.channels[l]],
                level: l,
                upsample: true,
                elu: true,
            });
        }
        layers.push(LayerShape {
            name: format!("cheb{}", layers.len() - 1),
            weight: vec![self.order, self.channels[0], OUTPUTS],
            bias: vec![OUTPUTS],
            level: 0,
            upsample: false,
            elu: false,
        });
        layers
    }

    /// Check the sizes against a hierarchy.
    pub fn validate(&self, hierarchy: &Hierarchy) -> Result<(), String> {
        if self.channels.len() != hierarchy.levels.len() {
            return Err(format!(
                "{} channel counts for a hierarchy of {} levels",
                self.channels.len(),
                hierarchy.levels.len()
            ));
        }
        if self.latent == 0 || self.order == 0 || self.channels.contains(&0) {
            return Err(
                "the code length, the order and every channel count must be positive".into(),
            );
        }
        Ok(())
    }
}

/// The decoder with its weights, on the canonical face's hierarchy.
#[derive(Debug, Clone)]
pub struct MeshDecoder {
    spec: DecoderSpec,
    hierarchy: &'static Hierarchy,
    laplacians: Vec<Sparse>,
    /// The fully connected layer as a 1×1 convolution of a one-pixel map (the engine's
    /// kernel; the dot products it replaced were a third of the mesh's cost).
    fc: Conv2d,
    /// The Chebyshev layers with their descriptions.
    convs: Vec<(ChebConv, LayerShape)>,
    /// Each Chebyshev layer as one matrix product on the engine's kernel (see [`stacked`]).
    stacked: Vec<Conv2d>,
}

/// A Chebyshev layer's weights as one product X [Θ_0 | … | Θ_{K−1}] (inputs → K·outputs per
/// vertex), run as a 1×1 convolution on a one-row map by the engine's register-blocked SIMD
/// kernel; [`super::chebyshev::clenshaw_into`] then sums Σ_k T_k(L̃) (X Θ_k) with its sparse
/// products on the outputs. Measured with `retinaface bench --image t1.jpg --mesh --threads
/// 1` (six faces): `detect --mesh` took 1.13× `detect` with plain loops, 1.053–1.055× with
/// the forward recurrence's [T_0 X | … | T_5 X] · [Θ_0; …; Θ_5] on the kernel, and
/// 1.023–1.045× this way, with the buffers kept and a vectorised ELU (docs/mesh.md).
fn stacked(conv: &ChebConv) -> Conv2d {
    let (k, i, o) = (conv.order, conv.inputs, conv.outputs);
    let mut oihw = vec![0f32; k * o * i];
    for order in 0..k {
        for input in 0..i {
            for out in 0..o {
                oihw[(order * o + out) * i + input] = conv.weight[(order * i + input) * o + out];
            }
        }
    }
    Conv2d::from_oihw(
        &oihw,
        &vec![0.0; k * o],
        (k * o, i, 1),
        1,
        0,
        false,
        Activation::Identity,
    )
}

impl MeshDecoder {
    /// The decoder of `spec` from `tensors` (named `mesh_decoder.<layer>.weight` / `.bias`).
    pub fn new(spec: &DecoderSpec, tensors: &NamedTensors) -> Result<Self, WeightsError> {
        let hierarchy = Hierarchy::canonical();
        spec.validate(hierarchy).map_err(WeightsError::Mismatch)?;
        let take = |name: &str, shape: &[usize]| -> Result<Vec<f32>, WeightsError> {
            crate::model::take(tensors, &format!("{PREFIX}.{name}"), shape).map(|t| t.data.clone())
        };
        let layers = spec.layers(hierarchy);
        let fc = &layers[0];
        let fc_weight = take(&format!("{}.weight", fc.name), &fc.weight)?;
        let fc_bias = take(&format!("{}.bias", fc.name), &fc.bias)?;
        let convs = layers[1..]
            .iter()
            .map(|l| {
                let conv = ChebConv {
                    order: l.weight[0],
                    inputs: l.weight[1],
                    outputs: l.weight[2],
                    weight: take(&format!("{}.weight", l.name), &l.weight)?,
                    bias: take(&format!("{}.bias", l.name), &l.bias)?,
                };
                Ok((conv, l.clone()))
            })
            .collect::<Result<Vec<_>, WeightsError>>()?;
        let laplacians = hierarchy
            .levels
            .iter()
            .map(|m| scaled_laplacian(&m.adjacency()).0)
            .collect();
        let stacked = convs.iter().map(|(c, _)| stacked(c)).collect();
        Ok(MeshDecoder {
            spec: spec.clone(),
            hierarchy,
            laplacians,
            fc: Conv2d::from_oihw(
                &fc_weight,
                &fc_bias,
                (fc_bias.len(), spec.latent, 1),
                1,
                0,
                false,
                Activation::Identity,
            ),
            convs,
            stacked,
        })
    }

    /// The sizes.
    pub fn spec(&self) -> &DecoderSpec {
        &self.spec
    }

    /// Decode one code (`spec.latent` values) to 468 × 6 raw outputs, vertex-major.
    pub fn decode(&self, code: &[f32]) -> Vec<f32> {
        self.decode_many(&[code]).pop().unwrap_or_default()
    }

    /// Decode several codes: [`MeshDecoder::decode_many_with`] with buffers of its own.
    pub fn decode_many(&self, codes: &[&[f32]]) -> Vec<Vec<f32>> {
        self.decode_many_with(codes, &mut DecodeScratch::default())
    }

    /// Decode several codes, [`FACES_PER_PASS`] at a time, in `scratch`'s buffers (a warm
    /// scratch makes decoding allocate nothing but its output).
    pub fn decode_many_with(&self, codes: &[&[f32]], scratch: &mut DecodeScratch) -> Vec<Vec<f32>> {
        let mut decoded = Vec::with_capacity(codes.len());
        for pass in codes.chunks(FACES_PER_PASS) {
            self.decode_pass(pass, scratch, &mut decoded);
        }
        decoded
    }

    /// One pass: each product runs over every face's vertices together, which fills the
    /// engine kernel's six-pixel blocks (one face's fully connected layer is a single pixel).
    /// Between layers the features are `[vertices, faces, channels]`, so the sparse products
    /// run over every face's channels in one sweep.
    fn decode_pass(&self, codes: &[&[f32]], s: &mut DecodeScratch, decoded: &mut Vec<Vec<f32>>) {
        let m = codes.len();
        if m == 0 {
            return;
        }
        let levels = self.spec.channels.len();
        // Fully connected: x = W·code + b, each face's read as (vertices × channels).
        s.input.reshape(1, m, self.spec.latent);
        for (dst, code) in s.input.data.chunks_exact_mut(self.spec.latent).zip(codes) {
            dst.copy_from_slice(code);
        }
        self.fc.forward(&s.input, &mut s.out, &mut s.gemm);
        let mut channels = self.spec.channels[levels - 1];
        let mut n = self.hierarchy.levels[levels - 1].len();
        // Face-major → vertex-major: [n, m, channels].
        s.x.clear();
        s.x.resize(n * m * channels, 0.0);
        for (face, y) in s.out.data.chunks_exact(n * channels).enumerate() {
            for (v, row) in y.chunks_exact(channels).enumerate() {
                let at = (v * m + face) * channels;
                s.x[at..at + channels].copy_from_slice(row);
            }
        }
        for ((conv, layer), gemm) in self.convs.iter().zip(&self.stacked) {
            if layer.upsample {
                self.hierarchy
                    .upsample_into(layer.level, &s.x, m * channels, &mut s.fine);
                std::mem::swap(&mut s.x, &mut s.fine);
            }
            let laplacian = &self.laplacians[layer.level];
            n = laplacian.n;
            // Z = X [Θ_0 | … | Θ_{K−1}], every face's vertices in one product, then split
            // into the K blocks Clenshaw's recurrence reads ([K, n, faces · outputs]).
            s.input.reshape(1, n * m, channels);
            s.input.data.copy_from_slice(&s.x);
            gemm.forward(&s.input, &mut s.out, &mut s.gemm);
            let (order, outputs) = (conv.order, conv.outputs);
            let size = n * m * outputs;
            s.blocks.resize(order * size, 0.0);
            for (pixel, row) in s.out.data.chunks_exact(order * outputs).enumerate() {
                for (k, z) in row.chunks_exact(outputs).enumerate() {
                    let at = k * size + pixel * outputs;
                    s.blocks[at..at + outputs].copy_from_slice(z);
                }
            }
            let y = clenshaw_into(
                laplacian,
                &s.blocks[..order * size],
                order,
                m * outputs,
                &mut s.clenshaw,
            );
            s.x.clear();
            s.x.extend_from_slice(y);
            for row in s.x.chunks_exact_mut(outputs) {
                row.iter_mut().zip(&conv.bias).for_each(|(v, b)| *v += b);
            }
            if layer.elu {
                elu_in_place(&mut s.x);
            }
            channels = outputs;
        }
        let first = decoded.len();
        decoded.resize_with(first + m, || Vec::with_capacity(n * channels));
        for row in s.x.chunks_exact(m * channels) {
            for (face, values) in decoded[first..].iter_mut().zip(row.chunks_exact(channels)) {
                face.extend_from_slice(values);
            }
        }
    }
}

/// Faces decoded in one pass: enough rows for the kernel's blocks, few enough that a
/// scratch stays under 5 MiB.
pub const FACES_PER_PASS: usize = 8;

/// The buffers a decode reuses. The detector keeps one per workspace: fresh megabyte
/// buffers on every call cost page faults that were a third of decoding six faces.
#[derive(Debug, Clone, Default)]
pub struct DecodeScratch {
    input: Feature,
    out: Feature,
    gemm: Vec<f32>,
    blocks: Vec<f32>,
    x: Vec<f32>,
    fine: Vec<f32>,
    clenshaw: ClenshawBuffers,
}

impl DecodeScratch {
    /// Bytes held by the buffers (their capacity).
    pub fn bytes(&self) -> usize {
        let vectors = [&self.gemm, &self.blocks, &self.x, &self.fine];
        4 * (self.input.data.capacity()
            + self.out.data.capacity()
            + vectors.iter().map(|v| v.capacity()).sum::<usize>())
            + self.clenshaw.bytes()
    }
}

/// ELU with α = 1.
pub fn elu(v: f32) -> f32 {
    if v > 0.0 {
        v
    } else {
        v.exp_m1()
    }
}

/// [`elu`] over a slice, with e^x by Cody and Waite's range reduction (x = k ln 2 + r,
/// |r| ≤ ln 2 / 2) and Cephes's expf polynomial, branch-free so that the loop vectorises:
/// within 3e-7 of `exp_m1` (tested). libm's expm1f was 13 % of decoding six faces.
pub fn elu_in_place(values: &mut [f32]) {
    // Adding 1.5 · 2^23 rounds to an integer, which lands in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    for v in values {
        // e^x underflows below −87; ELU is then −1 to f32's precision.
        let x = v.clamp(-87.0, 0.0);
        let t = x * std::f32::consts::LOG2_E + ROUND;
        let k = t - ROUND;
        let r = x - k * LN2_HI - k * LN2_LO;
        let mut p = 1.987_569_2e-4;
        for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
            p = p * r + c;
        }
        let e_r = p * r * r + r + 1.0;
        let k = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
        let scale = f32::from_bits(((k + 127) as u32) << 23);
        let negative = e_r * scale - 1.0;
        *v = if *v > 0.0 { *v } else { negative };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::Tensor;

    #[test]
    fn the_vectorised_elu_is_elu() {
        let mut xs: Vec<f32> = (-12_000..2_000).map(|i| i as f32 * 0.01).collect();
        xs.extend([
            -1e-7, -1e-3, 0.0, -0.0, 1e-7, -87.0, -87.5, -100.0, -1e30, 3e38,
        ]);
        let mut fast = xs.clone();
        elu_in_place(&mut fast);
        for (&x, &y) in xs.iter().zip(&fast) {
            let want = elu(x);
            assert!((y - want).abs() <= 3e-7, "elu({x}) = {y}, not {want}");
            assert!(y >= -1.0);
        }
        let mut nan = [f32::NAN];
        elu_in_place(&mut nan);
        assert!(nan[0].is_nan(), "NaN in, NaN out");
    }

    /// Deterministic small weights for every layer of `spec`.
    pub fn weights(spec: &DecoderSpec, scale: f32) -> NamedTensors {
        let mut tensors = NamedTensors::new();
        let mut seed = 1u64;
        let mut value = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        };
        for l in spec.layers(Hierarchy::canonical()) {
            for (suffix, shape) in [("weight", &l.weight), ("bias", &l.bias)] {
                let data = (0..shape.iter().product::<usize>())
                    .map(|_| value())
                    .collect();
                tensors.insert(
                    format!("{PREFIX}.{}.{suffix}", l.name),
                    Tensor::new(shape.clone(), data),
                );
            }
        }
        tensors
    }

    #[test]
    fn the_decoder_gives_six_values_per_canonical_vertex() {
        let spec = DecoderSpec::default();
        let layers = spec.layers(Hierarchy::canonical());
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["fc", "cheb0", "cheb1", "cheb2"]);
        assert_eq!(layers[0].weight, [30 * 64, 128]);
        assert_eq!(layers[1].weight, [6, 64, 32]);
        assert_eq!(layers[3].weight, [6, 16, 6]);
        let decoder = MeshDecoder::new(&spec, &weights(&spec, 0.2)).unwrap();
        let out = decoder.decode(&[0.5; 128]);
        assert_eq!(out.len(), 468 * OUTPUTS);
        assert!(out.iter().all(|v| v.is_finite()));
        // Different codes, different meshes.
        assert_ne!(out, decoder.decode(&[-0.5; 128]));
    }

    #[test]
    fn the_scratch_stays_bounded_whatever_the_number_of_faces() {
        let spec = DecoderSpec::default();
        let decoder = MeshDecoder::new(&spec, &weights(&spec, 0.2)).unwrap();
        let codes: Vec<Vec<f32>> = (0..40).map(|k| vec![k as f32 / 40.0 - 0.5; 128]).collect();
        let codes: Vec<&[f32]> = codes.iter().map(Vec::as_slice).collect();
        let mut scratch = DecodeScratch::default();
        let one_pass = decoder.decode_many_with(&codes[..FACES_PER_PASS], &mut scratch);
        let bytes = scratch.bytes();
        let all = decoder.decode_many_with(&codes, &mut scratch);
        assert_eq!(scratch.bytes(), bytes, "a longer list grew the scratch");
        assert!(bytes < 5 << 20, "{bytes} bytes");
        assert_eq!(all.len(), 40);
        assert_eq!(&all[..FACES_PER_PASS], &one_pass[..]);
    }

    #[test]
    fn missing_or_misshapen_weights_are_named() {
        let spec = DecoderSpec::default();
        let mut tensors = weights(&spec, 0.1);
        tensors.remove("mesh_decoder.cheb1.bias");
        let e = MeshDecoder::new(&spec, &tensors).unwrap_err().to_string();
        assert!(e.contains("mesh_decoder.cheb1.bias"), "{e}");
        let mut tensors = weights(&spec, 0.1);
        tensors.insert(
            "mesh_decoder.fc.bias".into(),
            Tensor::new(vec![3], vec![0.0; 3]),
        );
        let e = MeshDecoder::new(&spec, &tensors).unwrap_err().to_string();
        assert!(
            e.contains("mesh_decoder.fc.bias") && e.contains("[1920]"),
            "{e}"
        );
        let bad = DecoderSpec {
            channels: vec![8, 8],
            ..spec
        };
        assert!(MeshDecoder::new(&bad, &weights(&DecoderSpec::default(), 0.1)).is_err());
    }
}
