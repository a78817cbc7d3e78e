//! The trainer's own kernels behind burn's autodiff, where burn's CPU backend is slow for
//! RetinaFace's layer shapes: [`depthwise`] convolution, [`dense`] stride-1 convolution on
//! the inference engine's kernels, and BatchNorm in training mode fused
//! with its activation ([`norm`]), forward and backward, exposed to the network as
//! [`depthwise_conv2d`], [`batch_norm_act`] and [`leaky_relu`] (a burn backend extension with
//! its own backward passes).
//!
//! Each kernel is compiled for several instruction sets and picks the best one the machine
//! has at run time ([`Isa`]); tests run every set the machine supports.

pub mod dense;
pub mod depthwise;
pub mod norm;
mod op;
pub mod patches;

pub use op::{
    batch_norm_act, convolution, depthwise_conv2d, leaky_relu, set_custom_kernels, unfold_patches,
};

/// The geometry of a convolution: input `[batch, channels, height, width]`, a square
/// `kernel`, `stride` and `pad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Geometry {
    /// Output height and width.
    pub fn output(&self) -> (usize, usize) {
        let out = |n: usize| match (n + 2 * self.pad).checked_sub(self.kernel) {
            Some(d) => d / self.stride + 1,
            None => 0,
        };
        (out(self.height), out(self.width))
    }

    pub(crate) fn plane(&self) -> usize {
        self.height * self.width
    }

    pub(crate) fn out_plane(&self) -> usize {
        let (oh, ow) = self.output();
        oh * ow
    }

    /// The outputs `ox` whose input column `ox·s + kx − p` lies inside the row.
    pub(crate) fn columns(&self, kx: usize) -> std::ops::Range<usize> {
        let (_, ow) = self.output();
        let (s, p) = (self.stride, self.pad);
        let lo = p.saturating_sub(kx).div_ceil(s);
        // The last ox with ox·s + kx − p ≤ width − 1.
        let hi = if self.width + p > kx {
            ((self.width + p - kx - 1) / s + 1).min(ow)
        } else {
            0
        };
        lo..hi.max(lo)
    }

    /// The input row of output row `oy` under filter row `ky`, if inside the image.
    pub(crate) fn row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride + ky)
            .checked_sub(self.pad)
            .filter(|&iy| iy < self.height)
    }
}

/// An instruction set a kernel is compiled for: the engine's, detected once per process
/// (`RETINAFACE_SIMD` forces one, as for inference).
pub use retinaface::engine::Simd as Isa;

/// Runs `f` compiled for `isa` (inlined into a function with its target features), or
/// portably where the machine lacks it.
#[inline(always)]
pub fn run<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512 && isa.supported() {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { with_avx512(f) };
        }
        if isa == Isa::Avx2 && isa.supported() {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { with_avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}
