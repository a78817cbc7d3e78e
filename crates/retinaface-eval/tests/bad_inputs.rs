//! Bad inputs give clear errors that name the culprit, never a panic.

mod common;

use common::{gt_dir, mat_with_doubles, TempDir};
use retinaface_eval::mat::MatFile;
use retinaface_eval::widerface::{
    evaluate, EvalOptions, GroundTruth, ImageFilter, Predictions, WiderError,
};

fn write(path: &std::path::Path, text: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn malformed_prediction_line_names_file_and_line() {
    let tmp = TempDir::new("badline");
    let file = tmp.path().join("0--Parade/0_Parade_Parade_0_470.txt");
    write(
        &file,
        b"0_Parade_Parade_0_470\r\n2\r\n10 10 20 20 0.9\r\n10 10 20 twenty 0.8\r\n",
    );
    let err = Predictions::load(tmp.path()).unwrap_err();
    assert!(matches!(err, WiderError::Line { line: 4, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{}:4: ", file.display())), "{msg}");
    assert!(msg.contains("'twenty'"), "{msg}");

    write(&file, b"name\n1\n10 10 20 0.9\n");
    let msg = Predictions::load(tmp.path()).unwrap_err().to_string();
    assert!(
        msg.contains(":3: expected 'x y w h score', found 4"),
        "{msg}"
    );

    write(&file, &[b'n', b'\n', b'1', b'\n', 0xff, 0xfe, b'\n']);
    let msg = Predictions::load(tmp.path()).unwrap_err().to_string();
    assert!(
        msg.contains("0_Parade_Parade_0_470.txt:3: not UTF-8"),
        "{msg}"
    );
}

#[test]
fn event_folder_not_in_the_ground_truth_is_refused() {
    let gt = GroundTruth::load(&gt_dir()).expect("ground truth");
    let tmp = TempDir::new("event");
    write(
        &tmp.path().join("0--Parade/0_Parade_Parade_0_470.txt"),
        b"x\n1\n1 1 5 5 0.9\n",
    );
    write(
        &tmp.path().join("0--parade/0_Parade_Parade_0_470.txt"),
        b"x\n1\n1 1 5 5 0.9\n",
    );
    // Loose files at the top level are passed over, as the reference does.
    write(&tmp.path().join("notes.txt"), b"hello");
    let preds = Predictions::load(tmp.path()).expect("loads");
    let err = evaluate(&gt, &preds, &EvalOptions::default()).unwrap_err();
    assert!(matches!(&err, WiderError::UnknownEvent { event, .. } if event == "0--parade"));
    let msg = err.to_string();
    assert!(
        msg.contains(&tmp.path().join("0--parade").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("not in the ground truth"), "{msg}");
}

#[test]
fn empty_prediction_folder_is_an_error() {
    let gt = GroundTruth::load(&gt_dir()).expect("ground truth");
    let tmp = TempDir::new("empty");
    write(&tmp.path().join("0--Parade/a.txt"), b"");
    let preds = Predictions::load(tmp.path()).expect("loads");
    let err = evaluate(&gt, &preds, &EvalOptions::default()).unwrap_err();
    assert!(matches!(err, WiderError::NoPredictions(_)), "{err:?}");
    assert!(Predictions::load(&tmp.path().join("missing")).is_err());
    assert!(ImageFilter::from_dir(&tmp.path().join("missing")).is_err());
}

#[test]
fn a_mat_file_that_is_not_wider_is_refused() {
    // A valid MAT-file with other variables.
    let tmp = TempDir::new("notwider");
    let bytes = mat_with_doubles(&[("weights", &[1.0, 2.0, 3.0]), ("bias", &[0.5])]);
    let parsed = MatFile::from_bytes(&bytes).expect("a valid MAT-file");
    assert_eq!(parsed.names(), ["weights", "bias"]);
    write(&tmp.path().join("wider_face_val.mat"), &bytes);
    let err = GroundTruth::load(tmp.path()).unwrap_err();
    assert!(matches!(err, WiderError::NotWider { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("wider_face_val.mat is not WIDER FACE ground truth")
            && msg.contains("event_list")
            && msg.contains("weights, bias"),
        "{msg}"
    );

    // Random bytes.
    let mut state = 0x1234_5678u32;
    let noise: Vec<u8> = (0..5000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    write(&tmp.path().join("wider_face_val.mat"), &noise);
    let err = GroundTruth::load(tmp.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("wider_face_val.mat") && msg.contains("not a MATLAB 5 MAT-file"),
        "{msg}"
    );

    // A real WIDER file in a setting's place: it has no gt_list.
    let real = std::fs::read(gt_dir().join("wider_face_val.mat")).unwrap();
    write(&tmp.path().join("wider_face_val.mat"), &real);
    for f in [
        "wider_easy_val.mat",
        "wider_medium_val.mat",
        "wider_hard_val.mat",
    ] {
        write(&tmp.path().join(f), &real);
    }
    let msg = GroundTruth::load(tmp.path()).unwrap_err().to_string();
    assert!(
        msg.contains("wider_easy_val.mat is not WIDER FACE ground truth: no variable 'gt_list'"),
        "{msg}"
    );

    // A truncated copy of a real file.
    write(
        &tmp.path().join("wider_face_val.mat"),
        &real[..real.len() / 2],
    );
    let msg = GroundTruth::load(tmp.path()).unwrap_err().to_string();
    assert!(
        msg.contains("wider_face_val.mat") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn a_missing_setting_file_is_named() {
    let tmp = TempDir::new("missing");
    for f in [
        "wider_face_val.mat",
        "wider_easy_val.mat",
        "wider_medium_val.mat",
    ] {
        std::fs::copy(gt_dir().join(f), tmp.path().join(f)).unwrap();
    }
    let err = GroundTruth::load(tmp.path()).unwrap_err();
    assert!(matches!(err, WiderError::MissingFile { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("wider_hard_val.mat is missing") && msg.contains("hard setting needs it"),
        "{msg}"
    );

    // A folder with only the text ground truth says that settings need the .mat files.
    let txt = TempDir::new("txtonly");
    write(
        &txt.path().join("wider_face_val_bbx_gt.txt"),
        b"0--Parade/a.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n",
    );
    let msg = GroundTruth::load(txt.path()).unwrap_err().to_string();
    assert!(
        msg.contains("boxes only") && msg.contains("settings need the .mat files"),
        "{msg}"
    );
    let t = GroundTruth::load(&txt.path().join("wider_face_val_bbx_gt.txt")).unwrap();
    assert_eq!(t.image_count(), 1);
    assert!(t.events[0].images[0].boxes.is_empty());
}

#[test]
fn corrupted_real_mat_files_never_panic() {
    // Flip bytes all over a real compressed file: every outcome is Ok or Err, never a panic.
    let real = std::fs::read(gt_dir().join("wider_easy_val.mat")).unwrap();
    for k in 0..64 {
        let mut b = real.clone();
        let at = 128 + (k * 7919) % (real.len() - 128);
        b[at] ^= 0xa5;
        let _ = MatFile::from_bytes(&b);
    }
    // Damage inside the zlib stream is detected (checksum or structure).
    let mut b = real.clone();
    b[2000] ^= 0xff;
    assert!(MatFile::from_bytes(&b).is_err());
}
