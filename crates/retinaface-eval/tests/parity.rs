//! Parity with `shared/tools/ref/wider_eval.py` on the real ground truth.
//!
//! The fixture (tests/fixtures/README.md) holds seven prediction files of the reference
//! detector and the JSON that wider_eval.py printed on exactly those files:
//!
//! ```text
//! for n in $(cat tests/fixtures/images.txt); do touch /tmp/fixture_images/$n.jpg; done
//! python shared/tools/ref/wider_eval.py --pred tests/fixtures/wider_pred \
//!     --gt shared/data/widerface/val/ground_truth --images /tmp/fixture_images --json
//! ```

mod common;

use common::{fixture, gt_dir, TempDir};
use retinaface_eval::widerface::{
    evaluate, evaluate_range, evaluate_subset, EvalOptions, EvalReport, GroundTruth, ImageFilter,
    IouThresholds, Predictions, Setting, Subset,
};

fn expected(file: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(file)).expect("fixture JSON");
    serde_json::from_str(&text).expect("fixture JSON parses")
}

fn assert_matches_reference(report: &EvalReport, want: &serde_json::Value) {
    for s in Setting::ALL {
        let got = report.get(s);
        let w = &want[s.name()];
        let ap = w["ap"].as_f64().expect("ap");
        // The contract is 1e-4; the implementation follows the reference operation for
        // operation, so it agrees far closer than that.
        assert!(
            (got.ap - ap).abs() <= 1e-12,
            "{s}: AP {} vs reference {ap}",
            got.ap
        );
        assert_eq!(
            got.faces as u64,
            w["faces"].as_u64().expect("faces"),
            "{s} faces"
        );
        assert_eq!(
            got.images as u64,
            w["images"].as_u64().expect("images"),
            "{s} images"
        );
    }
}

fn filter_dir(tmp: &TempDir) -> ImageFilter {
    // The reference's --images takes a folder and looks only at names: build one.
    let names = std::fs::read_to_string(fixture("images.txt")).expect("images.txt");
    let sub = tmp.path().join("nested/event");
    std::fs::create_dir_all(&sub).expect("mkdir");
    for (i, n) in names.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        // Mixed case extensions and folders, as --images accepts.
        let name = if i % 2 == 0 {
            format!("{n}.jpg")
        } else {
            format!("{n}.JPG")
        };
        let dir = if i % 3 == 0 { tmp.path() } else { &sub };
        std::fs::write(dir.join(name), b"").expect("touch");
    }
    std::fs::write(tmp.path().join("not_an_image.txt"), b"").expect("touch");
    ImageFilter::from_dir(tmp.path()).expect("filter")
}

#[test]
fn fixture_parity_with_images_filter() {
    let gt = GroundTruth::load(&gt_dir()).expect("ground truth");
    let preds = Predictions::load(&fixture("wider_pred")).expect("predictions");
    assert_eq!(preds.events.len(), 2);
    let tmp = TempDir::new("filter");
    let filter = filter_dir(&tmp);
    assert_eq!(filter.names.len(), 7);
    let opts = EvalOptions {
        images: Some(filter),
        ..EvalOptions::default()
    };
    let report = evaluate(&gt, &preds, &opts).expect("evaluate");
    assert_matches_reference(&report, &expected("expected.json"));
    assert!(report.unknown_images.is_empty());
    assert_eq!(report.easy.pr_curve.len(), 1000);
}

#[test]
fn fixture_parity_without_filter() {
    let gt = GroundTruth::load(&gt_dir()).expect("ground truth");
    let preds = Predictions::load(&fixture("wider_pred")).expect("predictions");
    let report = evaluate(&gt, &preds, &EvalOptions::default()).expect("evaluate");
    assert_matches_reference(&report, &expected("expected_no_filter.json"));
}

#[test]
fn json_has_exactly_the_reference_shape() {
    let gt = GroundTruth::load(&gt_dir()).expect("ground truth");
    let preds = Predictions::load(&fixture("wider_pred")).expect("predictions");
    let report = evaluate(&gt, &preds, &EvalOptions::default()).expect("evaluate");
    let json = report.to_json();
    assert!(!json.contains('\n'));
    assert!(json.starts_with(r#"{"easy":{"ap":"#), "{json}");
    let (e, m, h) = (
        json.find(r#""easy""#).unwrap(),
        json.find(r#""medium""#).unwrap(),
        json.find(r#""hard""#).unwrap(),
    );
    assert!(e < m && m < h, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    let want = expected("expected_no_filter.json");
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&v), keys(&want));
    for s in ["easy", "medium", "hard"] {
        assert_eq!(keys(&v[s]), keys(&want[s]));
        assert!(v[s]["ap"].is_f64());
        assert!(v[s]["faces"].is_u64() && v[s]["images"].is_u64());
    }
    // Round trip through the report type.
    let back: EvalReport = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(back.hard.ap, report.hard.ap);
    assert_eq!(
        report.to_text().lines().next().unwrap(),
        format!(
            "easy   AP {:.4}  ({} faces in {} images)",
            report.easy.ap, report.easy.faces, report.easy.images
        )
    );
}

#[test]
fn ground_truth_matches_the_official_files() {
    let gt = GroundTruth::load(&gt_dir()).expect("ground truth");
    assert_eq!(gt.events.len(), 61);
    assert_eq!(gt.image_count(), 3226);
    assert!(gt.has_settings());
    let count = |s: Setting| -> usize {
        gt.events
            .iter()
            .flat_map(|e| &e.images)
            .map(|i| i.settings.as_ref().unwrap().get(s).len())
            .sum()
    };
    // Totals printed by wider_eval.py over all images.
    assert_eq!(count(Setting::Easy), 7211);
    assert_eq!(count(Setting::Medium), 13319);
    assert_eq!(count(Setting::Hard), 31958);
    let first = &gt.events[0];
    assert_eq!(first.name, "0--Parade");
    assert_eq!(first.images.len(), 115);
    assert_eq!(first.images[0].name, "0_Parade_marchingband_1_465");
    assert_eq!(first.images[0].boxes[0], [345.0, 211.0, 4.0, 4.0]);
    assert_eq!(first.images[0].boxes[2], [250.0, 126.0, 3.0, 4.0]);
    assert!(first.images[0].settings.as_ref().unwrap().easy.is_empty());
}

#[test]
fn text_ground_truth_has_the_same_boxes_but_no_settings() {
    let mat = GroundTruth::load(&gt_dir()).expect("mat ground truth");
    let txt_path = common::shared_dir().join("data/widerface/val/wider_face_val_bbx_gt.txt");
    let txt = GroundTruth::load(&txt_path).expect("text ground truth");
    assert_eq!(txt.image_count(), 3226);
    assert!(!txt.has_settings());
    let mut differences = Vec::new();
    for ev in &mat.events {
        for img in &ev.images {
            let t = txt
                .image(&ev.name, &img.name)
                .unwrap_or_else(|| panic!("{}/{} missing from text", ev.name, img.name));
            assert_eq!(t.boxes.len(), img.boxes.len(), "{}/{}", ev.name, img.name);
            for (a, b) in t.boxes.iter().zip(&img.boxes) {
                if a != b {
                    differences.push((img.name.clone(), *a, *b));
                }
            }
        }
    }
    // The two official files disagree on one box: the text writes its width -2 as 0.
    assert_eq!(
        differences,
        [(
            "39_Ice_Skating_iceskiing_39_583".to_string(),
            [1026.0, 474.0, 0.0, 23.0],
            [1026.0, 474.0, -2.0, 23.0]
        )]
    );
    let preds = Predictions::load(&fixture("wider_pred")).expect("predictions");
    let err = evaluate(&txt, &preds, &EvalOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("wider_easy_val.mat") && msg.contains("boxes only"),
        "{msg}"
    );
    // Box-only evaluation works on either and agrees.
    let a = evaluate_subset(&txt, &preds, Subset::AllBoxes, &EvalOptions::default()).unwrap();
    let b = evaluate_subset(&mat, &preds, Subset::AllBoxes, &EvalOptions::default()).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.faces, 39708);
}

/// The same fixture rewritten as another detector might write it (Windows line ends, lines
/// in reverse order, exponent notation, trailing whitespace, blank lines) scores the same.
#[test]
fn fixture_parity_survives_formatting_differences() {
    let src = fixture("wider_pred");
    let tmp = TempDir::new("reformat");
    for event in std::fs::read_dir(&src).unwrap() {
        let event = event.unwrap().path();
        let out_dir = tmp.path().join(event.file_name().unwrap());
        std::fs::create_dir_all(&out_dir).unwrap();
        for file in std::fs::read_dir(&event).unwrap() {
            let file = file.unwrap().path();
            let text = std::fs::read_to_string(&file).unwrap();
            let mut lines = text.lines();
            let (name, count) = (lines.next().unwrap(), lines.next().unwrap());
            let mut rows: Vec<String> = lines
                .map(|l| {
                    let v: Vec<f64> = l.split_whitespace().map(|t| t.parse().unwrap()).collect();
                    format!("{} {} {} {} {:e} \t", v[0], v[1], v[2], v[3], v[4])
                })
                .collect();
            rows.reverse();
            let mut out = format!("\r\n{name}\r\n{count}  \r\n");
            for (i, r) in rows.iter().enumerate() {
                out += r;
                out += if i % 5 == 0 { "\r\n\r\n" } else { "\r\n" };
            }
            std::fs::write(out_dir.join(file.file_name().unwrap()), out).unwrap();
        }
    }
    let gt = GroundTruth::load(&gt_dir()).expect("ground truth");
    let preds = Predictions::load(tmp.path()).expect("predictions");
    let names = std::fs::read_to_string(fixture("images.txt")).unwrap();
    let opts = EvalOptions {
        images: Some(ImageFilter::from_names(names.lines())),
        ..EvalOptions::default()
    };
    let report = evaluate(&gt, &preds, &opts).expect("evaluate");
    assert_matches_reference(&report, &expected("expected.json"));
}

/// The challenge mAP (IoU 0.5:0.95) against the reference script run once per threshold:
/// every per-threshold AP agrees with `wider_eval.py --iou T`, the mean is their mean, and
/// the AP at 0.5 is bit-identical to the single-threshold evaluation.
#[test]
fn challenge_map_agrees_with_the_reference_at_every_threshold() {
    let gt = GroundTruth::load(&gt_dir()).expect("ground truth");
    let preds = Predictions::load(&fixture("wider_pred")).expect("predictions");
    let tmp = TempDir::new("challenge");
    let opts = EvalOptions {
        images: Some(filter_dir(&tmp)),
        ..EvalOptions::default()
    };
    let range = IouThresholds::parse("0.5:0.95").expect("range");
    let report = evaluate_range(&gt, &preds, &opts, &range).expect("evaluate");
    let single = evaluate(&gt, &preds, &opts).expect("evaluate at 0.5");
    let script = common::shared_dir().join("tools/ref/wider_eval.py");
    let mut sums = [0.0f64; 3];
    for t in range.values() {
        let out = std::process::Command::new("python3")
            .arg(&script)
            .args(["--pred".as_ref(), fixture("wider_pred").as_os_str()])
            .args(["--gt".as_ref(), gt_dir().as_os_str()])
            .args(["--images".as_ref(), tmp.path().as_os_str()])
            .args(["--iou", &t.to_string(), "--json"])
            .output()
            .expect("python3 runs wider_eval.py (numpy and scipy: .ci/run installs them)");
        assert!(
            out.status.success(),
            "wider_eval.py --iou {t}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want: serde_json::Value = serde_json::from_slice(&out.stdout).expect("its JSON");
        for (k, s) in Setting::ALL.into_iter().enumerate() {
            let ours = report.get(s).per_iou[&format!("{t:.2}")];
            let theirs = want[s.name()]["ap"].as_f64().expect("ap");
            assert!(
                (ours - theirs).abs() <= 1e-12,
                "{s} at IoU {t}: {ours} vs reference {theirs}"
            );
            sums[k] += theirs;
        }
    }
    for (k, s) in Setting::ALL.into_iter().enumerate() {
        let r = report.get(s);
        assert_eq!(r.per_iou.len(), 10);
        assert!((r.ap - sums[k] / 10.0).abs() <= 1e-12, "{s} mean {}", r.ap);
        assert_eq!(r.per_iou["0.50"].to_bits(), single.get(s).ap.to_bits());
        // Stricter thresholds never find more: the curve over IoU falls.
        let aps: Vec<f64> = r.per_iou.values().copied().collect();
        assert!(aps.windows(2).all(|w| w[1] <= w[0]), "{s}: {aps:?}");
        assert!(aps[9] < aps[0], "{s}: {aps:?}");
    }
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("JSON");
    assert!(json["hard"]["per_iou"]["0.95"].is_f64());
}
