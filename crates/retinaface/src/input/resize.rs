//! Resizing for single-scale modes and the test-time image pyramid.
//!
//! The reference protocol (`shared/tools/ref/retinaface_tta.py`) resizes with Pillow's
//! `Image.resize((round(W·k), round(H·k)), Image.BILINEAR)`. That is not OpenCV's
//! `INTER_LINEAR`: Pillow's bilinear is a separable triangle filter whose support widens with
//! the reduction factor (it antialiases when shrinking), with coefficients rounded to 22-bit
//! fixed point and every pass rounded to 8 bits. [`resize_bilinear`] reproduces Pillow's
//! `ImagingResample` (`src/libImaging/Resample.c`, as of Pillow 13.0, the reference
//! environment's) operation for operation: the same coefficients, the same order of the two
//! passes, the same integer rounding; the pixels are identical (checked on WIDER images at
//! every pyramid scale, and by the fixture of `tests/tta.rs`), so our passes see what the
//! reference's see.
//! Sizes are rounded as Python's `round` does (half to even).

use image::RgbImage;

/// Fixed-point precision of Pillow's 8-bit resampling (`32 − 8 − 2`).
const PRECISION_BITS: u32 = 22;

/// The size of one detection pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resize {
    /// The image as it is.
    Original,
    /// Scale so that the short side is this many pixels (aspect ratio kept).
    Short(u32),
    /// Scale so that the long side is this many pixels (aspect ratio kept).
    Long(u32),
}

impl Resize {
    /// The scale factor `k` for a `w`×`h` image (1 for [`Resize::Original`]).
    pub fn factor(self, w: u32, h: u32) -> f64 {
        match self {
            Resize::Original => 1.0,
            Resize::Short(s) => f64::from(s) / f64::from(w.min(h).max(1)),
            Resize::Long(s) => f64::from(s) / f64::from(w.max(h).max(1)),
        }
    }

    /// Parse `original`, `short:N` or `long:N` (N ≥ 1).
    pub fn parse(text: &str) -> Result<Resize, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("original") {
            return Ok(Resize::Original);
        }
        let bad =
            || format!("'{text}': expected original, short:N or long:N (N a positive integer)");
        let (kind, n) = t.split_once(':').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        match kind.trim().to_ascii_lowercase().as_str() {
            "short" => Ok(Resize::Short(n)),
            "long" => Ok(Resize::Long(n)),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Resize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resize::Original => f.write_str("original"),
            Resize::Short(n) => write!(f, "short:{n}"),
            Resize::Long(n) => write!(f, "long:{n}"),
        }
    }
}

impl std::str::FromStr for Resize {
    type Err = String;
    fn from_str(s: &str) -> Result<Resize, String> {
        Resize::parse(s)
    }
}

/// The reference's output size for scale `k`: `(max(1, round(w·k)), max(1, round(h·k)))`
/// with Python's round (half to even).
pub fn scaled_size(w: u32, h: u32, k: f64) -> (u32, u32) {
    let r = |v: u32| {
        let x = (f64::from(v) * k).round_ties_even();
        if x >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            (x as u32).max(1)
        }
    };
    (r(w), r(h))
}

/// Per output position: first input index, number of taps, and the taps (fixed point).
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    k: Vec<i32>,
}

/// Pillow's `precompute_coeffs` (bilinear filter, box `[0, in_size]`) followed by
/// `normalize_coeffs_8bpc`.
fn precompute(in_size: u32, out_size: u32) -> Coeffs {
    // The box is float in Pillow: in0 = 0, in1 = in_size (exact for any real image size).
    let (in0, in1) = (0.0f32, in_size as f32);
    let scale = f64::from(in1 - in0) / f64::from(out_size);
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support 1.0 × filterscale
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size as usize);
    let mut k = vec![0i32; out_size as usize * ksize];
    let mut w = vec![0f64; ksize];
    let one = f64::from(1u32 << PRECISION_BITS);
    for xx in 0..out_size as usize {
        let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) truncates toward zero, as `as i64` does.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size)) - xmin;
        let n = xmax.max(0) as usize;
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            let t = (((x as i64 + xmin) as f64 - center + 0.5) * ss).abs();
            *wx = if t < 1.0 { 1.0 - t } else { 0.0 };
            ww += *wx;
        }
        let row = &mut k[xx * ksize..xx * ksize + ksize];
        for (dst, &wx) in row.iter_mut().zip(&w).take(n) {
            let v = if ww != 0.0 { wx / ww } else { wx };
            *dst = if v < 0.0 {
                (-0.5 + v * one) as i32
            } else {
                (0.5 + v * one) as i32
            };
        }
        bounds.push((xmin as usize, n));
    }
    Coeffs { ksize, bounds, k }
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's `ImagingResampleHorizontal_8bpc` on rows `first..first + rows` of a
/// `w`-wide RGB buffer.
fn horizontal(src: &[u8], w: usize, first: usize, rows: usize, c: &Coeffs) -> Vec<u8> {
    let out_w = c.bounds.len();
    let mut out = vec![0u8; rows * out_w * 3];
    let half = 1i32 << (PRECISION_BITS - 1);
    for (r, dst_row) in out.chunks_exact_mut(out_w * 3).enumerate() {
        let src_row = &src[(first + r) * w * 3..(first + r + 1) * w * 3];
        for (xx, dst) in dst_row.chunks_exact_mut(3).enumerate() {
            let (xmin, n) = c.bounds[xx];
            let k = &c.k[xx * c.ksize..xx * c.ksize + n];
            let (mut s0, mut s1, mut s2) = (half, half, half);
            for (px, &kx) in src_row[xmin * 3..(xmin + n) * 3].chunks_exact(3).zip(k) {
                s0 += i32::from(px[0]) * kx;
                s1 += i32::from(px[1]) * kx;
                s2 += i32::from(px[2]) * kx;
            }
            dst[0] = clip8(s0);
            dst[1] = clip8(s1);
            dst[2] = clip8(s2);
        }
    }
    out
}

/// Pillow's `ImagingResampleVertical_8bpc` on a `w`-wide RGB buffer whose first row is
/// source row `row0`.
fn vertical(src: &[u8], w: usize, row0: usize, c: &Coeffs) -> Vec<u8> {
    let stride = w * 3;
    let mut out = vec![0u8; c.bounds.len() * stride];
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut acc = vec![0i32; stride];
    for (yy, dst_row) in out.chunks_exact_mut(stride).enumerate() {
        let (ymin, n) = c.bounds[yy];
        let k = &c.k[yy * c.ksize..yy * c.ksize + n];
        acc.fill(half);
        for (y, &ky) in k.iter().enumerate() {
            let r = ymin + y - row0;
            for (a, &p) in acc.iter_mut().zip(&src[r * stride..(r + 1) * stride]) {
                *a += i32::from(p) * ky;
            }
        }
        for (d, &a) in dst_row.iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
    out
}

/// Resize an RGB image to `width`×`height` exactly as Pillow's
/// `Image.resize((width, height), Image.BILINEAR)` does (Pillow 13: a pass is skipped
/// where its size is unchanged; the vertical pass runs first when the height shrinks by
/// more than twice as many pixels as the width, else the horizontal pass runs first, over
/// only the rows the vertical pass reads). A zero-sized request or input gives an empty
/// image of the requested size.
pub fn resize_bilinear(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if (w, h) == (width, height) {
        return img.clone();
    }
    if w == 0 || h == 0 || width == 0 || height == 0 {
        return RgbImage::new(width, height);
    }
    let (wu, hu, ow, oh) = (w as usize, h as usize, width as usize, height as usize);
    let need_h = width != w;
    let need_v = height != h;
    let src = img.as_raw();
    // Pillow 13's order (ImagingResampleInner): vertical first iff the height is scaled
    // down, by more than twice the pixels the width is.
    let vertical_first =
        height < h && i64::from(h) - i64::from(height) > 2 * (i64::from(w) - i64::from(width));
    let out = if !need_v {
        horizontal(src, wu, 0, hu, &precompute(w, width))
    } else if !need_h {
        vertical(src, wu, 0, &precompute(h, height))
    } else if vertical_first {
        let tmp = vertical(src, wu, 0, &precompute(h, height));
        horizontal(&tmp, wu, 0, oh, &precompute(w, width))
    } else {
        let vert = precompute(h, height);
        // Only the source rows that the vertical pass reads.
        let first = vert.bounds[0].0;
        let last = vert.bounds[oh - 1].0 + vert.bounds[oh - 1].1;
        let tmp = horizontal(src, wu, first, last - first, &precompute(w, width));
        vertical(&tmp, ow, first, &vert)
    };
    RgbImage::from_raw(width, height, out).expect("buffer of the right size")
}

/// Resize by `mode` as the reference does; returns the image (borrowed when unchanged) and
/// the factor `k` by which coordinates in it are divided to return to the original.
pub fn resize_mode(img: &RgbImage, mode: Resize) -> (std::borrow::Cow<'_, RgbImage>, f64) {
    let (w, h) = img.dimensions();
    let k = mode.factor(w, h);
    let (nw, nh) = scaled_size(w, h, k);
    if mode == Resize::Original || (nw, nh) == (w, h) {
        (std::borrow::Cow::Borrowed(img), k)
    } else {
        (std::borrow::Cow::Owned(resize_bilinear(img, nw, nh)), k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_modes() {
        assert_eq!(Resize::parse("short:640"), Ok(Resize::Short(640)));
        assert_eq!(Resize::parse("LONG:1024"), Ok(Resize::Long(1024)));
        assert_eq!(Resize::parse("original"), Ok(Resize::Original));
        assert!(Resize::parse("short:0").is_err());
        assert!(Resize::parse("wide:3").is_err());
        assert!(Resize::parse("640").is_err());
    }

    #[test]
    fn rounding_is_half_to_even() {
        // 5 × 0.5 = 2.5 → 2 and 7 × 0.5 = 3.5 → 4 (Python's round).
        assert_eq!(scaled_size(5, 7, 0.5), (2, 4));
        assert_eq!(scaled_size(1, 1, 0.01), (1, 1));
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(13, 7, image::Rgb([10, 200, 255]));
        for (w, h) in [(5, 3), (40, 21), (13, 20), (3, 7)] {
            let r = resize_bilinear(&img, w, h);
            assert_eq!(r.dimensions(), (w, h));
            assert!(r.pixels().all(|p| p.0 == [10, 200, 255]));
        }
    }
}
