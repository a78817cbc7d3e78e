//! Depthwise 3×3 convolution (pad 1) computed directly over NHWC rows: the channel loop is
//! innermost and contiguous, so it vectorises.

use super::{out_size, Activation, Feature};
use rayon::prelude::*;

/// `packed` is `[(ky, kx)][c]`; output channel `j` of pixel `p` goes to `out[p*out_c+offset+j]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv3x3(
    input: &Feature,
    packed: &[f32],
    bias: &[f32],
    stride: usize,
    act: Activation,
    out: &mut [f32],
    out_c: usize,
    offset: usize,
) {
    let c = input.c;
    let (h, w) = (input.h, input.w);
    let oh = out_size(h, 3, stride, 1);
    let ow = out_size(w, 3, stride, 1);
    out[..oh * ow * out_c]
        .par_chunks_mut(ow * out_c)
        .enumerate()
        .for_each(|(oy, orow)| {
            for ox in 0..ow {
                let acc = &mut orow[ox * out_c + offset..ox * out_c + offset + c];
                acc.copy_from_slice(bias);
                for ky in 0..3 {
                    let iy = (oy * stride + ky) as isize - 1;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..3 {
                        let ix = (ox * stride + kx) as isize - 1;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        let src = &input.data[(iy as usize * w + ix as usize) * c..][..c];
                        let wt = &packed[(ky * 3 + kx) * c..][..c];
                        for ((a, &x), &k) in acc.iter_mut().zip(src).zip(wt) {
                            *a += x * k;
                        }
                    }
                }
                act.apply_slice(acc);
            }
        });
}
