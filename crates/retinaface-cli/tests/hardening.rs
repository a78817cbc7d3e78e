//! What users feed the binary by mistake or malice: files that crash decoders, impossible
//! sizes, things that are not files, output folders that hold the inputs, same-named inputs.

mod common;

use common::{detected_faces, retinaface, s, shared, temp};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// No panic message or backtrace ever reaches the user.
fn assert_no_panic_text(o: &Output) {
    let e = stderr(o);
    assert!(
        !e.contains("panicked") && !e.contains("RUST_BACKTRACE"),
        "panic text on stderr: {e}"
    );
}

fn photo() -> PathBuf {
    shared().join("data/photos/t1.jpg")
}

/// A file that makes the decoding step panic, as a decoder crate's bug does: the test build
/// enables the library's `fault-injection` feature for this (the fuzz campaign found no real
/// decoder panic in the decoders' current versions; see fuzz/README.md).
fn panicking_file() -> Vec<u8> {
    let mut bytes = retinaface::input::INJECTED_DECODER_PANIC.to_vec();
    bytes.extend_from_slice(b"\x89PNG palette out of range");
    bytes
}

#[test]
fn a_file_that_crashes_a_decoder_fails_alone() {
    let dir = temp("panicking");
    std::fs::copy(photo(), dir.join("a.jpg")).unwrap();
    image::open(photo())
        .unwrap()
        .save(dir.join("c.png"))
        .unwrap();
    std::fs::write(dir.join("b.png"), panicking_file()).unwrap();
    let out = retinaface(&["detect", s(&dir), "--json", "-"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_no_panic_text(&out);
    let records: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["image"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.jpg", "c.png"]);
    for r in records.as_array().unwrap() {
        assert!(r["faces"].as_array().unwrap().len() >= 6, "{r}");
    }
    let errors = stderr(&out);
    assert_eq!(
        errors.lines().filter(|l| l.starts_with("error: ")).count(),
        1,
        "{errors}"
    );
    assert!(
        errors.contains("b.png: cannot decode image: the decoder failed on malformed data"),
        "{errors}"
    );
    // anonymize and align go on the same way.
    for cmd in ["anonymize", "align"] {
        let out = retinaface(&[cmd, s(&dir), "--out", s(&dir.join(format!("out-{cmd}")))]);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {}", stderr(&out));
        assert_no_panic_text(&out);
    }
    assert!(dir.join("out-anonymize/a.jpg").is_file() && dir.join("out-anonymize/c.png").is_file());
}

#[test]
fn sizes_beyond_the_limits_are_clear_errors() {
    let t1 = photo();
    for args in [
        vec!["--resize", "short:100000"],
        vec!["--scales", "500,100000"],
        vec!["--resize", "long:200000000"],
    ] {
        let mut all = vec!["detect", s(&t1)];
        all.extend(args.iter().copied());
        let out = retinaface(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("--max-image-pixels"),
            "{}",
            stderr(&out)
        );
        assert_no_panic_text(&out);
    }
    // A pass above the limit for this photo only: that photo fails, nothing is allocated.
    let out = retinaface(&[
        "detect",
        s(&t1),
        "--resize",
        "long:5000",
        "--max-image-pixels",
        "10M",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("above the limit"), "{}", stderr(&out));
    let out = retinaface(&["detect", s(&t1), "--threads", "100000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--threads 100000"),
        "{}",
        stderr(&out)
    );
    // The decoded-size limit: 1,000 pixels refuses the 1280×886 photo before decoding.
    let out = retinaface(&["detect", s(&t1), "--max-image-pixels", "1000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("above the limit of 1000 pixels"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn devices_and_fifos_are_refused_without_reading() {
    let dir = temp("fifo");
    let fifo = dir.join("pipe.jpg");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // Nothing writes to the FIFO: opening it would block forever.
    let out = retinaface(&["detect", s(&fifo), "/dev/zero", s(&photo()), "--json", "-"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("pipe.jpg: a FIFO, not a regular file"), "{e}");
    assert!(e.contains("/dev/zero: a device, not a regular file"), "{e}");
    let records: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(records.as_array().unwrap().len(), 1);
}

#[test]
fn an_output_folder_holding_the_inputs_is_refused_before_any_write() {
    let dir = temp("inplace");
    let input = dir.join("t1.jpg");
    std::fs::copy(photo(), &input).unwrap();
    let before = std::fs::read(&input).unwrap();
    for cmd in ["anonymize", "align"] {
        let out = retinaface(&[cmd, s(&dir), "--out", s(&dir)]);
        if cmd == "anonymize" {
            assert_eq!(out.status.code(), Some(2), "{cmd}: {}", stderr(&out));
            assert!(
                stderr(&out).contains("would overwrite the input"),
                "{}",
                stderr(&out)
            );
        }
        assert_eq!(
            std::fs::read(&input).unwrap(),
            before,
            "{cmd} changed its input"
        );
    }
    let out = retinaface(&["detect", s(&dir), "--draw", s(&dir)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(std::fs::read(&input).unwrap(), before);
    // Nothing but the input (and align's crops, which have other names) was written.
    let listed: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("t1_"))
        .collect();
    assert!(
        listed
            .iter()
            .all(|n| n == "t1.jpg" || n == "transforms.json"),
        "{listed:?}"
    );
    // --json onto an input is refused too.
    let out = retinaface(&["detect", s(&input), "--json", s(&dir.join("t1.json"))]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = retinaface(&["detect", s(&input), "--json", s(&input)]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read(&input).unwrap(), before);
}

#[test]
fn same_named_inputs_write_distinct_outputs() {
    let dir = temp("same-names");
    let (a, b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let img = image::open(photo()).unwrap().into_rgb8();
    img.save(a.join("photo.png")).unwrap();
    image::imageops::flip_horizontal(&img)
        .save(b.join("photo.png"))
        .unwrap();
    img.save(a.join("photo.bmp")).unwrap();
    let out_dir = dir.join("out");
    let out = retinaface(&[
        "anonymize",
        s(&a.join("photo.png")),
        s(&b.join("photo.png")),
        s(&a.join("photo.bmp")),
        "--out",
        s(&out_dir),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = std::fs::read(out_dir.join("photo.png")).unwrap();
    let second = std::fs::read(out_dir.join("photo-2.png")).unwrap();
    assert_ne!(first, second, "the second photo overwrote the first");
    assert!(out_dir.join("photo.bmp").is_file());
    // Folders: each keeps its relative path; two folder arguments with the same file get -2.
    let draw = dir.join("draw");
    let out = retinaface(&["detect", s(&a), s(&b), "--draw", s(&draw), "--json", "-"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for name in ["photo.png", "photo-2.png", "photo.bmp"] {
        assert!(draw.join(name).is_file(), "{name} missing");
    }
    // No temporary file is left behind.
    for d in [&out_dir, &draw] {
        for e in std::fs::read_dir(d).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!n.starts_with('.'), "left over: {n}");
        }
    }
}

fn faces(path: &Path, threshold: f32) -> Vec<[f32; 4]> {
    detected_faces(path, threshold)
        .iter()
        .map(|f| serde_json::from_value(f["box"].clone()).unwrap())
        .collect()
}

/// Whether (x, y) is inside any mask rectangle grown by `margin` pixels.
fn near_masks(regions: &[[u32; 4]], x: u32, y: u32, margin: u32) -> bool {
    regions
        .iter()
        .any(|r| x + margin >= r[0] && x < r[2] + margin && y + margin >= r[1] && y < r[3] + margin)
}

fn mask_regions(boxes: &[[f32; 4]], w: u32, h: u32) -> Vec<[u32; 4]> {
    boxes
        .iter()
        .map(|b| retinaface::anonymize::mask_bounds(*b, 1.3, w, h))
        .collect()
}

#[test]
fn anonymised_files_keep_alpha_depth_and_profile() {
    let dir = temp("faithful");
    let src = image::open(photo()).unwrap().into_rgb8();
    let (w, h) = src.dimensions();
    // RGBA: a gradient of alpha.
    let rgba = image::RgbaImage::from_fn(w, h, |x, y| {
        let p = src.get_pixel(x, y).0;
        image::Rgba([p[0], p[1], p[2], ((x + y) % 256) as u8])
    });
    rgba.save(dir.join("alpha.png")).unwrap();
    // 16-bit RGB, with low bits that 8-bit processing would lose.
    let deep = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_fn(w, h, |x, y| {
        let p = src.get_pixel(x, y).0;
        image::Rgb(p.map(|v| u16::from(v) * 256 + ((x * 7 + y) % 256) as u16))
    });
    image::DynamicImage::ImageRgb16(deep.clone())
        .save(dir.join("deep.png"))
        .unwrap();
    // A JPEG with an ICC profile.
    let icc: Vec<u8> = (0..3000u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut jpeg = std::io::Cursor::new(Vec::new());
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90);
    use image::ImageEncoder;
    enc.set_icc_profile(icc.clone()).unwrap();
    enc.write_image(src.as_raw(), w, h, image::ExtendedColorType::Rgb8)
        .unwrap();
    std::fs::write(dir.join("profiled.jpg"), jpeg.into_inner()).unwrap();
    let out = dir.join("out");
    let run = retinaface(&["anonymize", s(&dir), "--out", s(&out)]);
    assert!(run.status.success(), "{}", stderr(&run));

    // Each photo's masks are where anonymize puts them: its own faces above 0.3.
    let regions = mask_regions(&faces(&dir.join("alpha.png"), 0.3), w, h);
    assert!(regions.len() >= 6);
    let got = image::open(out.join("alpha.png")).unwrap();
    assert_eq!(got.color(), image::ColorType::Rgba8);
    let got = got.into_rgba8();
    let mut masked = 0;
    for (x, y, p) in got.enumerate_pixels() {
        assert_eq!(p[3], rgba.get_pixel(x, y)[3], "alpha changed at ({x}, {y})");
        if !near_masks(&regions, x, y, 0) {
            assert_eq!(
                p,
                rgba.get_pixel(x, y),
                "pixel ({x}, {y}) outside the masks"
            );
        } else if p != rgba.get_pixel(x, y) {
            masked += 1;
        }
    }
    assert!(
        masked > 10_000,
        "the faces were not masked ({masked} pixels)"
    );

    let regions = mask_regions(&faces(&dir.join("deep.png"), 0.3), w, h);
    let got = image::open(out.join("deep.png")).unwrap();
    assert_eq!(got.color(), image::ColorType::Rgb16);
    let got = got.into_rgb16();
    for (x, y, p) in got.enumerate_pixels() {
        if !near_masks(&regions, x, y, 0) {
            assert_eq!(
                p,
                deep.get_pixel(x, y),
                "16-bit pixel ({x}, {y}) outside the masks"
            );
        }
    }

    let bytes = std::fs::read(out.join("profiled.jpg")).unwrap();
    let mut decoder = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(&bytes)).unwrap();
    use image::ImageDecoder;
    assert_eq!(decoder.icc_profile().unwrap(), Some(icc));
}

#[test]
fn jpeg_pixels_outside_the_touched_blocks_are_unchanged() {
    let dir = temp("jpeg-blocks");
    let out = dir.join("out");
    let run = retinaface(&["anonymize", s(&photo()), "--out", s(&out)]);
    assert!(run.status.success(), "{}", stderr(&run));
    let decode = |p: &Path| {
        retinaface::input::decode_bytes(&std::fs::read(p).unwrap(), p, u64::MAX).unwrap()
    };
    let (before, after) = (decode(&photo()), decode(&out.join("t1.jpg")));
    assert_eq!(before.dimensions(), after.dimensions());
    let (w, h) = before.dimensions();
    let regions = mask_regions(&faces(&photo(), 0.3), w, h);
    // Blocks are 16×16 (4:2:0); a block touched by a mask is re-encoded whole, and fancy
    // chroma upsampling reaches one chroma sample (2 pixels) beyond it.
    let grown: Vec<[u32; 4]> = regions
        .iter()
        .map(|r| {
            [
                r[0] / 16 * 16,
                r[1] / 16 * 16,
                r[2].div_ceil(16) * 16,
                r[3].div_ceil(16) * 16,
            ]
        })
        .collect();
    let (mut outside, mut changed_in_blocks, mut worst_in_blocks) = (0, 0, 0);
    for (x, y, p) in after.enumerate_pixels() {
        let q = before.get_pixel(x, y);
        if !near_masks(&grown, x, y, 2) {
            assert_eq!(p, q, "pixel ({x}, {y}) outside the touched blocks changed");
            outside += 1;
        } else if !near_masks(&regions, x, y, 0) && p != q {
            changed_in_blocks += 1;
            let d = (0..3).map(|c| p[c].abs_diff(q[c])).max().unwrap_or(0);
            worst_in_blocks = worst_in_blocks.max(d);
        }
    }
    assert!(
        outside > (w * h / 2) as usize,
        "most of the photo is outside the masks"
    );
    eprintln!(
        "pixels outside the masks but inside their blocks: {changed_in_blocks} changed, by at most {worst_in_blocks}"
    );
    // The faces are hidden.
    assert!(faces(&out.join("t1.jpg"), 0.5).is_empty());
}

#[test]
fn other_detectors_weights_are_named_as_such_once() {
    for name in [
        "scrfd_500m_bnkps.onnx",
        "yunet_n_dynamic.onnx",
        "centerface.onnx",
    ] {
        let model = shared().join("models/peers").join(name);
        let out = retinaface(&["detect", s(&photo()), "--model", s(&model)]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let e = stderr(&out);
        assert!(e.contains("not a RetinaFace model"), "{name}: {e}");
        // The cause is said once: the path appears once, and no message repeats.
        assert_eq!(e.matches(name).count(), 1, "{e}");
        assert_no_panic_text(&out);
    }
}

#[test]
fn same_named_videos_write_distinct_line_files() {
    let dir = temp("videos");
    for sub in ["a", "b"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        let made = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-loop", "1", "-i"])
            .arg(photo())
            .args([
                "-vf",
                "scale=320:-2",
                "-frames:v",
                "4",
                "-r",
                "4",
                "-pix_fmt",
                "yuv420p",
            ])
            .arg(dir.join(sub).join("clip.mp4"))
            .status()
            .unwrap();
        assert!(made.success());
    }
    let json = dir.join("out.json");
    let out = retinaface(&[
        "detect",
        s(&dir.join("a/clip.mp4")),
        s(&dir.join("b/clip.mp4")),
        s(&photo()),
        "--json",
        s(&json),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for name in ["clip.jsonl", "clip-2.jsonl"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        assert_eq!(text.lines().count(), 4, "{name}: {text}");
    }
    let records: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(records.as_array().unwrap().len(), 1);
    // `--json -` with videos needs --jsonl: standard output stays one JSON array.
    let out = retinaface(&[
        "detect",
        s(&dir.join("a/clip.mp4")),
        s(&photo()),
        "--json",
        "-",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--jsonl"), "{}", stderr(&out));
}
