//! Tensors and ops only: dense, depthwise, deformable and transposed convolutions with fused
//! bias and activation, pooling, upsampling, element-wise attention. Knows nothing of faces.
//!
//! Feature maps are NHWC (channels last, batch 1): a pixel's channels are contiguous, so a
//! 1×1 convolution is one GEMM over the map and a convolution can write its output into a
//! channel slice of a wider map (concatenation for free).

mod conv;
mod depthwise;
mod kernel;
mod ops;
mod pipeline;
mod sampled;
mod simd;
mod winograd;

pub use conv::{Activation, Conv2d};
pub use ops::{add_upsampled_nearest, gate, max_pool_3x3_s2};
pub use pipeline::{stem_then_pairs, RowRings};
pub use sampled::{ConvTranspose2x2, DeformConv2d};
pub use simd::Simd;

/// A feature map in NHWC layout (batch 1).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Feature {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    /// `h * w * c` values, channels fastest.
    pub data: Vec<f32>,
}

impl Feature {
    /// A zeroed map.
    pub fn zeros(h: usize, w: usize, c: usize) -> Self {
        Feature {
            h,
            w,
            c,
            data: vec![0.0; h * w * c],
        }
    }

    /// Reshape in place, reusing the allocation when it is large enough; contents unspecified.
    pub fn reshape(&mut self, h: usize, w: usize, c: usize) {
        self.h = h;
        self.w = w;
        self.c = c;
        self.data.resize(h * w * c, 0.0);
    }

    /// Number of pixels.
    pub fn pixels(&self) -> usize {
        self.h * self.w
    }
}

/// Spatial output size of a convolution or pooling window.
pub fn out_size(size: usize, k: usize, stride: usize, pad: usize) -> usize {
    (size + 2 * pad).saturating_sub(k) / stride + 1
}

/// Deterministic test data shared by the engine's tests.
#[cfg(test)]
pub(crate) mod test_util {
    /// `n` values in [-1, 1] from a xorshift stream seeded by `seed`.
    pub fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }
}
