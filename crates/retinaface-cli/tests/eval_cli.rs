//! `retinaface eval` end to end: WIDER AP of prediction files against the reference's
//! numbers, the detector-first mode, landmark evaluation, plots, and errors naming files.

mod common;

use common::{retinaface, s, shared, temp};
use std::path::PathBuf;
use std::process::Output;

fn eval_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../retinaface-eval/tests/fixtures")
}

fn gt() -> PathBuf {
    shared().join("data/widerface/val/ground_truth")
}

/// stdout must be exactly one line of JSON.
fn one_json_line(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(text.matches('\n').count(), 1, "not one line: {text:?}");
    assert!(text.ends_with('\n'));
    serde_json::from_str(text.trim_end()).unwrap()
}

fn assert_same_report(got: &serde_json::Value, want: &serde_json::Value) {
    for setting in ["easy", "medium", "hard"] {
        let (g, w) = (&got[setting], &want[setting]);
        let (ga, wa) = (g["ap"].as_f64().unwrap(), w["ap"].as_f64().unwrap());
        assert!((ga - wa).abs() <= 1e-4, "{setting}: AP {ga} vs {wa}");
        assert_eq!(g["faces"], w["faces"], "{setting} faces");
        assert_eq!(g["images"], w["images"], "{setting} images");
    }
    assert_eq!(got.as_object().unwrap().len(), 3);
}

fn expected(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(eval_fixtures().join(name)).unwrap()).unwrap()
}

#[test]
fn widerface_on_prediction_files_matches_the_reference() {
    let tmp = temp("pred");
    // wider_eval.py --images only looks at names: a folder of empty files.
    let images = tmp.join("images/ev");
    std::fs::create_dir_all(&images).unwrap();
    let names = std::fs::read_to_string(eval_fixtures().join("images.txt")).unwrap();
    for n in names.lines().filter(|l| !l.trim().is_empty()) {
        std::fs::write(images.join(format!("{}.jpg", n.trim())), b"").unwrap();
    }
    let pred = eval_fixtures().join("wider_pred");
    let plot = tmp.join("pr.png");
    let out = retinaface(&[
        "eval",
        "widerface",
        "--pred",
        s(&pred),
        "--gt",
        s(&gt()),
        "--images",
        s(&tmp.join("images")),
        "--json",
        "--plot",
        s(&plot),
    ]);
    assert_same_report(&one_json_line(&out), &expected("expected.json"));
    let png = image::open(&plot).unwrap();
    assert!(png.width() >= 400 && png.height() >= 300);

    // Without a filter: every ground-truth image counts.
    let out = retinaface(&[
        "eval",
        "widerface",
        "--pred",
        s(&pred),
        "--gt",
        s(&gt()),
        "--json",
    ]);
    assert_same_report(&one_json_line(&out), &expected("expected_no_filter.json"));

    // The table names the three settings.
    let out = retinaface(&["eval", "widerface", "--pred", s(&pred), "--gt", s(&gt())]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for setting in ["easy", "medium", "hard"] {
        assert!(text.contains(setting), "{text}");
    }
}

#[test]
fn bad_inputs_name_the_file_and_line() {
    let tmp = temp("bad");
    let ev = tmp.join("pred/0--Parade");
    std::fs::create_dir_all(&ev).unwrap();
    let bad = ev.join("0_Parade_marchingband_1_465.txt");
    std::fs::write(
        &bad,
        "0_Parade_marchingband_1_465\n2\n1 2 3 4 0.9\n5 6 seven 8 0.5\n",
    )
    .unwrap();
    let out = retinaface(&[
        "eval",
        "widerface",
        "--pred",
        s(&tmp.join("pred")),
        "--gt",
        s(&gt()),
        "--json",
    ]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0_Parade_marchingband_1_465.txt:4"), "{err}");

    let out = retinaface(&[
        "eval",
        "widerface",
        "--pred",
        s(&tmp.join("pred")),
        "--gt",
        s(&tmp.join("no_such_gt")),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_gt"));

    // Neither --pred nor --images.
    let out = retinaface(&["eval", "widerface", "--gt", s(&gt())]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--images"));

    let labels = tmp.join("label.txt");
    std::fs::write(&labels, "# a/b.jpg\n1 2 3\n").unwrap();
    let out = retinaface(&[
        "eval",
        "landmarks",
        "--labels",
        s(&labels),
        "--images",
        s(&tmp),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("label.txt:2"), "{err}");
}

#[test]
fn widerface_runs_the_detector_first_and_agrees_with_its_own_files() {
    let tmp = temp("run");
    let images = tmp.join("images/0--Parade");
    std::fs::create_dir_all(&images).unwrap();
    let src = shared().join("data/widerface/val/images/0--Parade/0_Parade_Parade_0_102.jpg");
    std::fs::copy(&src, images.join("0_Parade_Parade_0_102.jpg")).unwrap();
    let pred = tmp.join("pred");
    let out = retinaface(&[
        "eval",
        "widerface",
        "--images",
        s(&tmp.join("images")),
        "--gt",
        s(&gt()),
        "--pred-out",
        s(&pred),
        "--threads",
        "2",
        "--json",
    ]);
    let run = one_json_line(&out);
    assert_eq!(run["hard"]["images"], 1);
    assert!(run["hard"]["ap"].as_f64().unwrap() > 0.5, "{run}");
    let file = pred.join("0--Parade/0_Parade_Parade_0_102.txt");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("0_Parade_Parade_0_102\n"));
    // Evaluating the files it wrote gives the same numbers.
    let out = retinaface(&[
        "eval",
        "widerface",
        "--pred",
        s(&pred),
        "--gt",
        s(&gt()),
        "--images",
        s(&tmp.join("images")),
        "--json",
    ]);
    assert_same_report(&one_json_line(&out), &run);
    // Detection flags make no sense on existing files.
    let out = retinaface(&[
        "eval",
        "widerface",
        "--pred",
        s(&pred),
        "--gt",
        s(&gt()),
        "--tta",
    ]);
    assert!(!out.status.success());
}

#[test]
fn landmarks_report_nme_failures_and_ced() {
    let tmp = temp("lm");
    // The first two images of the training label file.
    let full = std::fs::read_to_string(shared().join("data/widerface/train/label.txt")).unwrap();
    let mut part = String::new();
    let mut images = 0;
    for line in full.lines() {
        if line.starts_with('#') {
            images += 1;
            if images > 2 {
                break;
            }
        }
        part.push_str(line);
        part.push('\n');
    }
    let labels = tmp.join("label.txt");
    std::fs::write(&labels, part).unwrap();
    let plot = tmp.join("ced.png");
    let out = retinaface(&[
        "eval",
        "landmarks",
        "--labels",
        s(&labels),
        "--images",
        s(&shared().join("data/widerface/train/images")),
        "--threads",
        "2",
        "--json",
        "--plot",
        s(&plot),
    ]);
    let r = one_json_line(&out);
    assert_eq!(r["images"], 2);
    let faces = r["faces"].as_u64().unwrap();
    assert!(faces > 0, "{r}");
    let matched = r["matched"].as_u64().unwrap();
    assert_eq!(matched + r["unmatched"].as_u64().unwrap(), faces);
    let fr = r["failure_rate"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&fr));
    if matched > 0 {
        let nme = r["mean_nme"].as_f64().unwrap();
        assert!(nme > 0.0 && nme < 0.2, "{r}");
    }
    assert!(image::open(&plot).is_ok());
}

#[test]
fn detect_takes_the_protocol_flags() {
    let photo = shared().join("data/photos/t1.jpg");
    let count = |extra: &[&str]| {
        let mut args = vec!["detect", s(&photo), "--json", "-", "--threads", "2"];
        args.extend_from_slice(extra);
        let out = retinaface(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["faces"].as_array().unwrap().len()
    };
    assert_eq!(count(&[]), 6);
    assert_eq!(count(&["--flip", "--vote"]), 6);
    assert_eq!(count(&["--resize", "long:1000"]), 6);
    let out = retinaface(&["detect", s(&photo), "--resize", "short:500", "--tta"]);
    assert!(!out.status.success());
    let out = retinaface(&["detect", s(&photo), "--resize", "wide:3"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("short:N"));
}

/// `--iou A:B` reports the challenge mAP: per setting the mean AP and each threshold's AP,
/// whose 0.50 entry is the single-threshold run's; bad ranges are errors before any work.
#[test]
fn widerface_iou_range_reports_the_challenge_map() {
    let (pred, gt) = (eval_fixtures().join("wider_pred"), gt());
    let base = ["eval", "widerface", "--pred", s(&pred), "--gt", s(&gt)];
    let single = one_json_line(&retinaface(&[&base[..], &["--json"]].concat()));
    let range = one_json_line(&retinaface(
        &[&base[..], &["--iou", "0.5:0.95", "--json"]].concat(),
    ));
    for setting in ["easy", "medium", "hard"] {
        let r = &range[setting];
        let per: Vec<f64> = r["per_iou"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(per.len(), 10, "{r}");
        let mean = per.iter().sum::<f64>() / 10.0;
        assert!((r["ap"].as_f64().unwrap() - mean).abs() < 1e-12);
        assert_eq!(r["per_iou"]["0.50"], single[setting]["ap"]);
        assert_eq!(r["faces"], single[setting]["faces"]);
        assert!(per[9] < per[0]);
    }
    // Text: the means, then a row per threshold.
    let out = retinaface(&[&base[..], &["--iou", "0.5:0.6"]].concat());
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("easy   mAP "), "{text}");
    assert!(text.contains("\n0.55 ") && text.contains("\n0.60 ") && !text.contains("\n0.65 "));
    for bad in [
        &["--iou", "1.5"][..],
        &["--iou", "0.9:0.5"],
        &["--iou", "x"],
    ] {
        let out = retinaface(&[&base[..], bad].concat());
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--iou"), "{bad:?}: {err}");
    }
    let plot = temp("iou-plot").join("pr.png");
    let out = retinaface(&[&base[..], &["--iou", "0.5:0.95", "--plot", s(&plot)]].concat());
    assert!(!out.status.success() && !plot.exists());
}
