//! Bad input never crashes: each case gives one clear error naming the file and the reason.

mod common;

use retinaface::error::{ImageError, WeightsError};
use retinaface::input::{decode_bytes, load_image};
use retinaface::weights::{self, safetensors, NamedTensors};
use retinaface::{DetectOptions, Detector, Error, ModelConfig};
use std::path::Path;

fn decode(bytes: &[u8], name: &str) -> Result<image::RgbImage, ImageError> {
    decode_bytes(
        bytes,
        Path::new(name),
        retinaface::input::DEFAULT_MAX_PIXELS,
    )
}

#[test]
fn truncated_jpeg_is_refused() {
    let bytes = std::fs::read(common::photo()).unwrap();
    let err = decode(&bytes[..bytes.len() / 2], "cut.jpg")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cut.jpg") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn text_named_jpg_and_empty_file_are_refused() {
    for (bytes, name) in [
        (&b"this is not an image\n"[..], "notes.jpg"),
        (&b""[..], "empty.png"),
    ] {
        let err = decode(bytes, name).unwrap_err().to_string();
        assert!(err.starts_with(name), "{err}");
    }
    let dir = std::env::temp_dir().join(format!("retinaface-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("empty.jpg");
    std::fs::write(&p, b"").unwrap();
    assert!(load_image(&p)
        .unwrap_err()
        .to_string()
        .contains("empty.jpg"));
    assert!(load_image(&dir.join("absent.jpg"))
        .unwrap_err()
        .to_string()
        .contains("absent.jpg"));
}

#[test]
fn one_pixel_image_has_no_faces() {
    let mut png = Vec::new();
    image::RgbImage::new(1, 1)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let img = decode(&png, "dot.png").unwrap();
    let faces = Detector::default_model()
        .unwrap()
        .detect(&img, &DetectOptions::default())
        .unwrap();
    assert!(faces.is_empty());
}

/// A PNG whose header claims 30000×30000: refused from the header, before any pixel buffer.
#[test]
fn huge_png_header_is_refused_before_allocating() {
    let mut png = Vec::new();
    image::RgbImage::new(8, 8)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    // IHDR data starts at byte 16: width, height (big-endian), then the chunk's CRC at 29.
    png[16..20].copy_from_slice(&30000u32.to_be_bytes());
    png[20..24].copy_from_slice(&30000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    match decode(&png, "huge.png") {
        Err(ImageError::TooLarge {
            width: 30000,
            height: 30000,
            ..
        }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn embedded() -> NamedTensors {
    weights::embedded::tensors().unwrap()
}

fn load(tensors: &NamedTensors) -> Result<Detector, Error> {
    let bytes = safetensors::write(tensors, &ModelConfig::mobilenet025()).unwrap();
    let t = weights::read_bytes(&bytes)?;
    Detector::new(&ModelConfig::mobilenet025(), &t)
}

#[test]
fn weights_with_a_missing_tensor_name_it_and_its_shape() {
    let mut t = embedded();
    t.remove("ssh2.conv7X7_2.0.weight");
    let err = load(&t).err().unwrap().to_string();
    assert!(
        err.contains("ssh2.conv7X7_2.0.weight") && err.contains("[16, 16, 3, 3]"),
        "{err}"
    );
}

#[test]
fn weights_with_a_wrong_shape_name_it_and_both_shapes() {
    let mut t = embedded();
    let w = t.get_mut("fpn.merge1.0.weight").unwrap();
    w.shape = vec![64, 64, 9];
    let err = load(&t).err().unwrap().to_string();
    assert!(
        err.contains("fpn.merge1.0.weight")
            && err.contains("[64, 64, 3, 3]")
            && err.contains("[64, 64, 9]"),
        "{err}"
    );
}

#[test]
fn damaged_weight_files_are_refused_with_their_path() {
    let dir = std::env::temp_dir().join(format!("retinaface-w-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let onnx = std::fs::read(common::onnx_model()).unwrap();
    let cases: [(&str, &[u8]); 4] = [
        ("cut.onnx", &onnx[..onnx.len() / 3]),
        (
            "cut.safetensors",
            &weights::embedded::BYTES[..weights::embedded::BYTES.len() - 100],
        ),
        ("random.bin", &[7u8; 64]),
        ("empty.pth", &[]),
    ];
    for (name, bytes) in cases {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let err = Detector::from_file(&p)
            .err()
            .unwrap_or_else(|| panic!("{name} was accepted"));
        assert!(err.to_string().contains(name), "{err}");
        assert!(
            matches!(err, Error::Weights(WeightsError::InFile { .. })),
            "{err:?}"
        );
    }
}
