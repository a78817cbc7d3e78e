//! Image decoding through our input layer (JPEG by libjpeg-turbo, PNG, WebP, BMP, TIFF by the
//! image crate), as RGB and as the native image that anonymisation re-encodes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use retinaface::error::ImageError;
use retinaface::input::{decode_bytes, decode_bytes_native};
use retinaface_fuzz::{name, MAX_PIXELS};

fuzz_target!(|data: &[u8]| {
    for result in [
        decode_bytes(data, name(), MAX_PIXELS).map(|_| ()),
        decode_bytes_native(data, name(), MAX_PIXELS).map(|_| ()),
    ] {
        if let Err(ImageError::DecoderPanic { message, .. }) = result {
            retinaface_fuzz::caught_panic("a decoder", &message);
        }
    }
});
