//! One convolution with its BatchNorm and activation, and the builder that makes them from a
//! [`ConvSpec`]: from scratch (PyTorch's default initialisation, seeded) or from the tensors any
//! weight file the detector reads provides.

use crate::kernels::{batch_norm_act, convolution, leaky_relu};
use burn::module::{Module, Param, ParamId};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::module::conv_transpose2d;
use burn::tensor::ops::ConvTransposeOptions;
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use retinaface::arch::{ConvKind, ConvSpec};
use retinaface::engine::Activation;
use retinaface::weights::{NamedTensors, WeightsError};
use std::cell::RefCell;
use std::collections::HashMap;

/// BatchNorm's epsilon (PyTorch's default, the one the detector folds with).
pub const BN_EPS: f64 = 1e-5;

/// How a layer's BatchNorm behaves during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BnMode {
    /// Batch statistics in training, running averages updated (PyTorch's `train()`).
    Train,
    /// Statistics and affine map fixed (detectron2's `FrozenBatchNorm2d`): the layer is a
    /// constant per-channel scale and shift, folded into the convolution before it, so a step
    /// runs one convolution with bias instead of a convolution and a BatchNorm. Only the
    /// convolution's weights (in their unfolded scale) train.
    Frozen,
}

/// Convolution (dense, depthwise, deformable or transposed) → BatchNorm (optional) →
/// activation: one layer of the description.
#[derive(Module, Debug)]
pub struct ConvBn {
    /// The weights (`[cin, cout, k, k]` for a transposed layer, as PyTorch stores them) and
    /// the bias; a dense or depthwise layer runs through it.
    pub conv: Conv2d,
    pub bn: Option<BatchNorm>,
    /// Negative slope of the LeakyReLU; 0 is ReLU.
    pub slope: f64,
    /// Whether an activation follows at all.
    pub activate: bool,
    /// A deformable layer (run with [`ConvBn::forward_deformable`]).
    pub deformable: bool,
    /// A 2×2 stride-2 transposed layer (run with [`ConvBn::forward_transposed`]).
    pub transposed: bool,
    pub stride: usize,
    pub pad: usize,
}

impl ConvBn {
    /// A dense or depthwise layer on `x`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.trace(&x);
        let (w, b, folded) = self.weight_bias();
        let y = self.convolve_with(x, w, b);
        if folded {
            self.activation(y)
        } else {
            self.finish(y)
        }
    }

    /// The convolution alone (its own weights, no BatchNorm, no activation), by the path
    /// [`ConvBn::forward`] runs it (for the step profile).
    pub fn convolve(&self, x: Tensor<4>) -> Tensor<4> {
        let b = self.conv.bias.as_ref().map(|b| b.val());
        self.convolve_with(x, self.conv.weight.val(), b)
    }

    fn convolve_with(&self, x: Tensor<4>, w: Tensor<4>, b: Option<Tensor<1>>) -> Tensor<4> {
        convolution(x, w, b, self.stride, self.pad, self.conv.groups)
    }

    /// A deformable layer on `x`, sampling at `offsets` (`[B, 2·k², H', W']`, torchvision's
    /// order).
    pub fn forward_deformable(&self, x: Tensor<4>, offsets: Tensor<4>) -> Tensor<4> {
        self.trace(&x);
        let (w, b, folded) = self.weight_bias();
        let y = super::deform::deform_conv2d(x, offsets, w, b, self.stride, self.pad);
        if folded {
            self.activation(y)
        } else {
            self.finish(y)
        }
    }

    /// A transposed layer on `x`, its output cropped to `h × w`.
    pub fn forward_transposed(&self, x: Tensor<4>, h: usize, w: usize) -> Tensor<4> {
        self.trace(&x);
        let options = ConvTransposeOptions::new([2, 2], [0, 0], [0, 0], [1, 1], 1);
        let (weight, bias, folded) = self.weight_bias();
        let y = conv_transpose2d(x, weight, bias, options);
        let [b, c, _, _] = y.dims();
        let y = y.slice([0..b, 0..c, 0..h, 0..w]);
        if folded {
            self.activation(y)
        } else {
            self.finish(y)
        }
    }

    /// Whether the BatchNorm is frozen ([`BnMode::Frozen`]).
    pub fn bn_frozen(&self) -> bool {
        self.bn.as_ref().is_some_and(|bn| !bn.training.is_enabled())
    }

    /// The weights to convolve with and whether a frozen BatchNorm is folded into them.
    fn weight_bias(&self) -> (Tensor<4>, Option<Tensor<1>>, bool) {
        match self.folded() {
            Some((w, b)) => (w, Some(b), true),
            None => (
                self.conv.weight.val(),
                self.conv.bias.as_ref().map(|b| b.val()),
                false,
            ),
        }
    }

    /// A frozen BatchNorm folded into the convolution: `w·s` and `β − μ·s (+ bias·s)` with
    /// `s = γ/√(σ² + ε)`, the BatchNorm's tensors constants (no gradient flows to them).
    /// `None` for a training BatchNorm, no BatchNorm, or while calibration records the
    /// convolution's own output.
    fn folded(&self) -> Option<(Tensor<4>, Tensor<1>)> {
        let bn = self.bn.as_ref().filter(|_| self.bn_frozen())?;
        if PROBE.with(|p| p.borrow().is_some()) {
            return None;
        }
        let std = (bn.running_var.value().detach() + bn.epsilon).sqrt();
        let s = bn.gamma.val().detach() / std;
        let mut shift = bn.beta.val().detach() - bn.running_mean.value().detach() * s.clone();
        if let Some(b) = &self.conv.bias {
            shift = shift + b.val() * s.clone();
        }
        let [c] = s.dims();
        // A transposed layer stores `[cin, cout, k, k]`.
        let s = if self.transposed {
            s.reshape([1, c, 1, 1])
        } else {
            s.reshape([c, 1, 1, 1])
        };
        Some((self.conv.weight.val() * s, shift))
    }

    /// BatchNorm and activation after the convolution.
    fn finish(&self, y: Tensor<4>) -> Tensor<4> {
        let Some(bn) = &self.bn else {
            return self.activation(y);
        };
        self.probe(&y);
        if bn.training.is_enabled() && y.device().is_autodiff() {
            let slope = self.activate.then_some(self.slope as f32);
            let (gamma, beta) = (bn.gamma.val(), bn.beta.val());
            if let Some((out, mean, var)) =
                batch_norm_act(y.clone(), gamma, beta, bn.epsilon, slope)
            {
                // The running statistics move as burn's BatchNorm moves them.
                let m = bn.momentum;
                let device = out.device();
                let update = |state: &burn::module::RunningState<Tensor<1>>, batch: Tensor<1>| {
                    let old = state.value_sync().to_device(&device);
                    state.update((old * (1.0 - m) + batch.detach() * m).detach());
                };
                update(&bn.running_mean, mean);
                update(&bn.running_var, var);
                return out;
            }
        }
        self.activation(bn.forward(y))
    }

    fn activation(&self, y: Tensor<4>) -> Tensor<4> {
        match (self.activate, self.slope) {
            (false, _) => y,
            (true, s) => leaky_relu(y, s as f32),
        }
    }

    /// Records the per-channel statistics of BatchNorm's input while
    /// [`record_batch_norm_inputs`] runs.
    fn probe(&self, y: &Tensor<4>) {
        PROBE.with(|probe| {
            let mut probe = probe.borrow_mut();
            let Some(found) = probe.as_mut() else {
                return;
            };
            let [n, c, h, w] = y.dims();
            let flat = y.clone().detach().swap_dims(0, 1).reshape([c, n * h * w]);
            let mean = flat.clone().mean_dim(1);
            let var = (flat - mean.clone()).powi_scalar(2).mean_dim(1);
            // An unreadable tensor leaves the statistics empty; calibration then names the layer.
            found.insert(
                self.conv.weight.id,
                ChannelStats {
                    mean: values(mean).unwrap_or_default(),
                    var: values(var).unwrap_or_default(),
                },
            );
        });
    }
}

impl ConvBn {
    /// Notes the input's shape while [`record_layer_inputs`] runs.
    fn trace(&self, x: &Tensor<4>) {
        TRACE.with(|t| {
            if let Some(found) = t.borrow_mut().as_mut() {
                found.insert(self.conv.weight.id, x.dims());
            }
        });
    }
}

thread_local! {
    static TRACE: RefCell<Option<HashMap<ParamId, [usize; 4]>>> = const { RefCell::new(None) };
}

/// Runs `f` (forward passes on this thread) and returns the input shape of every layer it
/// ran, by the id of the layer's convolution weight (for the step profile).
pub fn record_layer_inputs(f: impl FnOnce()) -> HashMap<ParamId, [usize; 4]> {
    TRACE.with(|t| *t.borrow_mut() = Some(HashMap::new()));
    f();
    TRACE.with(|t| t.borrow_mut().take()).unwrap_or_default()
}

/// Per-channel mean and (biased) variance of a BatchNorm's input over a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

thread_local! {
    static PROBE: RefCell<Option<HashMap<ParamId, ChannelStats>>> = const { RefCell::new(None) };
}

/// Runs `f` (forward passes on this thread) and returns the statistics of every BatchNorm's
/// input it saw, by the id of the weight of the convolution feeding it.
pub fn record_batch_norm_inputs(f: impl FnOnce()) -> HashMap<ParamId, ChannelStats> {
    PROBE.with(|p| *p.borrow_mut() = Some(HashMap::new()));
    f();
    PROBE.with(|p| p.borrow_mut().take()).unwrap_or_default()
}

/// Hands out [`ConvBn`] layers in forward order and records their specs (the export order).
pub struct LayerBuilder<'a> {
    device: Device,
    tensors: Option<&'a NamedTensors>,
    rng: ChaCha8Rng,
    bn_mode: BnMode,
    specs: Vec<ConvSpec>,
    /// Only the backbone's layers (`body.*`) come from `tensors`; the others are drawn.
    backbone_only: bool,
    /// Layers outside the backbone drawn Xavier-uniform with zero biases (DF²S²'s "new
    /// layers"), instead of PyTorch's default.
    xavier: bool,
    /// Drawn layers whose bias starts at a constant (the focal loss's prior), by name.
    bias_prior: Vec<(String, f32)>,
}

/// The prefix of every backbone layer's name.
pub(crate) const BACKBONE: &str = "body.";

impl<'a> LayerBuilder<'a> {
    /// From scratch: weights drawn from `seed`.
    pub fn scratch(device: &Device, seed: u64) -> Self {
        LayerBuilder {
            device: device.clone(),
            tensors: None,
            rng: ChaCha8Rng::seed_from_u64(seed),
            bn_mode: BnMode::Train,
            specs: Vec::new(),
            backbone_only: false,
            xavier: false,
            bias_prior: Vec::new(),
        }
    }

    /// The backbone from `tensors` (any file the detector loads), every other layer drawn
    /// from `seed`; BatchNorm as [`LayerBuilder::from_tensors`] sets it for the file.
    pub fn backbone_from(device: &Device, tensors: &'a NamedTensors, seed: u64) -> Self {
        LayerBuilder {
            rng: ChaCha8Rng::seed_from_u64(seed),
            backbone_only: true,
            ..Self::from_tensors(device, tensors)
        }
    }

    /// Draw the layers outside the backbone Xavier-uniform, biases zero.
    pub fn with_xavier(mut self) -> Self {
        self.xavier = true;
        self
    }

    /// Start the drawn layer `name`'s bias at `value` (for the focal loss, the prior
    /// `−log((1 − π) / π)` makes every initial score π).
    pub fn with_bias_prior(mut self, name: &str, value: f32) -> Self {
        self.bias_prior.push((name.to_owned(), value));
        self
    }

    /// A layer from the file when the file holds it, else drawn: a branch added to a trained
    /// network (the mesh heads on the port's model).
    pub fn conv_or_drawn(&mut self, spec: ConvSpec) -> Result<ConvBn, WeightsError> {
        let weight = format!("{}.weight", spec.name);
        if self
            .source(&spec.name)
            .is_some_and(|t| t.contains_key(&weight))
        {
            return self.conv(spec);
        }
        let tensors = self.tensors.take();
        let layer = self.conv(spec);
        self.tensors = tensors;
        layer
    }

    /// The file the layers come from, if any.
    pub fn tensors(&self) -> Option<&'a NamedTensors> {
        self.tensors
    }

    /// A seed for a part drawn apart from the layers (the mesh decoder), from the builder's
    /// own generator.
    pub fn next_seed(&mut self) -> u64 {
        self.rng.random()
    }

    /// The named tensors layer `name` comes from, if it comes from a file.
    fn source(&self, name: &str) -> Option<&'a NamedTensors> {
        self.tensors
            .filter(|_| !self.backbone_only || name.starts_with(BACKBONE))
    }

    /// From named tensors (the port's names). Files with BatchNorm statistics keep them and
    /// train BatchNorm; folded files (ONNX, the detector's safetensors) are split back into
    /// convolution and BatchNorm with frozen statistics (see [`unfold`]), so training starts
    /// from exactly the detector's function.
    pub fn from_tensors(device: &Device, tensors: &'a NamedTensors) -> Self {
        let has_stats = tensors.keys().any(|k| k.ends_with(".running_mean"));
        LayerBuilder {
            device: device.clone(),
            tensors: Some(tensors),
            rng: ChaCha8Rng::seed_from_u64(0),
            bn_mode: if has_stats {
                BnMode::Train
            } else {
                BnMode::Frozen
            },
            specs: Vec::new(),
            backbone_only: false,
            xavier: false,
            bias_prior: Vec::new(),
        }
    }

    /// The device the layers are made on.
    pub fn device(&self) -> Device {
        self.device.clone()
    }

    /// The BatchNorm mode the layers get.
    pub fn bn_mode(&self) -> BnMode {
        self.bn_mode
    }

    /// Force a BatchNorm mode (e.g. freeze statistics that came with the weights).
    pub fn with_bn_mode(mut self, mode: BnMode) -> Self {
        self.bn_mode = mode;
        self
    }

    pub fn into_specs(self) -> Vec<ConvSpec> {
        self.specs
    }

    /// The layer of `spec`.
    pub fn conv(&mut self, spec: ConvSpec) -> Result<ConvBn, WeightsError> {
        let shape = spec.weight_shape();
        let fan_in = shape[1] * shape[2] * shape[3];
        let (weight, mut bias) = match self.source(&spec.name) {
            Some(t) => {
                let w = take(t, &format!("{}.weight", spec.name), &shape)?;
                let b = match t.get(&format!("{}.bias", spec.name)) {
                    Some(_) => Some(take(t, &format!("{}.bias", spec.name), &[spec.cout])?),
                    None if spec.bn.is_some() => None,
                    None => {
                        return Err(WeightsError::Missing {
                            name: format!("{}.bias", spec.name),
                            expected: vec![spec.cout],
                        })
                    }
                };
                (w, b)
            }
            None => {
                let n: usize = shape.iter().product();
                // A deformable layer's offsets start at zero (the layer starts as a plain
                // convolution), as deformable networks are trained.
                let zero = spec.name.ends_with(".offset");
                let prior = self.bias_prior.iter().any(|(n, _)| *n == spec.name);
                if prior {
                    // The prior's layer starts near zero (std 0.01, as RetinaNet's), so its
                    // first outputs are its prior whatever the features.
                    let bound = 0.01 * 3f32.sqrt();
                    let w = self.draw(n, bound, zero);
                    (w, Some(vec![0.0; spec.cout]))
                } else if self.xavier && !spec.name.starts_with(BACKBONE) {
                    // Xavier-uniform: U(±√(6 / (fan_in + fan_out))), biases zero.
                    let fan_out = shape[0] * shape[2] * shape[3];
                    let bound = (6.0 / (fan_in + fan_out) as f32).sqrt();
                    let w = self.draw(n, bound, zero);
                    (w, spec.bn.is_none().then(|| vec![0.0; spec.cout]))
                } else {
                    // PyTorch's default: kaiming_uniform(a = √5), i.e. U(±1/√fan_in), bias
                    // alike.
                    let bound = 1.0 / (fan_in as f32).sqrt();
                    let w = self.draw(n, bound, zero);
                    let b = spec.bn.is_none().then(|| self.draw(spec.cout, bound, zero));
                    (w, b)
                }
            }
        };
        if self.source(&spec.name).is_none() {
            for (name, value) in &self.bias_prior {
                if let (true, Some(b)) = (*name == spec.name, bias.as_mut()) {
                    b.fill(*value);
                }
            }
        }
        let bn = match &spec.bn {
            Some(name) => {
                let init = match self.stats(name, spec.cout)? {
                    Some(stats) => stats,
                    None => {
                        let folded_bias = bias.take().unwrap_or_else(|| vec![0.0; spec.cout]);
                        unfold(folded_bias)
                    }
                };
                Some(self.batch_norm(init))
            }
            None => None,
        };
        let groups = if spec.kind == ConvKind::Depthwise {
            spec.cin
        } else {
            1
        };
        let p = spec.pad;
        // A transposed layer keeps PyTorch's `[cin, cout, k, k]` in the module's weight.
        let channels = if spec.kind == ConvKind::Transposed {
            [spec.cout, spec.cin]
        } else {
            [spec.cin, spec.cout]
        };
        let mut conv = Conv2dConfig::new(channels, [spec.k, spec.k])
            .with_stride([spec.stride, spec.stride])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_groups(groups)
            .with_bias(bias.is_some())
            // Replaced below; zeros skip drawing numbers that are thrown away.
            .with_initializer(burn::nn::Initializer::Zeros)
            .init(&self.device);
        conv.weight = Param::from_tensor(tensor(weight, shape, &self.device));
        conv.bias = bias.map(|b| Param::from_tensor(tensor(b, vec![spec.cout], &self.device)));
        let (activate, slope) = match spec.act {
            Activation::Identity => (false, 0.0),
            Activation::Relu => (true, 0.0),
            Activation::Leaky(s) => (true, f64::from(s)),
        };
        let layer = ConvBn {
            conv,
            bn,
            slope,
            activate,
            deformable: spec.kind == ConvKind::Deformable,
            transposed: spec.kind == ConvKind::Transposed,
            stride: spec.stride,
            pad: spec.pad,
        };
        self.specs.push(spec);
        Ok(layer)
    }

    /// `n` values drawn from U(±bound); zeros (still drawn, so later layers draw the same
    /// numbers) when `zero`.
    fn draw(&mut self, n: usize, bound: f32, zero: bool) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let v = self.rng.random_range(-bound..bound);
                if zero {
                    0.0
                } else {
                    v
                }
            })
            .collect()
    }

    /// BatchNorm `name`'s γ, β, mean and variance: from the file when it has them, PyTorch's
    /// initial values from scratch, `None` for a folded file.
    fn stats(&self, name: &str, c: usize) -> Result<Option<[Vec<f32>; 4]>, WeightsError> {
        match self.source(name) {
            None => Ok(Some([
                vec![1.0; c],
                vec![0.0; c],
                vec![0.0; c],
                vec![1.0; c],
            ])),
            Some(t) if t.contains_key(&format!("{name}.running_mean")) => {
                let get = |p: &str| take(t, &format!("{name}.{p}"), &[c]);
                Ok(Some([
                    get("weight")?,
                    get("bias")?,
                    get("running_mean")?,
                    get("running_var")?,
                ]))
            }
            Some(_) => Ok(None),
        }
    }

    fn batch_norm(&self, [gamma, beta, mean, var]: [Vec<f32>; 4]) -> BatchNorm {
        let c = gamma.len();
        let d = &self.device;
        let mut bn = BatchNormConfig::new(c).with_epsilon(BN_EPS).init(d);
        bn.gamma = Param::from_tensor(tensor(gamma, vec![c], d));
        bn.beta = Param::from_tensor(tensor(beta, vec![c], d));
        bn.running_mean = burn::module::RunningState::new(tensor(mean, vec![c], d));
        bn.running_var = burn::module::RunningState::new(tensor(var, vec![c], d));
        bn.training = Param::from_bool(self.bn_mode == BnMode::Train);
        bn
    }
}

/// Splits a folded convolution (`weight`, `bias`) into a convolution without bias and a
/// BatchNorm with the same output: γ 1, β the bias, mean 0 and variance 1 − ε (so that
/// √(var + ε) is exactly 1). [`crate::network::calibrate_batch_norm`] then gives it the
/// statistics of real data so that it can train.
fn unfold(bias: Vec<f32>) -> [Vec<f32>; 4] {
    let c = bias.len();
    [
        vec![1.0; c],
        bias,
        vec![0.0; c],
        vec![1.0 - BN_EPS as f32; c],
    ]
}

/// A float tensor of any rank up to 4 from host data.
pub fn tensor<const D: usize>(data: Vec<f32>, shape: Vec<usize>, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// A tensor's values read back to the host as `f32`.
pub(crate) fn values<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, WeightsError> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| WeightsError::Mismatch(format!("reading a tensor back: {e:?}")))
}

pub(crate) fn take(
    tensors: &NamedTensors,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>, WeightsError> {
    retinaface::model::take(tensors, name, shape).map(|t| t.data.clone())
}
