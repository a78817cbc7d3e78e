//! The trainer's own kernels behind burn's autodiff, where burn's CPU backend is slow for
//! RetinaFace's layer shapes: [`dense`] stride-1 convolutions (1×1 as [`pointwise`] matrix
//! products, larger filters on the inference engine's kernels), [`depthwise`] convolution,
//! [`patches`] for the strided ones, BatchNorm in training mode fused with its activation
//! ([`norm`]) and nearest upsampling ([`resample`]), forward and backward, exposed to the
//! network as [`convolution`], [`depthwise_conv2d`], [`batch_norm_act`], [`leaky_relu`] and
//! [`upsample_nearest`] (a burn backend extension with its own backward passes).
//!
//! Each kernel is compiled for several instruction sets (the `isa_fn!` macro) and picks the best one
//! the machine has at run time ([`Isa`]); tests run every set the machine supports.

pub mod dense;
pub mod depthwise;
pub mod norm;
mod op;
pub mod patches;
pub mod pointwise;
pub mod resample;

use rayon::prelude::*;
use std::mem::MaybeUninit;

pub use op::{
    batch_norm_act, convolution, depthwise_conv2d, leaky_relu, set_custom_kernels, unfold_patches,
    upsample_nearest,
};

/// A vector of `len` values made in parallel chunks of `chunk` values (the last may be
/// shorter), without zero-filling the memory first: `f(i, values)` writes chunk `i`.
///
/// Why: each fresh output was zero-filled by the allocator and overwritten right after
/// (about 5 % of a training step in `memset` under `perf`).
///
/// # Safety
/// `f` must write every value of every chunk it is given.
pub(crate) unsafe fn written(
    len: usize,
    chunk: usize,
    f: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| f(i, c));
    // SAFETY: the caller's `f` wrote all `len` values.
    unsafe { v.set_len(len) };
    v
}

/// Sets every value of `values` to `v`, and returns them as initialised.
pub(crate) fn filled(values: &mut [MaybeUninit<f32>], v: f32) -> &mut [f32] {
    for value in values.iter_mut() {
        value.write(v);
    }
    // SAFETY: every value was just written, and `MaybeUninit<f32>` has `f32`'s layout.
    unsafe { &mut *(values as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

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

/// Defines `fn name(isa: Isa, args…)` whose body is compiled three times, for AVX-512, for
/// AVX2 with FMA and portably, and runs the one `isa` names where the machine has it.
///
/// Why a macro: the body must be written inside each `#[target_feature]` function, so that
/// the closures it contains inherit the features too. A closure handed to such a function
/// from outside is compiled without them, and the compiler did not inline it: the BatchNorm
/// backward and the depthwise kernels ran as scalar or 4-wide SSE code on an AVX-512 machine
/// (seen in `perf annotate` of a training run).
macro_rules! isa_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(isa: $crate::kernels::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? $body
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? $body
                if isa == $crate::kernels::Isa::Avx512 && isa.supported() {
                    // SAFETY: the CPU has AVX-512F, checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                if isa == $crate::kernels::Isa::Avx2 && isa.supported() {
                    // SAFETY: the CPU has AVX2 and FMA, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            let _ = isa;
            $body
        }
    };
}
pub(crate) use isa_fn;
