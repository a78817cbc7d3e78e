//! JPEG through libjpeg-turbo (islow IDCT, fancy upsampling: the defaults PIL and OpenCV use),
//! so our pixels — and detections — are those of the Python stacks.

use image::metadata::Orientation;
use image::RgbImage;
use mozjpeg::{Decompress, Marker};
use std::os::raw::c_int;

/// Outcome of a libjpeg decode attempt.
pub(crate) enum Decoded {
    Image(RgbImage, Orientation),
    /// libjpeg cannot give RGB for this file (CMYK, YCCK): let the generic decoder try.
    Unsupported,
}

/// libjpeg's message for the error or warning `cinfo` holds.
fn message(cinfo: &mut mozjpeg_sys::jpeg_common_struct) -> String {
    let mut buffer = [0u8; 80];
    // SAFETY: `err` is installed before libjpeg can report anything; format_message writes at
    // most JMSG_LENGTH_MAX (80) bytes into the buffer (the binding declares it `&`, it is `*mut`).
    unsafe {
        let Some(fmt) = cinfo.err.as_ref().and_then(|e| e.format_message) else {
            return "libjpeg error".into();
        };
        type Fmt = unsafe extern "C-unwind" fn(&mut mozjpeg_sys::jpeg_common_struct, &mut [u8; 80]);
        let fmt: Fmt = std::mem::transmute(fmt);
        fmt(cinfo, &mut buffer);
    }
    let end = buffer.iter().position(|&c| c == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

/// Fatal errors unwind back to `decode` (the C library is built with unwinding support).
extern "C-unwind" fn error_exit(cinfo: &mut mozjpeg_sys::jpeg_common_struct) {
    let msg = message(cinfo);
    std::panic::resume_unwind(Box::new(msg));
}

/// libjpeg reports recoverable damage as warnings and fills in grey; a truncated photo must be
/// refused, not detected on, so a premature end of data is made fatal.
extern "C-unwind" fn emit_message(cinfo: &mut mozjpeg_sys::jpeg_common_struct, level: c_int) {
    // SAFETY: as in `message`.
    let code = unsafe { cinfo.err.as_ref().map_or(0, |e| e.msg_code) };
    if level < 0 && code == mozjpeg_sys::JWRN_JPEG_EOF as c_int {
        std::panic::resume_unwind(Box::new(
            "file is truncated (premature end of JPEG data)".to_string(),
        ));
    }
}

pub(crate) fn error_manager() -> mozjpeg_sys::jpeg_error_mgr {
    // SAFETY: jpeg_std_error fills every field of a zeroed manager.
    let mut err: mozjpeg_sys::jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
    err.error_exit = Some(error_exit);
    err.emit_message = Some(emit_message);
    err
}

/// Decode to RGB with the EXIF orientation; `check` sees the size before any pixel is decoded.
pub(crate) fn decode(
    bytes: &[u8],
    check: impl FnOnce(u32, u32) -> Result<(), String>,
) -> Result<Decoded, String> {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || -> Result<Decoded, String> {
            let d = Decompress::with_err(error_manager())
                .with_markers(&[Marker::APP(1)])
                .from_mem(bytes)
                .map_err(|e| e.to_string())?;
            let (w, h) = (d.width() as u32, d.height() as u32);
            check(w, h)?;
            if matches!(
                d.color_space(),
                mozjpeg::ColorSpace::JCS_CMYK | mozjpeg::ColorSpace::JCS_YCCK
            ) {
                return Ok(Decoded::Unsupported);
            }
            let orientation = d
                .markers()
                .find_map(|m| {
                    m.data
                        .strip_prefix(b"Exif\0\0")
                        .and_then(Orientation::from_exif_chunk)
                })
                .unwrap_or(Orientation::NoTransforms);
            let mut started = d.rgb().map_err(|e| e.to_string())?;
            let pixels = started.read_scanlines::<u8>().map_err(|e| e.to_string())?;
            started.finish().map_err(|e| e.to_string())?;
            let img =
                RgbImage::from_raw(w, h, pixels).ok_or("decoded size does not match the header")?;
            Ok(Decoded::Image(img, orientation))
        },
    ));
    match result {
        Ok(r) => r,
        Err(payload) => Err(payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "libjpeg failed".into())),
    }
}
