//! An anonymised photo written like its input: the same format, size, bit depth and alpha,
//! the ICC colour profile kept (it is not personal data), every other piece of metadata
//! (EXIF, XMP, IPTC, comments, GPS) dropped. Lossless formats stay lossless; a lossy WebP is
//! written lossy at a quality that does not make it larger than the input; a JPEG keeps the
//! coefficients of every block the masks do not touch (see `jpeg.rs`).

use crate::error::ImageError;
use crate::input::{decode_bytes, decode_bytes_native, NativeImage};
use image::metadata::Orientation;
use image::{DynamicImage, ImageEncoder, ImageFormat, RgbImage};
use std::io::Cursor;
use std::path::Path;

/// A photo ready to be anonymised: the RGB pixels the detector sees (EXIF orientation
/// applied) and what re-encoding it faithfully needs.
pub struct Photo {
    /// The oriented RGB image (detect and mask on it).
    pub rgb: RgbImage,
    format: ImageFormat,
    /// The decoded image in its own channels and depth (not kept for JPEG: 8-bit RGB or grey).
    native: Option<DynamicImage>,
    icc_profile: Option<Vec<u8>>,
    orientation: Orientation,
}

/// How the output was encoded, for the user's information.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// JPEG: only the blocks the masks touch were re-encoded.
    JpegBlocks,
    /// JPEG fully re-encoded at quality 95 (colour spaces the block path does not handle).
    JpegFull,
    /// A lossless format, or WebP lossless.
    Lossless,
    /// Lossy WebP at this quality.
    WebpLossy(u8),
}

impl Photo {
    /// Decode `bytes` (named `name` in errors) within `max_pixels`.
    pub fn decode(bytes: &[u8], name: &Path, max_pixels: u64) -> Result<Photo, ImageError> {
        let format = image::guess_format(bytes).ok();
        if format == Some(ImageFormat::Jpeg) {
            let rgb = decode_bytes(bytes, name, max_pixels)?;
            let (orientation, icc_profile) = jpeg_metadata(bytes);
            return Ok(Photo {
                rgb,
                format: ImageFormat::Jpeg,
                native: None,
                icc_profile,
                orientation,
            });
        }
        let NativeImage {
            image,
            format,
            icc_profile,
        } = decode_bytes_native(bytes, name, max_pixels)?;
        // 8-bit RGB needs no second copy: the detector's image is the native one.
        let (rgb, native) = match image {
            DynamicImage::ImageRgb8(rgb) => (rgb, None),
            other => (other.to_rgb8(), Some(other)),
        };
        Ok(Photo {
            rgb,
            format,
            native,
            icc_profile,
            orientation: Orientation::NoTransforms,
        })
    }

    /// The file's format.
    pub fn format(&self) -> ImageFormat {
        self.format
    }

    /// Encode `masked` (this photo's `rgb` after anonymisation) like the input `original`.
    pub fn encode(self, original: &[u8], masked: &RgbImage) -> Result<(Vec<u8>, Encoding), String> {
        if masked.dimensions() != self.rgb.dimensions() {
            return Err("the masked image has another size".into());
        }
        match self.format {
            ImageFormat::Jpeg => self.encode_jpeg(original, masked),
            ImageFormat::WebP if !webp_is_lossless(original) => {
                encode_webp_lossy(masked, original.len()).map(|(b, q)| (b, Encoding::WebpLossy(q)))
            }
            format => {
                let bytes = match self.native {
                    // 8-bit RGB: the masked image is the output.
                    None => encode_lossless(
                        masked.as_raw(),
                        masked.dimensions(),
                        image::ExtendedColorType::Rgb8,
                        format,
                        self.icc_profile,
                    )?,
                    Some(mut native) => {
                        write_back(&mut native, &self.rgb, masked);
                        if format == ImageFormat::Bmp {
                            native = bmp_layout(native);
                        }
                        encode_lossless(
                            native.as_bytes(),
                            (native.width(), native.height()),
                            native.color().into(),
                            format,
                            self.icc_profile,
                        )?
                    }
                };
                Ok((bytes, Encoding::Lossless))
            }
        }
    }

    fn encode_jpeg(
        self,
        original: &[u8],
        masked: &RgbImage,
    ) -> Result<(Vec<u8>, Encoding), String> {
        #[cfg(feature = "libjpeg")]
        {
            let view = Stored {
                before: &self.rgb,
                after: masked,
                orientation: self.orientation,
            };
            if let Ok(bytes) = super::jpeg::replace_blocks(
                original,
                &view,
                self.icc_profile.as_deref(),
                exif_value(self.orientation),
            ) {
                return Ok((bytes, Encoding::JpegBlocks));
            }
        }
        let mut out = Cursor::new(Vec::new());
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95);
        if let Some(icc) = self.icc_profile {
            let _ = enc.set_icc_profile(icc);
        }
        enc.encode_image(masked).map_err(|e| e.to_string())?;
        Ok((out.into_inner(), Encoding::JpegFull))
    }
}

/// The oriented images seen in the file's stored orientation, without a copy.
#[cfg(feature = "libjpeg")]
struct Stored<'a> {
    before: &'a RgbImage,
    after: &'a RgbImage,
    orientation: Orientation,
}

#[cfg(feature = "libjpeg")]
impl Stored<'_> {
    /// Where stored pixel (x, y) lands once the orientation is applied.
    fn oriented(&self, x: u32, y: u32) -> (u32, u32) {
        let (sw, sh) = super::jpeg::Pixels::size(self);
        match self.orientation {
            Orientation::NoTransforms => (x, y),
            Orientation::Rotate90 => (sh - 1 - y, x),
            Orientation::Rotate180 => (sw - 1 - x, sh - 1 - y),
            Orientation::Rotate270 => (y, sw - 1 - x),
            Orientation::FlipHorizontal => (sw - 1 - x, y),
            Orientation::FlipVertical => (x, sh - 1 - y),
            Orientation::Rotate90FlipH => (y, x),
            Orientation::Rotate270FlipH => (sh - 1 - y, sw - 1 - x),
        }
    }
}

#[cfg(feature = "libjpeg")]
impl super::jpeg::Pixels for Stored<'_> {
    fn size(&self) -> (u32, u32) {
        let (w, h) = self.after.dimensions();
        match self.orientation {
            Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH => (h, w),
            _ => (w, h),
        }
    }

    fn changed(&self, x: u32, y: u32) -> bool {
        let (ox, oy) = self.oriented(x, y);
        self.before.get_pixel(ox, oy) != self.after.get_pixel(ox, oy)
    }

    fn masked(&self, x: u32, y: u32) -> [u8; 3] {
        let (ox, oy) = self.oriented(x, y);
        self.after.get_pixel(ox, oy).0
    }
}

/// Copy the pixels where `masked` differs from `before` into `native`, in its own channels and
/// depth; alpha and unchanged pixels keep their values.
fn write_back(native: &mut DynamicImage, before: &RgbImage, masked: &RgbImage) {
    let luma = |p: [u8; 3]| {
        (0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])).round() as u8
    };
    let positions = masked
        .enumerate_pixels()
        .filter(|&(x, y, p)| before.get_pixel(x, y) != p)
        .map(|(x, y, _)| (x, y));
    macro_rules! each {
        ($img:expr, |$px:ident, $rgb:ident| $body:expr) => {
            for (x, y) in positions {
                let $rgb = masked.get_pixel(x, y).0;
                let $px = &mut $img.get_pixel_mut(x, y).0;
                $body;
            }
        };
    }
    let wide = |v: u8| u16::from(v) * 257;
    match native {
        DynamicImage::ImageLuma8(i) => each!(i, |p, c| p[0] = luma(c)),
        DynamicImage::ImageLumaA8(i) => each!(i, |p, c| p[0] = luma(c)),
        DynamicImage::ImageRgb8(i) => each!(i, |p, c| p[..3].copy_from_slice(&c)),
        DynamicImage::ImageRgba8(i) => each!(i, |p, c| p[..3].copy_from_slice(&c)),
        DynamicImage::ImageLuma16(i) => each!(i, |p, c| p[0] = wide(luma(c))),
        DynamicImage::ImageLumaA16(i) => each!(i, |p, c| p[0] = wide(luma(c))),
        DynamicImage::ImageRgb16(i) => each!(i, |p, c| for k in 0..3 {
            p[k] = wide(c[k])
        }),
        DynamicImage::ImageRgba16(i) => each!(i, |p, c| for k in 0..3 {
            p[k] = wide(c[k])
        }),
        DynamicImage::ImageRgb32F(i) => each!(i, |p, c| for k in 0..3 {
            p[k] = f32::from(c[k]) / 255.0
        }),
        DynamicImage::ImageRgba32F(i) => each!(i, |p, c| for k in 0..3 {
            p[k] = f32::from(c[k]) / 255.0
        }),
        other => {
            // A layout added to the image crate later: written as 8-bit RGB(A).
            let mut rgba = other.to_rgba8();
            each!(rgba, |p, c| p[..3].copy_from_slice(&c));
            *other = DynamicImage::ImageRgba8(rgba);
        }
    }
}

fn encode_lossless(
    bytes: &[u8],
    (w, h): (u32, u32),
    color: image::ExtendedColorType,
    format: ImageFormat,
    icc: Option<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    let mut out = Cursor::new(Vec::new());
    let e = |e: image::ImageError| e.to_string();
    macro_rules! write {
        ($enc:expr) => {{
            let mut enc = $enc;
            if let Some(icc) = icc {
                let _ = enc.set_icc_profile(icc);
            }
            enc.write_image(bytes, w, h, color).map_err(e)?;
        }};
    }
    match format {
        ImageFormat::Png => write!(image::codecs::png::PngEncoder::new(&mut out)),
        ImageFormat::WebP => write!(image::codecs::webp::WebPEncoder::new_lossless(&mut out)),
        ImageFormat::Tiff => write!(image::codecs::tiff::TiffEncoder::new(&mut out)),
        // BMP carries no profile.
        ImageFormat::Bmp => image::codecs::bmp::BmpEncoder::new(&mut out)
            .write_image(bytes, w, h, color)
            .map_err(e)?,
        other => return Err(format!("cannot write {other:?}")),
    }
    Ok(out.into_inner())
}

/// BMP holds 8-bit grey, RGB or RGBA.
fn bmp_layout(img: DynamicImage) -> DynamicImage {
    match img {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) => {
            img
        }
        _ if img.color().has_alpha() => DynamicImage::ImageRgba8(img.to_rgba8()),
        _ => DynamicImage::ImageRgb8(img.to_rgb8()),
    }
}

/// Whether a WebP file is lossless (VP8L), from its RIFF chunks.
fn webp_is_lossless(bytes: &[u8]) -> bool {
    let mut pos = 12;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        if id == b"VP8L" {
            return true;
        }
        if id == b"VP8 " {
            return false;
        }
        let len = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]) as usize;
        pos = pos.saturating_add(8).saturating_add(len + (len & 1));
    }
    false
}

/// Lossy WebP no larger than the input: quality 90 down by tens until it fits (at least 50).
fn encode_webp_lossy(img: &RgbImage, input_len: usize) -> Result<(Vec<u8>, u8), String> {
    let encoder = webp::Encoder::from_rgb(img.as_raw(), img.width(), img.height());
    let mut last = None;
    for q in [90u8, 80, 70, 60, 50] {
        let bytes = encoder
            .encode_simple(false, f32::from(q))
            .map_err(|e| format!("WebP encoding failed: {e:?}"))?
            .to_vec();
        let fits = bytes.len() <= input_len;
        last = Some((bytes, q));
        if fits {
            break;
        }
    }
    last.ok_or_else(|| "WebP encoding failed".into())
}

/// The EXIF orientation and the ICC profile of a JPEG, from its markers (before the scan).
fn jpeg_metadata(bytes: &[u8]) -> (Orientation, Option<Vec<u8>>) {
    let mut orientation = Orientation::NoTransforms;
    let mut chunks: Vec<(u8, &[u8])> = Vec::new();
    let mut pos = 2;
    while pos + 4 <= bytes.len() && bytes[pos] == 0xFF {
        let marker = bytes[pos + 1];
        if marker == 0xDA || marker == 0xD9 {
            break;
        }
        let len = usize::from(u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]));
        let Some(data) = bytes.get(pos + 4..pos + 2 + len.max(2)) else {
            break;
        };
        if marker == 0xE1 {
            if let Some(o) = data
                .strip_prefix(b"Exif\0\0")
                .and_then(Orientation::from_exif_chunk)
            {
                orientation = o;
            }
        }
        if marker == 0xE2 && data.len() > 14 && data.starts_with(b"ICC_PROFILE\0") {
            chunks.push((data[12], &data[14..]));
        }
        pos += 2 + len;
    }
    chunks.sort_by_key(|(seq, _)| *seq);
    let icc =
        (!chunks.is_empty()).then(|| chunks.iter().flat_map(|(_, d)| d.iter().copied()).collect());
    (orientation, icc)
}

#[cfg(feature = "libjpeg")]
/// EXIF's number for an orientation.
#[cfg(feature = "libjpeg")]
fn exif_value(o: Orientation) -> u16 {
    match o {
        Orientation::NoTransforms => 1,
        Orientation::FlipHorizontal => 2,
        Orientation::Rotate180 => 3,
        Orientation::FlipVertical => 4,
        Orientation::Rotate90FlipH => 5,
        Orientation::Rotate90 => 6,
        Orientation::Rotate270FlipH => 7,
        Orientation::Rotate270 => 8,
    }
}
