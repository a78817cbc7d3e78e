//! `align` and `anonymize` end to end on the group photo and on a video made from it.

mod common;

use common::{detected_faces, s, shared, succeed, temp};
use std::path::Path;
use std::process::Command;

#[test]
fn aligned_crops_match_the_insightface_convention() {
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/align_reference.json")).unwrap();
    let photo = shared().join("data/photos/t1.jpg");
    for size in [112u32, 128] {
        let dir = temp(&format!("align{size}"));
        succeed(&[
            "align",
            s(&photo),
            "--out",
            s(&dir),
            "--size",
            &size.to_string(),
        ]);
        let ours: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("transforms.json")).unwrap())
                .unwrap();
        let mut checked = 0;
        for (key, r) in reference.as_object().unwrap() {
            let Some(name) = key.strip_prefix(&format!("{size}/")) else {
                continue;
            };
            let m_ref: Vec<Vec<f64>> = serde_json::from_value(r["matrix"].clone()).unwrap();
            let m: Vec<Vec<f64>> = serde_json::from_value(ours[name].clone())
                .unwrap_or_else(|_| panic!("no crop {name}"));
            let scale = m_ref.iter().flatten().fold(0.0f64, |a, v| a.max(v.abs()));
            for (a, b) in m.iter().flatten().zip(m_ref.iter().flatten()) {
                assert!((a - b).abs() <= 1e-4 * scale, "{name}: {m:?} vs {m_ref:?}");
            }
            let crop = image::open(dir.join(name)).unwrap().into_rgb8();
            assert_eq!(crop.dimensions(), (size, size));
            let means: Vec<Vec<Vec<f64>>> =
                serde_json::from_value(r["block_means"].clone()).unwrap();
            let n = size / 8;
            let mut mad = 0.0;
            for (by, row) in means.iter().enumerate() {
                for (bx, want) in row.iter().enumerate() {
                    for (c, w) in want.iter().enumerate() {
                        let mut sum = 0.0;
                        for y in 0..n {
                            for x in 0..n {
                                sum += f64::from(
                                    crop.get_pixel(bx as u32 * n + x, by as u32 * n + y)[c],
                                );
                            }
                        }
                        mad += (sum / f64::from(n * n) - w).abs();
                    }
                }
            }
            mad /= 192.0;
            assert!(mad <= 1.0, "{name}: block means differ by {mad}");
            checked += 1;
        }
        assert_eq!(checked, 6, "six faces at size {size}");
    }
}

#[test]
fn anonymised_photo_hides_faces_changes_nothing_else_and_drops_exif() {
    let dir = temp("anon");
    // Pixel-exact checks start from a PNG copy (re-encoding a JPEG changes every pixel).
    let png = dir.join("group.png");
    image::open(shared().join("data/photos/t1.jpg"))
        .unwrap()
        .save(&png)
        .unwrap();
    let src = image::open(&png).unwrap().into_rgb8();
    let boxes: Vec<[f32; 4]> = detected_faces(&png, 0.3)
        .iter()
        .map(|f| serde_json::from_value(f["box"].clone()).unwrap())
        .collect();
    assert!(boxes.len() >= 6);
    for mode in ["blur", "pixelate", "solid"] {
        let out = dir.join(mode);
        succeed(&["anonymize", s(&png), "--out", s(&out), "--mode", mode]);
        let result = out.join("group.png");
        assert!(
            detected_faces(&result, 0.5).is_empty(),
            "{mode}: a face is still found"
        );
        let img = image::open(&result).unwrap().into_rgb8();
        assert_eq!(img.dimensions(), src.dimensions());
        let regions: Vec<[u32; 4]> = boxes
            .iter()
            .map(|b| retinaface::anonymize::mask_bounds(*b, 1.3, src.width(), src.height()))
            .collect();
        for (x, y, p) in img.enumerate_pixels() {
            if !regions
                .iter()
                .any(|r| x >= r[0] && x < r[2] && y >= r[1] && y < r[3])
            {
                assert_eq!(
                    p,
                    src.get_pixel(x, y),
                    "{mode}: pixel ({x}, {y}) outside the masks changed"
                );
            }
        }
    }
    // A JPEG with EXIF (orientation 6 = rotated a quarter turn) and a comment: the output is
    // the same format, its EXIF holds the orientation alone (the blocks stay as stored), the
    // comment is gone, and it decodes upright.
    let jpeg = std::fs::read(shared().join("data/photos/t1.jpg")).unwrap();
    let tagged = dir.join("tagged.jpg");
    let mut with_comment = with_exif_orientation(&jpeg, 6);
    let comment = b"GPS 48.85N 2.35E, camera serial 1234";
    let mut com = vec![0xff, 0xfe];
    com.extend_from_slice(&((comment.len() + 2) as u16).to_be_bytes());
    com.extend_from_slice(comment);
    with_comment.splice(2..2, com);
    std::fs::write(&tagged, &with_comment).unwrap();
    let out = dir.join("exif");
    succeed(&["anonymize", s(&tagged), "--out", s(&out)]);
    let bytes = std::fs::read(out.join("tagged.jpg")).unwrap();
    assert!(bytes.starts_with(&[0xff, 0xd8]));
    assert!(
        !bytes.windows(comment.len()).any(|w| w == comment),
        "the comment was copied"
    );
    let exif_blocks = bytes.windows(6).filter(|w| *w == b"Exif\0\0").count();
    assert_eq!(exif_blocks, 1);
    let at = bytes.windows(6).position(|w| w == b"Exif\0\0").unwrap();
    let len = u16::from_be_bytes([bytes[at - 2], bytes[at - 1]]) as usize;
    assert!(
        len <= 40,
        "the EXIF block holds more than the orientation ({len} bytes)"
    );
    let img = retinaface::input::decode_bytes(&bytes, Path::new("out.jpg"), u64::MAX).unwrap();
    assert_eq!(img.dimensions(), (886, 1280), "orientation applied");
}

/// `jpeg` with an APP1 EXIF segment holding only an orientation tag, right after SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes());
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // value padding, next IFD = 0
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xff, 0xe1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn probe(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-print_format",
            "json",
            "-show_streams",
        ])
        .arg(path)
        .output()
        .expect("ffprobe (from ffmpeg) is needed for the video tests: apt-get install ffmpeg");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stream<'a>(p: &'a serde_json::Value, kind: &str) -> Option<&'a serde_json::Value> {
    p["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == kind)
}

#[test]
fn anonymised_video_keeps_frames_rate_size_audio_and_hides_faces() {
    let dir = temp("video");
    let clip = dir.join("pan.mp4");
    // Two seconds at 25 fps of a slow zoom into the group photo, with a tone.
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-loop", "1", "-i"])
        .arg(shared().join("data/photos/t1.jpg"))
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-filter_complex"])
        .arg("[0:v]zoompan=z='1+0.003*on':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':d=50:s=640x442:fps=25[v]")
        .args(["-map", "[v]", "-map", "1:a", "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac"])
        .arg(&clip)
        .status()
        .expect("ffmpeg is needed for the video tests: apt-get install ffmpeg");
    assert!(status.success());
    let out = dir.join("out");
    succeed(&["anonymize", s(&clip), "--out", s(&out)]);
    let result = out.join("pan.mp4");
    let (a, b) = (probe(&clip), probe(&result));
    let (va, vb) = (stream(&a, "video").unwrap(), stream(&b, "video").unwrap());
    for k in ["width", "height", "r_frame_rate", "nb_read_frames"] {
        assert_eq!(va[k], vb[k], "{k}");
    }
    assert_eq!(vb["nb_read_frames"], "50");
    assert!(stream(&b, "audio").is_some(), "audio stream copied");
    // Sampled frames show no face above 0.5 (and the original frames do).
    for (video, expect_faces) in [(&clip, true), (&result, false)] {
        let frames = dir.join(format!("frames-{expect_faces}"));
        std::fs::create_dir_all(&frames).unwrap();
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(video)
            .args(["-vf", "select=not(mod(n\\,12))", "-fps_mode", "passthrough"])
            .arg(frames.join("f%02d.png"))
            .status()
            .unwrap();
        assert!(status.success());
        for entry in std::fs::read_dir(&frames).unwrap() {
            let path = entry.unwrap().path();
            let n = detected_faces(&path, 0.5).len();
            assert_eq!(n > 0, expect_faces, "{}: {n} faces", path.display());
        }
    }
    // `detect` on the video: one JSON line per frame.
    let lines = dir.join("pan.jsonl");
    succeed(&["detect", s(&clip), "--jsonl", s(&lines)]);
    let text = std::fs::read_to_string(&lines).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 50);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["frame"], i as u64);
        assert!((r["time_s"].as_f64().unwrap() - i as f64 / 25.0).abs() < 1e-9);
        assert!(
            !r["faces"].as_array().unwrap().is_empty(),
            "frame {i} has faces"
        );
    }
    // Without audio, on request.
    let silent = dir.join("silent");
    succeed(&[
        "anonymize",
        s(&clip),
        "--out",
        s(&silent),
        "--no-audio",
        "--mode",
        "solid",
    ]);
    assert!(stream(&probe(&silent.join("pan.mp4")), "audio").is_none());
}

#[test]
fn bad_videos_fail_alone_and_the_exit_code_says_so() {
    let dir = temp("badvideo");
    std::fs::write(dir.join("fake.mp4"), b"this is no video").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_retinaface"))
        .args([
            "anonymize",
            s(&dir.join("fake.mp4")),
            s(&shared().join("data/photos/t1.jpg")),
            "--out",
            s(&dir.join("out")),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fake.mp4"));
    assert!(
        dir.join("out/t1.jpg").exists(),
        "the photo was still processed"
    );
}
