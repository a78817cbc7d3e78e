//! 2-D convolution with bias and activation fused, over NHWC maps.

use super::kernel::{strip, Packed};
use super::simd::Simd;
use super::{depthwise, out_size, winograd, Feature};
use rayon::prelude::*;
use std::cell::RefCell;

/// The activation applied to a convolution's output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Identity,
    Relu,
    /// LeakyReLU with the given negative slope.
    Leaky(f32),
}

impl Activation {
    /// ReLU for slope 0, LeakyReLU otherwise.
    pub fn leaky(slope: f32) -> Self {
        if slope == 0.0 {
            Activation::Relu
        } else {
            Activation::Leaky(slope)
        }
    }

    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            Activation::Relu => x.max(0.0),
            Activation::Leaky(a) => {
                if x < 0.0 {
                    x * a
                } else {
                    x
                }
            }
        }
    }

    /// Apply to every value of a slice.
    pub fn apply_slice(self, xs: &mut [f32]) {
        match self {
            Activation::Identity => {}
            Activation::Relu => xs.iter_mut().for_each(|x| *x = x.max(0.0)),
            Activation::Leaky(a) => xs.iter_mut().for_each(|x| {
                if *x < 0.0 {
                    *x *= a
                }
            }),
        }
    }
}

/// The direct kernel of OIHW weights.
fn direct(
    weight: &[f32],
    bias: &[f32],
    slope: &[f32],
    (cout, cin, k): (usize, usize, usize),
) -> Kernel {
    let kk = k * k;
    Kernel::Direct(Packed::new(
        kk,
        cin,
        cout,
        |t, ci, co| weight[(co * cin + ci) * kk + t],
        bias,
        slope,
    ))
}

/// How a convolution is computed.
#[derive(Debug, Clone)]
enum Kernel {
    /// Dense convolution on the micro-kernel: one tap per `(ky, kx)` over the (padded) input.
    Direct(Packed),
    /// Stride-1 pad-1 3×3 in the Winograd domain.
    Winograd(winograd::Weights),
    /// Depthwise (groups = channels) 3×3: weights packed as `[(ky, kx)][c]`.
    Depthwise { packed: Vec<f32> },
}

/// A convolution layer with its weights packed for the engine.
#[derive(Debug, Clone)]
pub struct Conv2d {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    /// The activation (of output channel 0 for a layer fused from several).
    pub act: Activation,
    bias: Vec<f32>,
    /// Per output channel: the activation as `max(x, slope·x)`.
    slope: Vec<f32>,
    kernel: Kernel,
}

impl Activation {
    /// The slope `a` with `act(x) = max(x, a·x)`, which holds for slopes in `[0, 1]`.
    fn slope(self) -> f32 {
        match self {
            Activation::Identity => 1.0,
            Activation::Relu => 0.0,
            Activation::Leaky(a) => {
                assert!(
                    (0.0..=1.0).contains(&a),
                    "LeakyReLU slope {a} is outside [0, 1]"
                );
                a
            }
        }
    }
}

/// Below this many MACs a layer runs on the calling thread alone.
const PAR_MACS: usize = 1 << 18;
/// Pixels per micro-kernel call for 1×1 convolutions (a multiple of 6 and 8).
const STRIP: usize = 240;

impl Conv2d {
    /// Build from PyTorch-layout weights `[cout, cin / groups, k, k]` (row-major) and a bias.
    /// `groups` must be 1 or `cin` (depthwise, 3×3 only).
    pub fn from_oihw(
        weight: &[f32],
        bias: &[f32],
        shape: (usize, usize, usize),
        stride: usize,
        pad: usize,
        depthwise: bool,
        act: Activation,
    ) -> Self {
        Self::with_activations(weight, bias, shape, stride, pad, depthwise, &[act])
    }

    /// As [`Conv2d::from_oihw`], with one activation per output channel (several layers
    /// over the same input fused along the output channels), or one for all.
    pub(crate) fn with_activations(
        weight: &[f32],
        bias: &[f32],
        (cout, cin, k): (usize, usize, usize),
        stride: usize,
        pad: usize,
        depthwise: bool,
        acts: &[Activation],
    ) -> Self {
        assert_eq!(bias.len(), cout);
        assert!(acts.len() == 1 || acts.len() == cout);
        let slope: Vec<f32> = (0..cout).map(|j| acts[j % acts.len()].slope()).collect();
        let kernel = if depthwise {
            assert!(
                cin == cout && k == 3,
                "depthwise convolutions are 3×3 with cin == cout"
            );
            assert_eq!(weight.len(), 9 * cout);
            let mut packed = vec![0.0; 9 * cout];
            for c in 0..cout {
                for t in 0..9 {
                    packed[t * cout + c] = weight[c * 9 + t];
                }
            }
            Kernel::Depthwise { packed }
        } else {
            assert_eq!(weight.len(), cout * cin * k * k);
            assert!(k * k <= MAX_TAPS, "kernels up to 7×7");
            if k == 3 && stride == 1 && pad == 1 && cin >= 8 {
                Kernel::Winograd(winograd::Weights::new(weight, bias, &slope, cin, cout))
            } else {
                direct(weight, bias, &slope, (cout, cin, k))
            }
        };
        Conv2d {
            cin,
            cout,
            k,
            stride,
            pad,
            act: acts[0],
            bias: bias.to_vec(),
            slope,
            kernel,
        }
    }

    /// A dense convolution as [`Conv2d::from_oihw`], always computed directly (tap by tap),
    /// never in the Winograd domain, whose transforms round more: for callers that must
    /// agree with a plain sum of products to a tolerance (the trainer's forward pass).
    pub fn direct_from_oihw(
        weight: &[f32],
        bias: &[f32],
        (cout, cin, k): (usize, usize, usize),
        stride: usize,
        pad: usize,
        act: Activation,
    ) -> Self {
        assert_eq!(bias.len(), cout);
        assert_eq!(weight.len(), cout * cin * k * k);
        assert!(k * k <= MAX_TAPS, "kernels up to 7×7");
        let slope = vec![act.slope(); cout];
        Conv2d {
            cin,
            cout,
            k,
            stride,
            pad,
            act,
            bias: bias.to_vec(),
            kernel: direct(weight, bias, &slope, (cout, cin, k)),
            slope,
        }
    }

    /// Output spatial size for an input of `h × w`.
    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (
            out_size(h, self.k, self.stride, self.pad),
            out_size(w, self.k, self.stride, self.pad),
        )
    }

    /// Multiply-accumulates for an input of `h × w` (for cost reports; direct-convolution
    /// count, whatever the algorithm).
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        let (oh, ow) = self.out_hw(h, w);
        let per_pixel = match self.kernel {
            Kernel::Depthwise { .. } => 9 * self.cout,
            _ => self.k * self.k * self.cin * self.cout,
        };
        (oh * ow * per_pixel) as u64
    }

    /// Run into a fresh map of exactly `cout` channels.
    pub fn forward(&self, input: &Feature, out: &mut Feature, scratch: &mut Vec<f32>) {
        let (oh, ow) = self.out_hw(input.h, input.w);
        out.reshape(oh, ow, self.cout);
        self.forward_into(input, &mut out.data, self.cout, 0, scratch);
    }

    /// Run, writing channel `j` of output pixel `p` to `out[p * out_c + offset + j]`: the
    /// output can be a channel slice of a wider map.
    pub fn forward_into(
        &self,
        input: &Feature,
        out: &mut [f32],
        out_c: usize,
        offset: usize,
        scratch: &mut Vec<f32>,
    ) {
        assert_eq!(
            input.c, self.cin,
            "convolution input has the wrong channel count"
        );
        self.run(Simd::active(), input, 0, out, out_c, offset, scratch);
    }

    /// As [`Conv2d::forward_into`], reading input channels `in_off..in_off + cin` of a map
    /// that may be wider.
    pub(crate) fn forward_slice(
        &self,
        input: &Feature,
        in_off: usize,
        out: &mut [f32],
        out_c: usize,
        offset: usize,
        scratch: &mut Vec<f32>,
    ) {
        self.run(Simd::active(), input, in_off, out, out_c, offset, scratch);
    }

    /// The whole computation on a given kernel family (tests compare them).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
        &self,
        simd: Simd,
        input: &Feature,
        in_off: usize,
        out: &mut [f32],
        out_c: usize,
        offset: usize,
        scratch: &mut Vec<f32>,
    ) {
        assert!(
            in_off + self.cin <= input.c,
            "convolution input has too few channels"
        );
        assert!(input.data.len() >= input.h * input.w * input.c);
        let (oh, ow) = self.out_hw(input.h, input.w);
        assert!(out.len() >= oh * ow * out_c && offset + self.cout <= out_c);
        match &self.kernel {
            Kernel::Depthwise { packed } => {
                assert!(in_off == 0 && input.c == self.cin);
                depthwise::conv3x3(
                    simd,
                    input,
                    packed,
                    &self.bias,
                    &self.slope,
                    self.stride,
                    out,
                    out_c,
                    offset,
                )
            }
            Kernel::Winograd(wt) => winograd::conv3x3(simd, wt, input, in_off, out, out_c, offset),
            Kernel::Direct(p) => self.direct(simd, p, input, in_off, out, out_c, offset, scratch),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn direct(
        &self,
        simd: Simd,
        p: &Packed,
        input: &Feature,
        in_off: usize,
        out: &mut [f32],
        out_c: usize,
        offset: usize,
        scratch: &mut Vec<f32>,
    ) {
        let (oh, ow) = self.out_hw(input.h, input.w);
        let (k, s, ic) = (self.k, self.stride, input.c);
        let (src, pw): (&[f32], usize) = if self.pad == 0 {
            (&input.data, input.w)
        } else {
            pad_copy(input, self.pad, scratch);
            (scratch, input.w + 2 * self.pad)
        };
        let mut offs = [0usize; MAX_TAPS];
        for ky in 0..k {
            for kx in 0..k {
                offs[ky * k + kx] = (ky * pw + kx) * ic;
            }
        }
        let offs = &offs[..k * k];
        let out = &mut out[..oh * ow * out_c];
        let macs = oh * ow * k * k * self.cin * self.cout;
        let par = rayon::current_num_threads() > 1 && macs > PAR_MACS;
        if k == 1 && s == 1 && self.pad == 0 {
            // The map is one long row of pixels.
            let job = |(i, o): (usize, &mut [f32])| {
                let n = o.len() / out_c;
                strip(
                    simd,
                    p,
                    src,
                    i * STRIP * ic + in_off,
                    ic,
                    offs,
                    o,
                    offset,
                    out_c,
                    n,
                );
            };
            if par {
                out.par_chunks_mut(STRIP * out_c).enumerate().for_each(job);
            } else {
                out.chunks_mut(STRIP * out_c).enumerate().for_each(job);
            }
        } else {
            let job = |(oy, o): (usize, &mut [f32])| {
                let a0 = oy * s * pw * ic + in_off;
                strip(simd, p, src, a0, s * ic, offs, o, offset, out_c, ow);
            };
            if par {
                out.par_chunks_mut(ow * out_c).enumerate().for_each(job);
            } else {
                out.chunks_mut(ow * out_c).enumerate().for_each(job);
            }
        }
    }
}

thread_local! {
    /// Per-thread row of depthwise output feeding the pointwise layer (grown once).
    static DW_ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl Conv2d {
    /// This depthwise 3×3 followed by the 1×1 `pw`, row by row: each row of depthwise output
    /// stays in a per-thread buffer (L1/L2) and is consumed at once, never written as a map.
    /// The early MobileNet maps are megabytes at 1080p, where the separate depthwise pass
    /// was memory-bound (20 % of the time).
    pub fn forward_depthwise_pointwise(&self, pw: &Conv2d, input: &Feature, out: &mut Feature) {
        self.depthwise_pointwise(Simd::active(), pw, input, out)
    }

    pub(crate) fn depthwise_pointwise(
        &self,
        simd: Simd,
        pw: &Conv2d,
        input: &Feature,
        out: &mut Feature,
    ) {
        let Kernel::Depthwise { packed: dwp } = &self.kernel else {
            panic!("forward_depthwise_pointwise needs a depthwise layer first")
        };
        let Kernel::Direct(pwp) = &pw.kernel else {
            panic!("forward_depthwise_pointwise needs a 1×1 layer second")
        };
        assert!(pw.k == 1 && pw.stride == 1 && pw.pad == 0 && pw.cin == self.cout);
        assert_eq!(input.c, self.cin);
        let (oh, ow) = self.out_hw(input.h, input.w);
        let (c, cout) = (self.cout, pw.cout);
        out.reshape(oh, ow, cout);
        let job = |(oy, orow): (usize, &mut [f32])| {
            DW_ROW.with(|buf| {
                let mut buf = buf.borrow_mut();
                if buf.len() < ow * c {
                    buf.resize(ow * c, 0.0);
                }
                let tmp = &mut buf[..ow * c];
                depthwise::row(
                    simd,
                    input,
                    dwp,
                    &self.bias,
                    &self.slope,
                    self.stride,
                    oy,
                    tmp,
                    c,
                    0,
                );
                strip(simd, pwp, tmp, 0, c, &[0], orow, 0, cout, ow);
            })
        };
        let macs = oh * ow * c * (cout + 9);
        if rayon::current_num_threads() > 1 && macs > PAR_MACS {
            out.data.par_chunks_mut(ow * cout).enumerate().for_each(job);
        } else {
            out.data.chunks_mut(ow * cout).enumerate().for_each(job);
        }
    }
}

impl Conv2d {
    pub(crate) fn is_depthwise(&self) -> bool {
        matches!(self.kernel, Kernel::Depthwise { .. })
    }

    pub(crate) fn is_pointwise(&self) -> bool {
        matches!(self.kernel, Kernel::Direct(_)) && self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// Packed weights, bias and slopes of a depthwise layer.
    pub(crate) fn depthwise_parts(&self) -> (&[f32], &[f32], &[f32]) {
        match &self.kernel {
            Kernel::Depthwise { packed } => (packed, &self.bias, &self.slope),
            _ => panic!("not a depthwise layer"),
        }
    }

    /// The micro-kernel weights of a directly computed layer.
    pub(crate) fn direct_packed(&self) -> &Packed {
        match &self.kernel {
            Kernel::Direct(p) => p,
            _ => panic!("not a directly computed layer"),
        }
    }
}

/// Largest kernel: 7×7 (ResNet's stem).
const MAX_TAPS: usize = 49;

/// `input` with `pad` zero pixels around it, into `scratch`.
fn pad_copy(input: &Feature, pad: usize, scratch: &mut Vec<f32>) {
    let (h, w, c) = (input.h, input.w, input.c);
    let pw = w + 2 * pad;
    scratch.resize((h + 2 * pad) * pw * c, 0.0);
    let fill = |(y, row): (usize, &mut [f32])| {
        if y < pad || y >= h + pad {
            row.fill(0.0);
        } else {
            row[..pad * c].fill(0.0);
            row[pad * c..(pad + w) * c].copy_from_slice(&input.data[(y - pad) * w * c..][..w * c]);
            row[(pad + w) * c..].fill(0.0);
        }
    };
    if rayon::current_num_threads() > 1 && h * w * c > 1 << 16 {
        scratch.par_chunks_mut(pw * c).enumerate().for_each(fill);
    } else {
        scratch.chunks_mut(pw * c).enumerate().for_each(fill);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_util::pseudo;

    /// Direct NCHW-semantics convolution as the oracle.
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    fn naive(
        input: &Feature,
        w: &[f32],
        b: &[f32],
        cout: usize,
        k: usize,
        s: usize,
        p: usize,
        dw: bool,
    ) -> Feature {
        let (oh, ow) = (out_size(input.h, k, s, p), out_size(input.w, k, s, p));
        let mut out = Feature::zeros(oh, ow, cout);
        let cin = input.c;
        for oy in 0..oh {
            for ox in 0..ow {
                for co in 0..cout {
                    let mut acc = b[co];
                    let cis: Vec<usize> = if dw { vec![co] } else { (0..cin).collect() };
                    for (j, &ci) in cis.iter().enumerate() {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s + ky) as isize - p as isize;
                                let ix = (ox * s + kx) as isize - p as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= input.h as isize
                                    || ix >= input.w as isize
                                {
                                    continue;
                                }
                                let wi = if dw {
                                    co * k * k + ky * k + kx
                                } else {
                                    ((co * cin + j) * k + ky) * k + kx
                                };
                                acc += w[wi]
                                    * input.data[(iy as usize * input.w + ix as usize) * cin + ci];
                            }
                        }
                    }
                    out.data[(oy * ow + ox) * cout + co] = acc;
                }
            }
        }
        out
    }

    fn act_of(i: usize) -> Activation {
        [
            Activation::Identity,
            Activation::Relu,
            Activation::Leaky(0.1),
        ][i % 3]
    }

    /// Kernel shapes each path must get right: strides 1 and 2, odd sizes, channel counts
    /// that are not multiples of the vector width or panel, rows longer than a Winograd block
    /// and maps longer than a 1×1 strip.
    type Case = (usize, usize, usize, usize, usize, usize, usize, bool);
    const CASES: &[Case] = &[
        // (h, w, cin, cout, k, stride, pad, depthwise)
        (7, 9, 3, 8, 3, 2, 1, false),
        (6, 5, 8, 16, 1, 1, 0, false),
        (5, 6, 4, 4, 3, 1, 1, false),
        (9, 7, 16, 16, 3, 1, 1, true),
        (9, 8, 16, 16, 3, 2, 1, true),
        (11, 11, 3, 4, 7, 2, 3, false),
        (8, 8, 4, 6, 1, 2, 0, false),
        (13, 11, 12, 20, 3, 1, 1, false),
        (9, 14, 64, 48, 3, 1, 1, false),
        (10, 81, 16, 16, 3, 1, 1, false),
        (1, 1, 8, 5, 3, 1, 1, false),
        (7, 13, 37, 70, 1, 1, 0, false),
        (20, 15, 9, 33, 1, 1, 0, false),
        (5, 19, 13, 13, 3, 1, 1, true),
        (6, 7, 20, 20, 3, 2, 1, true),
        (1, 2, 8, 8, 3, 1, 1, true),
        (2, 3, 24, 17, 3, 2, 1, false),
        (9, 9, 3, 8, 3, 2, 1, false),
    ];

    fn check(simd: Simd) {
        for (n, &(h, w, cin, cout, k, s, p, dw)) in CASES.iter().enumerate() {
            let input = Feature {
                h,
                w,
                c: cin,
                data: pseudo(h * w * cin, n as u32 + 1),
            };
            let wn = if dw { cout * 9 } else { cout * cin * k * k };
            let wt = pseudo(wn, 2);
            let b = pseudo(cout, 3);
            // Per-channel activations when the layer is dense, as fused layers have.
            let acts: Vec<Activation> = if dw {
                vec![act_of(n)]
            } else {
                (0..cout).map(|j| act_of(n + j)).collect()
            };
            let conv = Conv2d::with_activations(
                &wt,
                &b,
                (cout, if dw { cout } else { cin }, k),
                s,
                p,
                dw,
                &acts,
            );
            let (oh, ow) = conv.out_hw(h, w);
            let mut out = vec![0.0; oh * ow * cout];
            conv.run(simd, &input, 0, &mut out, cout, 0, &mut Vec::new());
            let mut want = naive(&input, &wt, &b, cout, k, s, p, dw);
            for (i, v) in want.data.iter_mut().enumerate() {
                *v = acts[(i % cout) % acts.len()].apply(*v);
            }
            // Portable on the same input: the SIMD paths must agree with it closely.
            let mut port = vec![0.0; oh * ow * cout];
            conv.run(
                Simd::Portable,
                &input,
                0,
                &mut port,
                cout,
                0,
                &mut Vec::new(),
            );
            let case = (simd, h, w, cin, cout, k, s, p, dw);
            for ((a, b), c) in out.iter().zip(&want.data).zip(&port) {
                assert!(
                    (a - b).abs() < 2e-4 * (1.0 + b.abs()),
                    "{a} vs naive {b} for {case:?}"
                );
                assert!(
                    (a - c).abs() < 1e-4 * (1.0 + c.abs()),
                    "{a} vs portable {c} for {case:?}"
                );
            }
        }
    }

    #[test]
    fn every_simd_path_matches_naive_and_portable() {
        for simd in Simd::ALL {
            if simd.supported() {
                check(simd);
            } else {
                // Straight to stderr, past the test harness's capture: a path this machine
                // cannot run must be visible in every test log, never silently "passed".
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "NOT TESTED: SIMD path `{}` (this CPU cannot run it)",
                    simd.name()
                );
            }
        }
    }

    /// The direct constructor on shapes that would go to Winograd: a plain sum of products,
    /// within 1e-5 relative of the oracle on every SIMD path this machine has.
    #[test]
    fn direct_constructor_never_uses_winograd() {
        for &(h, w, cin, cout) in &[(13, 11, 12, 20), (9, 14, 64, 48), (10, 81, 16, 16)] {
            let input = Feature {
                h,
                w,
                c: cin,
                data: pseudo(h * w * cin, 7),
            };
            let (wt, b) = (pseudo(cout * cin * 9, 2), pseudo(cout, 3));
            let conv =
                Conv2d::direct_from_oihw(&wt, &b, (cout, cin, 3), 1, 1, Activation::Identity);
            assert!(matches!(conv.kernel, Kernel::Direct(_)));
            let want = naive(&input, &wt, &b, cout, 3, 1, 1, false);
            for simd in Simd::ALL.into_iter().filter(|s| s.supported()) {
                let mut out = vec![0.0; h * w * cout];
                conv.run(simd, &input, 0, &mut out, cout, 0, &mut Vec::new());
                for (a, b) in out.iter().zip(&want.data) {
                    assert!(
                        (a - b).abs() < 1e-5 * (1.0 + b.abs()),
                        "{a} vs naive {b}: {simd:?} {h}×{w}×{cin} → {cout}"
                    );
                }
            }
        }
    }

    #[test]
    fn depthwise_pointwise_fused_equals_separate() {
        for (n, &(h, w, c, cout, s)) in [(9, 13, 8, 16, 1), (10, 7, 12, 20, 2), (5, 3, 16, 8, 2)]
            .iter()
            .enumerate()
        {
            let input = Feature {
                h,
                w,
                c,
                data: pseudo(h * w * c, 20 + n as u32),
            };
            let leaky = Activation::Leaky(0.1);
            let dw = Conv2d::from_oihw(
                &pseudo(9 * c, 21),
                &pseudo(c, 22),
                (c, c, 3),
                s,
                1,
                true,
                leaky,
            );
            let pw = Conv2d::from_oihw(
                &pseudo(cout * c, 23),
                &pseudo(cout, 24),
                (cout, c, 1),
                1,
                0,
                false,
                leaky,
            );
            for simd in Simd::ALL.into_iter().filter(|s| s.supported()) {
                let (oh, ow) = dw.out_hw(h, w);
                let mut mid = Feature::zeros(oh, ow, c);
                dw.run(simd, &input, 0, &mut mid.data, c, 0, &mut Vec::new());
                let mut want = Feature::zeros(oh, ow, cout);
                pw.run(simd, &mid, 0, &mut want.data, cout, 0, &mut Vec::new());
                let mut got = Feature::default();
                dw.depthwise_pointwise(simd, &pw, &input, &mut got);
                assert_eq!((got.h, got.w, got.c), (oh, ow, cout));
                for (a, b) in got.data.iter().zip(&want.data) {
                    assert!((a - b).abs() < 1e-5, "{simd:?}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn reads_and_writes_channel_slices() {
        // Winograd (cin ≥ 8), direct 1×1 and direct strided, each reading channels 3.. of a
        // wider input and writing channels 2.. of a wider output.
        for (n, &(k, s, p, cin, cout)) in [(3, 1, 1, 10, 12), (1, 1, 0, 10, 18), (3, 2, 1, 9, 7)]
            .iter()
            .enumerate()
        {
            let (h, w, wide_in) = (7, 10, cin + 5);
            let full_in = Feature {
                h,
                w,
                c: wide_in,
                data: pseudo(h * w * wide_in, 9 + n as u32),
            };
            let mut part = Feature::zeros(h, w, cin);
            for px in 0..h * w {
                part.data[px * cin..(px + 1) * cin]
                    .copy_from_slice(&full_in.data[px * wide_in + 3..][..cin]);
            }
            let conv = Conv2d::from_oihw(
                &pseudo(cout * cin * k * k, 4),
                &pseudo(cout, 5),
                (cout, cin, k),
                s,
                p,
                false,
                Activation::Leaky(0.1),
            );
            for simd in Simd::ALL.into_iter().filter(|s| s.supported()) {
                let mut alone = Feature::default();
                conv.forward(&part, &mut alone, &mut Vec::new());
                let oc = cout + 4;
                let mut wide = vec![7.0; alone.pixels() * oc];
                conv.run(simd, &full_in, 3, &mut wide, oc, 2, &mut Vec::new());
                for px in 0..alone.pixels() {
                    let got = &wide[px * oc..(px + 1) * oc];
                    assert_eq!(&got[..2], &[7.0, 7.0]);
                    assert_eq!(&got[2 + cout..], &[7.0, 7.0]);
                    for (a, b) in got[2..2 + cout].iter().zip(&alone.data[px * cout..]) {
                        assert!((a - b).abs() < 1e-4, "{simd:?} {k}×{k}/{s}: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn writes_into_channel_slice() {
        let input = Feature {
            h: 4,
            w: 4,
            c: 2,
            data: pseudo(32, 5),
        };
        let wt = pseudo(3 * 2 * 9, 6);
        let conv = Conv2d::from_oihw(
            &wt,
            &[0.5, -0.5, 0.0],
            (3, 2, 3),
            1,
            1,
            false,
            Activation::Relu,
        );
        let mut full = Feature::default();
        conv.forward(&input, &mut full, &mut Vec::new());
        let mut wide = vec![7.0; 16 * 5];
        conv.forward_into(&input, &mut wide, 5, 1, &mut Vec::new());
        for p in 0..16 {
            assert_eq!(wide[p * 5], 7.0);
            assert_eq!(wide[p * 5 + 4], 7.0);
            assert_eq!(&wide[p * 5 + 1..p * 5 + 4], &full.data[p * 3..p * 3 + 3]);
            assert!(full.data[p * 3..p * 3 + 3].iter().all(|&v| v >= 0.0));
        }
    }
}
