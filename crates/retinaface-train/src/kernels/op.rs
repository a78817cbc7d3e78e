//! The kernels as burn operations ([`convolution`], [`depthwise_conv2d`], [`unfold_patches`],
//! [`upsample_nearest`], [`batch_norm_act`], [`leaky_relu`]): a backend extension
//! implemented for the Flex CPU backend with the kernels of [`super::dense`],
//! [`super::depthwise`], [`super::patches`], [`super::resample`] and [`super::norm`], and for
//! autodiff with backward passes that call the same kernels. Other devices (CUDA) run burn's
//! own operations.

use super::dense;
use super::depthwise;
use super::norm::{self, Planes, Slope};
use super::patches;
use super::resample;
use super::Geometry;
use super::Isa;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, DispatchDevice, Flex, TensorMetadata};
use burn::tensor::activation;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

static CUSTOM: AtomicBool = AtomicBool::new(true);

/// Whether the operations of this module run the trainer's kernels (the default) or burn's
/// own operations, process-wide; the step profile compares the two.
pub fn set_custom_kernels(on: bool) {
    CUSTOM.store(on, Ordering::Relaxed);
}

/// A depthwise convolution (`weight` `[C, 1, k, k]`, one filter per channel) with optional
/// bias, square stride and padding, differentiable in all three. On the Flex CPU backend it
/// runs the trainer's kernels; elsewhere burn's `conv2d` with `groups = C`.
pub fn depthwise_conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    stride: usize,
    pad: usize,
) -> Tensor<4> {
    let [c, per_group, _, _] = weight.dims();
    if !custom(&x) || per_group != 1 || x.dims()[1] != c {
        let options = ConvOptions::new([stride, stride], [pad, pad], [1, 1], c);
        return conv2d(x, weight, bias, options);
    }
    let bias = bias.unwrap_or_else(|| Tensor::zeros([c], &x.device()));
    let y = <burn::backend::Dispatch as TrainOps>::depthwise_conv(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        stride,
        pad,
    );
    Tensor::from_dispatch(y)
}

/// Whether `x` is on the Flex backend with the trainer's kernels switched on.
fn custom<const D: usize>(x: &Tensor<D>) -> bool {
    CUSTOM.load(Ordering::Relaxed)
        && matches!(x.device().inner().as_dispatch(), DispatchDevice::Flex(_))
}

/// BatchNorm with batch statistics followed by LeakyReLU (`slope`; 0 is ReLU; `None` no
/// activation), fused. Returns the output and the batch's mean and biased variance
/// (detached, for the running statistics), or `None` where the trainer's kernels do not
/// run (another device, or switched off): the caller then uses burn's BatchNorm.
pub fn batch_norm_act(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
    slope: Slope,
) -> Option<(Tensor<4>, Tensor<1>, Tensor<1>)> {
    if !custom(&x) {
        return None;
    }
    let (y, mean, var) = <burn::backend::Dispatch as TrainOps>::batch_norm_act(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        eps,
        slope.is_some(),
        slope.unwrap_or(0.0),
    );
    Some((
        Tensor::from_dispatch(y),
        Tensor::from_dispatch(mean),
        Tensor::from_dispatch(var),
    ))
}

/// A convolution (`weight` `[Cout, Cin/groups, k, k]`) as the trainer runs it: depthwise
/// layers by [`depthwise_conv2d`], dense stride-1 layers and strided ones whose input needs
/// no gradient (the stems) by [`super::dense`] (1×1 as matrix products, larger filters on
/// the engine's convolution), the other strided layers as patches ([`unfold_patches`])
/// times the weights. Where the trainer's kernels do not run (other
/// devices, or switched off): 1×1 layers as burn matrix products, others burn's `conv2d`.
pub fn convolution(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    stride: usize,
    pad: usize,
    groups: usize,
) -> Tensor<4> {
    let [cout, per_group, k, _] = weight.dims();
    let [n, cin, h, w] = x.dims();
    if groups > 1 && groups == cin && per_group == 1 {
        return depthwise_conv2d(x, weight, bias, stride, pad);
    }
    if groups == 1 {
        let g = geometry(&[n, cin, h, w], k, stride, pad);
        if custom(&x) && dense::applies(&g, cout, x.is_tracked()) && weight.dims()[3] == k {
            let bias = bias.unwrap_or_else(|| Tensor::zeros([cout], &x.device()));
            return Tensor::from_dispatch(<burn::backend::Dispatch as TrainOps>::dense_conv(
                x.into_dispatch(),
                weight.into_dispatch(),
                bias.into_dispatch(),
                stride,
                pad,
            ));
        }
        if let Some(cols) = unfold_patches(x.clone(), k, stride, pad) {
            let (oh, ow) = g.output();
            let y = weight.reshape([1, cout, cin * k * k]).matmul(cols);
            return with_bias(y, bias).reshape([n, cout, oh, ow]);
        }
        if k == 1 && stride == 1 && pad == 0 {
            return pointwise(x, weight, bias);
        }
    }
    let options = ConvOptions::new([stride, stride], [pad, pad], [1, 1], groups);
    conv2d(x, weight, bias, options)
}

fn with_bias(y: Tensor<3>, bias: Option<Tensor<1>>) -> Tensor<3> {
    match bias {
        Some(b) => {
            let [c] = b.dims();
            y + b.reshape([1, c, 1])
        }
        None => y,
    }
}

/// A 1×1 convolution as a batched matrix product, `[Cout, Cin] · [Cin, H·W]` per image: its
/// backward pass is two matrix products too, where burn's convolution backward took 579 ms
/// of a 3.1 s step for MobileNet-0.25's sixteen 1×1 layers (batch 8, 640×640, 2 threads;
/// `examples/profile_step.rs`); as a matrix product, 202 ms.
fn pointwise(x: Tensor<4>, w: Tensor<4>, b: Option<Tensor<1>>) -> Tensor<4> {
    let [n, cin, h, wd] = x.dims();
    let [cout, ..] = w.dims();
    let y = w
        .reshape([1, cout, cin])
        .matmul(x.reshape([n, cin, h * wd]));
    with_bias(y, b).reshape([n, cout, h, wd])
}

/// The patches of a dense `kernel × kernel` convolution's input (im2col): `[N, C, H, W]` →
/// `[N, C·k·k, OH·OW]`, differentiable (the input's gradient folds the patches' back), so
/// that the convolution is a matrix product. `None` where the trainer's kernels do not run.
pub fn unfold_patches(x: Tensor<4>, kernel: usize, stride: usize, pad: usize) -> Option<Tensor<3>> {
    if !custom(&x) {
        return None;
    }
    Some(Tensor::from_dispatch(
        <burn::backend::Dispatch as TrainOps>::unfold_patches(
            x.into_dispatch(),
            kernel,
            stride,
            pad,
        ),
    ))
}

/// Nearest-neighbour resizing to `h × w` ([`super::resample`]), differentiable; `None` where
/// the trainer's kernels do not run.
pub fn upsample_nearest(x: Tensor<4>, h: usize, w: usize) -> Option<Tensor<4>> {
    if !custom(&x) {
        return None;
    }
    Some(Tensor::from_dispatch(
        <burn::backend::Dispatch as TrainOps>::upsample_nearest(x.into_dispatch(), h, w),
    ))
}

/// LeakyReLU with negative slope `slope` (0 is ReLU).
pub fn leaky_relu(x: Tensor<4>, slope: f32) -> Tensor<4> {
    if !custom(&x) {
        return match slope {
            0.0 => activation::relu(x),
            s => activation::leaky_relu(x, f64::from(s)),
        };
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as TrainOps>::leaky_act(
        x.into_dispatch(),
        slope,
    ))
}

/// The operations burn dispatches: forward on Flex, forward and backward under autodiff.
#[backend_extension(Flex, Autodiff)]
pub trait TrainOps: Backend {
    fn depthwise_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        pad: usize,
    ) -> FloatTensor<Self>;

    fn batch_norm_act(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
        activate: bool,
        slope: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    fn leaky_act(x: FloatTensor<Self>, slope: f32) -> FloatTensor<Self>;

    /// A dense convolution with bias ([`super::dense`]).
    fn dense_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        pad: usize,
    ) -> FloatTensor<Self>;

    fn unfold_patches(
        x: FloatTensor<Self>,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> FloatTensor<Self>;

    fn upsample_nearest(x: FloatTensor<Self>, h: usize, w: usize) -> FloatTensor<Self>;
}

/// What the fused BatchNorm's backward pass needs besides the input.
#[derive(Debug, Clone)]
pub struct NormState {
    planes: Planes,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
    eps: f64,
    slope: Slope,
}

/// The kernels on a backend without autodiff, for the backward passes.
pub trait TrainGrads: Backend {
    /// The fused BatchNorm's output, mean and variance, and its state for the backward pass.
    fn batch_norm_act_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
        slope: Slope,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        NormState,
    );
    /// The gradients of the input, γ and β.
    fn batch_norm_act_grad(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        state: &NormState,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// A dense convolution's input gradient (if `input`) and weight and bias gradients (if
    /// `params`) from the output's.
    #[allow(clippy::type_complexity)]
    fn dense_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        g: Geometry,
        input: bool,
        params: bool,
    ) -> (
        Option<FloatTensor<Self>>,
        Option<(FloatTensor<Self>, FloatTensor<Self>)>,
    );
    /// The adjoint of nearest upsampling from `input` (`[N, C, ih, iw]`): the input's gradient.
    fn upsample_nearest_grad(dy: FloatTensor<Self>, input: [usize; 4]) -> FloatTensor<Self>;
    /// The adjoint of the patches: the input's gradient from theirs.
    fn fold_patches(cols: FloatTensor<Self>, g: Geometry) -> FloatTensor<Self>;
    /// The activation's input gradient.
    fn leaky_relu_grad(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        slope: f32,
    ) -> FloatTensor<Self>;

    /// The input's gradient from the output's.
    fn depthwise_grad_input(
        dy: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        g: Geometry,
    ) -> FloatTensor<Self>;
    /// The weights' and the bias's gradients from the output's.
    fn depthwise_grad_weight(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        g: Geometry,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

fn geometry(x: &[usize], kernel: usize, stride: usize, pad: usize) -> Geometry {
    Geometry {
        batch: x[0],
        channels: x[1],
        height: x[2],
        width: x[3],
        kernel,
        stride: stride.max(1),
        pad,
    }
}

/// The values of a Flex tensor in row-major order, borrowed when it is already contiguous.
fn values(t: &FlexTensor) -> Cow<'_, [f32]> {
    if let Some(s) = t.as_slice::<f32>() {
        return Cow::Borrowed(s);
    }
    let data = t.clone().into_data().convert::<f32>();
    Cow::Owned(data.try_to_vec::<f32>().unwrap_or_default())
}

fn flex(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

impl TrainOps for Flex {
    fn depthwise_conv(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        stride: usize,
        pad: usize,
    ) -> FlexTensor {
        let k = weight.shape().dims::<4>()[2];
        let g = geometry(&x.shape().dims::<4>(), k, stride, pad);
        let y = depthwise::forward(
            &g,
            &values(&x),
            &values(&weight),
            Some(&values(&bias)),
            Isa::active(),
        );
        let (oh, ow) = g.output();
        flex(y, vec![g.batch, g.channels, oh, ow])
    }

    fn batch_norm_act(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        eps: f64,
        activate: bool,
        slope: f32,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let slope = activate.then_some(slope);
        let (y, mean, var, _) = Self::batch_norm_act_forward(x, gamma, beta, eps, slope);
        (y, mean, var)
    }

    fn leaky_act(x: FlexTensor, slope: f32) -> FlexTensor {
        let shape = x.shape().dims::<4>().to_vec();
        flex(norm::activation(&values(&x), slope, Isa::active()), shape)
    }

    fn dense_conv(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        stride: usize,
        pad: usize,
    ) -> FlexTensor {
        let w = weight.shape().dims::<4>();
        let g = geometry(&x.shape().dims::<4>(), w[2], stride, pad);
        let y = dense::forward(&g, &values(&x), &values(&weight), &values(&bias));
        let (oh, ow) = g.output();
        flex(y, vec![g.batch, w[0], oh, ow])
    }

    fn upsample_nearest(x: FlexTensor, h: usize, w: usize) -> FlexTensor {
        let [n, c, ih, iw] = x.shape().dims::<4>();
        flex(
            resample::nearest(&values(&x), (ih, iw), (h, w)),
            vec![n, c, h, w],
        )
    }

    fn unfold_patches(x: FlexTensor, kernel: usize, stride: usize, pad: usize) -> FlexTensor {
        let g = geometry(&x.shape().dims::<4>(), kernel, stride, pad);
        let cols = patches::unfold(&g, &values(&x), Isa::active());
        let (oh, ow) = g.output();
        flex(cols, vec![g.batch, g.channels * kernel * kernel, oh * ow])
    }
}

fn planes(shape: &[usize]) -> Planes {
    Planes {
        batch: shape[0],
        channels: shape[1],
        pixels: shape[2..].iter().product(),
    }
}

impl TrainGrads for Flex {
    fn batch_norm_act_forward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        eps: f64,
        slope: Slope,
    ) -> (FlexTensor, FlexTensor, FlexTensor, NormState) {
        let shape = x.shape().dims::<4>().to_vec();
        let p = planes(&shape);
        let xv = values(&x);
        let isa = Isa::active();
        let (mean, var) = norm::channel_stats(&p, &xv, isa);
        let (gamma, beta) = (values(&gamma).into_owned(), values(&beta).into_owned());
        let y = norm::forward(&p, &xv, &gamma, &beta, &mean, &var, eps, slope, isa);
        let c = p.channels;
        let state = NormState {
            planes: p,
            gamma,
            beta,
            mean: mean.clone(),
            var: var.clone(),
            eps,
            slope,
        };
        (
            flex(y, shape),
            flex(mean, vec![c]),
            flex(var, vec![c]),
            state,
        )
    }

    fn batch_norm_act_grad(
        x: FlexTensor,
        dy: FlexTensor,
        s: &NormState,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let shape = x.shape().dims::<4>().to_vec();
        let (dx, dgamma, dbeta) = norm::backward(
            &s.planes,
            &values(&x),
            &values(&dy),
            &s.gamma,
            &s.beta,
            &s.mean,
            &s.var,
            s.eps,
            s.slope,
            Isa::active(),
        );
        let c = s.planes.channels;
        (flex(dx, shape), flex(dgamma, vec![c]), flex(dbeta, vec![c]))
    }

    fn dense_grad(
        x: FlexTensor,
        weight: FlexTensor,
        dy: FlexTensor,
        g: Geometry,
        input: bool,
        params: bool,
    ) -> (Option<FlexTensor>, Option<(FlexTensor, FlexTensor)>) {
        let shape = weight.shape().dims::<4>().to_vec();
        let cout = shape[0];
        let (dx, dw) = dense::backward(
            &g,
            &values(&x),
            &values(&weight),
            &values(&dy),
            input,
            params,
        );
        (
            dx.map(|v| flex(v, vec![g.batch, g.channels, g.height, g.width])),
            dw.map(|(w, b)| (flex(w, shape), flex(b, vec![cout]))),
        )
    }

    fn upsample_nearest_grad(dy: FlexTensor, input: [usize; 4]) -> FlexTensor {
        let [_, _, oh, ow] = dy.shape().dims::<4>();
        let [.., ih, iw] = input;
        flex(
            resample::nearest_adjoint(&values(&dy), (ih, iw), (oh, ow)),
            input.to_vec(),
        )
    }

    fn fold_patches(cols: FlexTensor, g: Geometry) -> FlexTensor {
        let x = patches::fold(&g, &values(&cols), Isa::active());
        flex(x, vec![g.batch, g.channels, g.height, g.width])
    }

    fn leaky_relu_grad(x: FlexTensor, dy: FlexTensor, slope: f32) -> FlexTensor {
        let shape = x.shape().dims::<4>().to_vec();
        let dx = norm::activation_grad(&values(&x), &values(&dy), slope, Isa::active());
        flex(dx, shape)
    }

    fn depthwise_grad_input(dy: FlexTensor, weight: FlexTensor, g: Geometry) -> FlexTensor {
        let dx = depthwise::backward_input(&g, &values(&dy), &values(&weight), Isa::active());
        flex(dx, vec![g.batch, g.channels, g.height, g.width])
    }

    fn depthwise_grad_weight(
        x: FlexTensor,
        dy: FlexTensor,
        g: Geometry,
    ) -> (FlexTensor, FlexTensor) {
        let (dw, db) = depthwise::backward_weight(&g, &values(&x), &values(&dy), Isa::active());
        (
            flex(dw, vec![g.channels, 1, g.kernel, g.kernel]),
            flex(db, vec![g.channels]),
        )
    }
}

#[derive(Debug)]
struct DepthwiseBackward;

impl<B: Backend + TrainGrads> Backward<B, 3> for DepthwiseBackward {
    /// The input and the weights (checkpointed), and the geometry.
    type State = (NodeId, NodeId, Geometry);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w, node_b] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x_state, w_state, g) = ops.state;
        let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
        let w = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(w_state);
        if node_w.is_some() || node_b.is_some() {
            let (dw, db) = B::depthwise_grad_weight(x, dy.clone(), g);
            if let Some(node) = node_w {
                grads.register::<B>(node.id, dw);
            }
            if let Some(node) = node_b {
                grads.register::<B>(node.id, db);
            }
        }
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::depthwise_grad_input(dy, w, g));
        }
    }
}

#[derive(Debug)]
struct DenseBackward;

impl<B: Backend + TrainGrads> Backward<B, 3> for DenseBackward {
    /// The input and the weights (checkpointed), and the geometry.
    type State = (NodeId, NodeId, Geometry);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w, node_b] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x_state, w_state, g) = ops.state;
        let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
        let w = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(w_state);
        let params = node_w.is_some() || node_b.is_some();
        let (dx, dwb) = B::dense_grad(x, w, dy, g, node_x.is_some(), params);
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<B>(node.id, dx);
        }
        if let Some((dw, db)) = dwb {
            if let Some(node) = node_w {
                grads.register::<B>(node.id, dw);
            }
            if let Some(node) = node_b {
                grads.register::<B>(node.id, db);
            }
        }
    }
}

#[derive(Debug)]
struct NormBackward;

impl<B: Backend + TrainGrads> Backward<B, 3> for NormBackward {
    type State = (NodeId, NormState);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x_state, state) = ops.state;
        let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
        let (dx, dgamma, dbeta) = B::batch_norm_act_grad(x, dy, &state);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, dgamma);
        }
        if let Some(node) = node_beta {
            grads.register::<B>(node.id, dbeta);
        }
    }
}

#[derive(Debug)]
struct PatchesBackward;

impl<B: Backend + TrainGrads> Backward<B, 1> for PatchesBackward {
    type State = Geometry;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let dcols = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::fold_patches(dcols, ops.state));
        }
    }
}

#[derive(Debug)]
struct UpsampleBackward;

impl<B: Backend + TrainGrads> Backward<B, 1> for UpsampleBackward {
    /// The input's shape.
    type State = [usize; 4];

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::upsample_nearest_grad(dy, ops.state));
        }
    }
}

#[derive(Debug)]
struct ActivationBackward;

impl<B: Backend + TrainGrads> Backward<B, 1> for ActivationBackward {
    type State = (NodeId, f32);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x_state, slope) = ops.state;
        if let Some(node) = node_x {
            let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
            grads.register::<B>(node.id, B::leaky_relu_grad(x, dy, slope));
        }
    }
}

impl<B: Backend + TrainOps + TrainGrads, C: CheckpointStrategy> TrainOps for Autodiff<B, C> {
    fn unfold_patches(
        x: FloatTensor<Self>,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> FloatTensor<Self> {
        let g = geometry(&x.primitive().shape().dims::<4>(), kernel, stride, pad);
        // Linear: the backward pass needs the geometry only.
        match PatchesBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let cols = B::unfold_patches(x.into_primitive(), kernel, stride, pad);
                prep.finish(g, cols)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::unfold_patches(x.into_primitive(), kernel, stride, pad))
            }
        }
    }

    fn upsample_nearest(x: FloatTensor<Self>, h: usize, w: usize) -> FloatTensor<Self> {
        let input = x.primitive().shape().dims::<4>();
        // Linear: the backward pass needs the input's shape only.
        match UpsampleBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                prep.finish(input, B::upsample_nearest(x.into_primitive(), h, w))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::upsample_nearest(x.into_primitive(), h, w)),
        }
    }

    fn batch_norm_act(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
        activate: bool,
        slope: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let slope = activate.then_some(slope);
        match NormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let (y, mean, var, state) = B::batch_norm_act_forward(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    eps,
                    slope,
                );
                (
                    prep.finish((x_state, state), y),
                    <FloatTensor<Self>>::new(mean),
                    <FloatTensor<Self>>::new(var),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (y, mean, var, _) = B::batch_norm_act_forward(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    eps,
                    slope,
                );
                (
                    prep.finish(y),
                    <FloatTensor<Self>>::new(mean),
                    <FloatTensor<Self>>::new(var),
                )
            }
        }
    }

    fn leaky_act(x: FloatTensor<Self>, slope: f32) -> FloatTensor<Self> {
        match ActivationBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let y = B::leaky_act(x.into_primitive(), slope);
                prep.finish((x_state, slope), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::leaky_act(x.into_primitive(), slope)),
        }
    }

    fn dense_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        pad: usize,
    ) -> FloatTensor<Self> {
        let k = weight.primitive().shape().dims::<4>()[2];
        let g = geometry(&x.primitive().shape().dims::<4>(), k, stride, pad);
        match DenseBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let w_state = prep.checkpoint(&weight);
                let y = B::dense_conv(
                    x.into_primitive(),
                    weight.into_primitive(),
                    bias.into_primitive(),
                    stride,
                    pad,
                );
                prep.finish((x_state, w_state, g), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::dense_conv(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
                stride,
                pad,
            )),
        }
    }

    fn depthwise_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        pad: usize,
    ) -> FloatTensor<Self> {
        let k = weight.primitive().shape().dims::<4>()[2];
        let g = geometry(&x.primitive().shape().dims::<4>(), k, stride, pad);
        match DepthwiseBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let w_state = prep.checkpoint(&weight);
                let y = B::depthwise_conv(
                    x.into_primitive(),
                    weight.into_primitive(),
                    bias.into_primitive(),
                    stride,
                    pad,
                );
                prep.finish((x_state, w_state, g), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::depthwise_conv(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
                stride,
                pad,
            )),
        }
    }
}
