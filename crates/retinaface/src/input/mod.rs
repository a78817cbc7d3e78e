//! Image input: decoding (JPEG, PNG, WebP, BMP, TIFF), EXIF orientation, size limits checked
//! before any large allocation, and conversion to the network's input tensor.

use crate::engine::Feature;
use crate::error::ImageError;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use std::io::{BufRead, Cursor, Seek};
use std::path::Path;

#[cfg(feature = "libjpeg")]
mod jpeg;
pub mod resize;

/// Largest image accepted by default: 100 megapixels (a 1080p frame is 2).
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Decode an image file to RGB, EXIF orientation applied, refusing more than
/// [`DEFAULT_MAX_PIXELS`] before decoding.
pub fn load_image(path: &Path) -> Result<RgbImage, ImageError> {
    load_image_limited(path, DEFAULT_MAX_PIXELS)
}

/// [`load_image`] with an explicit pixel limit.
pub fn load_image_limited(path: &Path, max_pixels: u64) -> Result<RgbImage, ImageError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_owned(),
        source,
    })?;
    decode_bytes(&bytes, path, max_pixels)
}

/// Decode image bytes (the format guessed from the content); `name` appears in errors.
pub fn decode_bytes(bytes: &[u8], name: &Path, max_pixels: u64) -> Result<RgbImage, ImageError> {
    #[cfg(feature = "libjpeg")]
    if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        let check = |w: u32, h: u32| {
            if u64::from(w) * u64::from(h) > max_pixels {
                Err(format!(
                    "image is {w}×{h}, above the limit of {max_pixels} pixels"
                ))
            } else {
                Ok(())
            }
        };
        match jpeg::decode(bytes, check) {
            Ok(jpeg::Decoded::Image(img, orientation)) => {
                let mut img = DynamicImage::ImageRgb8(img);
                img.apply_orientation(orientation);
                return Ok(img.into_rgb8());
            }
            Ok(jpeg::Decoded::Unsupported) => {}
            Err(reason) => {
                return Err(ImageError::Decode {
                    path: name.to_owned(),
                    reason,
                })
            }
        }
    }
    decode(ImageReader::new(Cursor::new(bytes)), name, max_pixels)
}

fn decode<R: BufRead + Seek>(
    reader: ImageReader<R>,
    path: &Path,
    max_pixels: u64,
) -> Result<RgbImage, ImageError> {
    let err = |reason: String| ImageError::Decode {
        path: path.to_owned(),
        reason,
    };
    let mut reader = reader
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?;
    if reader.format().is_none() {
        if let Ok(f) = image::ImageFormat::from_path(path) {
            reader.set_format(f);
        } else {
            return Err(err(
                "not an image in a supported format (JPEG, PNG, WebP, BMP, TIFF)".into(),
            ));
        }
    }
    let mut limits = image::Limits::default();
    // The decoder's own buffers stay within a few bytes per pixel of the limit.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(1 << 26));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| err(describe(&e)))?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ImageError::TooLarge {
            path: path.to_owned(),
            width,
            height,
            max_pixels,
        });
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| err(describe(&e)))?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

fn describe(e: &image::ImageError) -> String {
    match e {
        image::ImageError::Unsupported(_) => format!("unsupported image: {e}"),
        image::ImageError::Limits(_) => format!("image too large: {e}"),
        _ => format!("cannot decode image: {e}"),
    }
}

/// The network input: BGR minus `mean_bgr`, NHWC, into a reused buffer.
pub fn to_tensor_into(img: &RgbImage, mean_bgr: [f32; 3], out: &mut Feature) {
    let (w, h) = img.dimensions();
    out.reshape(h as usize, w as usize, 3);
    for (dst, px) in out.data.chunks_exact_mut(3).zip(img.pixels()) {
        dst[0] = px[2] as f32 - mean_bgr[0];
        dst[1] = px[1] as f32 - mean_bgr[1];
        dst[2] = px[0] as f32 - mean_bgr[2];
    }
}
