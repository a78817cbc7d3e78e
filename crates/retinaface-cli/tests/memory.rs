//! Memory bounded by design: the largest photos the defaults accept (100 megapixels) and a
//! decompression bomb are detected and anonymised within the bound the README states,
//! measured as the children's peak resident memory (getrusage).

mod common;

use common::{retinaface as run, s, shared, temp};

/// The bound the README states for `detect`, `align` and `anonymize` with default options.
const BOUND_BYTES: u64 = 1_500_000_000;

/// Peak resident memory of every child reaped so far, in bytes.
fn children_peak() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0);
    usage.ru_maxrss as u64 * 1024 // kilobytes on Linux
}

#[test]
fn largest_photos_and_a_bomb_stay_under_the_bound() {
    let dir = temp("memory");
    // 100 megapixels (the default limit, exactly), tiled from the group photo.
    let tile = image::open(shared().join("data/photos/t1.jpg"))
        .unwrap()
        .into_rgb8();
    let big = image::RgbImage::from_fn(10_000, 10_000, |x, y| {
        *tile.get_pixel(x % tile.width(), y % tile.height())
    });
    let jpeg = dir.join("big.jpg");
    big.save(&jpeg).unwrap();
    drop(big);
    // A bomb: 100 megapixels of one colour, a few hundred kilobytes of PNG.
    let bomb = dir.join("bomb.png");
    {
        let flat = image::RgbImage::from_pixel(10_000, 10_000, image::Rgb([90, 120, 150]));
        let f = std::io::BufWriter::new(std::fs::File::create(&bomb).unwrap());
        let enc = image::codecs::png::PngEncoder::new_with_quality(
            f,
            image::codecs::png::CompressionType::Best,
            image::codecs::png::FilterType::NoFilter,
        );
        use image::ImageEncoder;
        enc.write_image(
            flat.as_raw(),
            10_000,
            10_000,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    }
    assert!(std::fs::metadata(&bomb).unwrap().len() < 2_000_000);

    let before = children_peak();
    let out = run(&["detect", s(&jpeg), "--json", "-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let detect_peak = children_peak();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let faces = json[0]["faces"].as_array().unwrap().len();
    assert!(faces > 100, "{faces} faces in 90 tiles of the group photo");

    let out = run(&[
        "anonymize",
        s(&jpeg),
        s(&bomb),
        "--out",
        s(&dir.join("out")),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let anonymize_peak = children_peak();
    eprintln!(
        "peak resident memory: detect {} MB, anonymize (JPEG and bomb) {} MB (before: {} MB)",
        detect_peak / 1_000_000,
        anonymize_peak / 1_000_000,
        before / 1_000_000
    );
    assert!(detect_peak < BOUND_BYTES, "detect: {detect_peak} bytes");
    assert!(
        anonymize_peak < BOUND_BYTES,
        "anonymize: {anonymize_peak} bytes"
    );

    // Above the limit: a header claiming 50,000 × 50,000 is refused before decoding.
    let mut png = std::fs::read(&bomb).unwrap();
    png[16..20].copy_from_slice(&50_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&50_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let claimed = dir.join("claimed.png");
    std::fs::write(&claimed, &png).unwrap();
    let out = run(&["detect", s(&claimed)]);
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("above the limit of 100000000 pixels"), "{e}");
    assert!(children_peak() < BOUND_BYTES);
}

/// CRC-32 (PNG's chunk checksum).
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
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
