//! Image input: decoding (JPEG, PNG, WebP, BMP, TIFF), EXIF orientation, size limits checked
//! before any large allocation, and conversion to the network's input tensor.

use crate::engine::Feature;
use crate::error::ImageError;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use std::io::{Cursor, Read};
use std::path::Path;

#[cfg(feature = "libjpeg")]
pub(crate) mod jpeg;
pub mod resize;

/// Largest image accepted by default: 100 megapixels (a 1080p frame is 2).
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Largest input file read by default: 256 MiB (a 100-megapixel JPEG is about 30 MiB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 << 20;

/// Decoded pixels may take this many bytes each (of the pixel limit): 8-bit RGBA at the
/// limit, or 16-bit images of two thirds of it. Keeps a decode within a stated budget.
const DECODED_BYTES_PER_PIXEL: u64 = 4;

/// Decode an image file to RGB, EXIF orientation applied, refusing more than
/// [`DEFAULT_MAX_PIXELS`] before decoding.
pub fn load_image(path: &Path) -> Result<RgbImage, ImageError> {
    load_image_limited(path, DEFAULT_MAX_PIXELS)
}

/// [`load_image`] with an explicit pixel limit.
pub fn load_image_limited(path: &Path, max_pixels: u64) -> Result<RgbImage, ImageError> {
    let bytes = read_input_file(path, DEFAULT_MAX_FILE_BYTES)?;
    decode_bytes(&bytes, path, max_pixels)
}

/// Read a file named by a user: only a regular file (a device, FIFO or socket could block or
/// never end), and at most `max_bytes` (checked before reading, and again while reading, in
/// case the file grows).
pub fn read_input_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, ImageError> {
    let io = |source| ImageError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(ImageError::NotAFile {
            path: path.to_owned(),
            kind: file_kind(&meta.file_type()),
        });
    }
    let too_large = |bytes| ImageError::FileTooLarge {
        path: path.to_owned(),
        bytes,
        max_bytes,
    };
    if meta.len() > max_bytes {
        return Err(too_large(meta.len()));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// What a file that is not a regular one is, for refusal messages ("a FIFO", "a device", …).
pub fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if t.is_dir() {
        "a folder"
    } else {
        "a special file"
    }
}

/// Decode image bytes (the format guessed from the content); `name` appears in errors.
///
/// A panic inside a decoder crate is caught and returned as [`ImageError::DecoderPanic`].
pub fn decode_bytes(bytes: &[u8], name: &Path, max_pixels: u64) -> Result<RgbImage, ImageError> {
    crate::guard::catch(|| decode_rgb(bytes, name, max_pixels)).unwrap_or_else(|message| {
        Err(ImageError::DecoderPanic {
            path: name.to_owned(),
            message,
        })
    })
}

/// The prefix of the `fault-injection` feature's panicking files (test builds only).
#[cfg(feature = "fault-injection")]
pub const INJECTED_DECODER_PANIC: &[u8] = b"RETINAFACE-INJECTED-DECODER-PANIC";

/// Where a decoder crate runs: with `fault-injection`, the marked files panic here.
fn inject_fault(bytes: &[u8]) {
    #[cfg(feature = "fault-injection")]
    if bytes.starts_with(INJECTED_DECODER_PANIC) {
        panic!("index out of bounds: the len is 3 but the index is 7 (injected)");
    }
    let _ = bytes;
}

fn decode_rgb(bytes: &[u8], name: &Path, max_pixels: u64) -> Result<RgbImage, ImageError> {
    inject_fault(bytes);
    #[cfg(feature = "libjpeg")]
    if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        // The size read from the header when it is over the limit: reported as `TooLarge`,
        // like the other formats' (the service answers it 422, not 400).
        let over = std::cell::Cell::new(None);
        let check = |w: u32, h: u32| {
            if u64::from(w) * u64::from(h) > max_pixels {
                over.set(Some((w, h)));
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
            Err(_) if over.get().is_some() => {
                let (width, height) = over.get().unwrap_or_default();
                return Err(ImageError::TooLarge {
                    path: name.to_owned(),
                    width,
                    height,
                    max_pixels,
                });
            }
            Err(reason) => {
                return Err(ImageError::Decode {
                    path: name.to_owned(),
                    reason,
                })
            }
        }
    }
    Ok(decode_native(bytes, name, max_pixels)?.image.into_rgb8())
}

/// An image as stored: its own channels and depth, EXIF orientation applied, with what a
/// faithful re-encoding needs.
#[derive(Debug, Clone)]
pub struct NativeImage {
    pub image: DynamicImage,
    pub format: image::ImageFormat,
    /// The embedded ICC colour profile, if any.
    pub icc_profile: Option<Vec<u8>>,
}

/// Decode bytes keeping channels, bit depth and the ICC profile (for outputs that must look
/// like their input); a decoder panic is caught as in [`decode_bytes`].
pub fn decode_bytes_native(
    bytes: &[u8],
    name: &Path,
    max_pixels: u64,
) -> Result<NativeImage, ImageError> {
    crate::guard::catch(|| decode_native(bytes, name, max_pixels)).unwrap_or_else(|message| {
        Err(ImageError::DecoderPanic {
            path: name.to_owned(),
            message,
        })
    })
}

fn decode_native(bytes: &[u8], path: &Path, max_pixels: u64) -> Result<NativeImage, ImageError> {
    inject_fault(bytes);
    let err = |reason: String| ImageError::Decode {
        path: path.to_owned(),
        reason,
    };
    let mut reader = ImageReader::new(Cursor::new(bytes))
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
    let format = reader
        .format()
        .ok_or_else(|| err("unknown image format".into()))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(
        max_pixels
            .saturating_mul(DECODED_BYTES_PER_PIXEL)
            .max(1 << 26),
    );
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
    let icc_profile = decoder.icc_profile().ok().flatten();
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| err(describe(&e)))?;
    image.apply_orientation(orientation);
    Ok(NativeImage {
        image,
        format,
        icc_profile,
    })
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
