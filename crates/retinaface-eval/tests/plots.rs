//! Figures: PNG and SVG output of the PR and CED plots.

mod common;

use common::{fixture, gt_dir, TempDir};
use retinaface_eval::landmarks::{
    evaluate_landmarks, LabelFile, LandmarkDetection, LandmarkEvalOptions, LandmarkReport,
};
use retinaface_eval::plot::{plot_ced, plot_pr_curves, PlotError, FIGURE_SIZE};
use retinaface_eval::widerface::{evaluate, EvalOptions, GroundTruth, Predictions};
use std::collections::HashMap;
use std::path::Path;

fn fixture_report() -> retinaface_eval::EvalReport {
    let gt = GroundTruth::load(&gt_dir()).expect("ground truth");
    let preds = Predictions::load(&fixture("wider_pred")).expect("predictions");
    let names = std::fs::read_to_string(fixture("images.txt")).unwrap();
    let opts = EvalOptions {
        images: Some(retinaface_eval::ImageFilter::from_names(names.lines())),
        ..EvalOptions::default()
    };
    evaluate(&gt, &preds, &opts).expect("evaluate")
}

/// Counts pixels close to an RGB colour.
fn count_colour(img: &image::RgbImage, c: [u8; 3]) -> usize {
    img.pixels()
        .filter(|p| p.0.iter().zip(c).all(|(a, b)| a.abs_diff(b) < 12))
        .count()
}

#[test]
fn pr_curves_render_to_png_and_svg() {
    let report = fixture_report();
    let tmp = TempDir::new("plots");
    let png = tmp.path().join("pr.PNG");
    plot_pr_curves(&report, "WIDER FACE val (fixture)", &png).expect("png");
    let img = image::open(&png).expect("decodes").to_rgb8();
    assert_eq!(img.dimensions(), FIGURE_SIZE);
    // The three curves in their colours, and dark text/axes.
    for c in [[31, 119, 180], [255, 127, 14], [44, 160, 44]] {
        assert!(count_colour(&img, c) > 500, "colour {c:?} missing");
    }
    assert!(count_colour(&img, [0, 0, 0]) > 2000, "no axes or text");

    let svg = tmp.path().join("pr.svg");
    plot_pr_curves(&report, "WIDER FACE val (fixture)", &svg).expect("svg");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..80.min(text.len())]);
    for want in [
        format!("AP {:.4}", report.easy.ap),
        format!("AP {:.4}", report.hard.ap),
        "Recall".to_string(),
        "Precision".to_string(),
    ] {
        assert!(text.contains(&want), "SVG lacks {want}");
    }
}

#[test]
fn unsupported_extension_and_missing_folder_are_errors() {
    let report = fixture_report();
    let tmp = TempDir::new("plots-bad");
    let e = plot_pr_curves(&report, "t", &tmp.path().join("pr.jpg")).unwrap_err();
    assert!(matches!(e, PlotError::UnsupportedExtension(_)), "{e:?}");
    let e = plot_pr_curves(&report, "t", &tmp.path().join("no/such/dir/pr.png")).unwrap_err();
    assert!(e.to_string().contains("no/such/dir/pr.png"), "{e}");
}

fn hand_report() -> LandmarkReport {
    let text = "# a.jpg\n0 0 100 100 10 10 0 90 10 0 50 50 0 20 80 0 80 80 0 0.5\n\
                0 200 100 100 10 210 0 90 210 0 50 250 0 20 280 0 80 280 0 0.5\n";
    let labels = LabelFile::parse(text, Path::new("label.txt")).unwrap();
    let pts = [
        [12.0, 10.0],
        [90.0, 10.0],
        [50.0, 50.0],
        [20.0, 80.0],
        [80.0, 80.0],
    ];
    let mut dets = HashMap::new();
    dets.insert(
        "a.jpg".to_string(),
        vec![LandmarkDetection {
            bbox: [0.0, 0.0, 100.0, 100.0],
            score: 0.9,
            landmarks: pts,
        }],
    );
    evaluate_landmarks(&labels, &dets, &LandmarkEvalOptions::default()).unwrap()
}

#[test]
fn ced_renders() {
    let r = hand_report();
    let tmp = TempDir::new("ced");
    for ext in ["png", "svg"] {
        let path = tmp.path().join(format!("ced.{ext}"));
        plot_ced(&[("test", &r)], 0.1, "CED", &path).expect("ced");
        assert!(std::fs::metadata(&path).unwrap().len() > 1000);
    }
    let text = std::fs::read_to_string(tmp.path().join("ced.svg")).unwrap();
    assert!(text.contains("failures 50.00%"), "legend");
}

/// Renders both figures from real data for a person to look at:
/// `RETINAFACE_EVAL_PRED` (the reference's 145-image WIDER output), `RETINAFACE_EVAL_DETS`
/// (`retinaface_ort.py --json` on shared/data/widerface/train/images) and
/// `RETINAFACE_EVAL_PLOTS` (output folder).
#[test]
#[ignore = "needs RETINAFACE_EVAL_PRED, RETINAFACE_EVAL_DETS and RETINAFACE_EVAL_PLOTS"]
fn render_real_figures() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("set {k}"));
    let out = std::path::PathBuf::from(var("RETINAFACE_EVAL_PLOTS"));
    let gt = GroundTruth::load(&gt_dir()).expect("ground truth");
    let preds = Predictions::load(Path::new(&var("RETINAFACE_EVAL_PRED"))).expect("preds");
    let opts = EvalOptions {
        images: Some(
            retinaface_eval::ImageFilter::from_dir(
                &common::shared_dir().join("data/widerface/val/images"),
            )
            .unwrap(),
        ),
        ..EvalOptions::default()
    };
    let report = evaluate(&gt, &preds, &opts).expect("evaluate");
    println!("{}", report.to_json());
    for ext in ["png", "svg"] {
        plot_pr_curves(
            &report,
            "WIDER FACE val, 145 images: MobileNet-0.25 (ONNX reference)",
            &out.join(format!("pr.{ext}")),
        )
        .unwrap();
    }

    let labels =
        LabelFile::load(&common::shared_dir().join("data/widerface/train/label.txt")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(var("RETINAFACE_EVAL_DETS")).unwrap())
            .unwrap();
    let mut dets = HashMap::new();
    for rec in json.as_array().unwrap() {
        let faces = rec["faces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let b: Vec<f32> = f["box"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect();
                let mut lm = [[0.0f32; 2]; 5];
                for (k, p) in f["landmarks"].as_array().unwrap().iter().enumerate() {
                    lm[k] = [p[0].as_f64().unwrap() as f32, p[1].as_f64().unwrap() as f32];
                }
                LandmarkDetection {
                    bbox: [b[0], b[1], b[2], b[3]],
                    score: f["score"].as_f64().unwrap() as f32,
                    landmarks: lm,
                }
            })
            .collect();
        dets.insert(rec["image"].as_str().unwrap().to_string(), faces);
    }
    let r = evaluate_landmarks(&labels, &dets, &LandmarkEvalOptions::default()).unwrap();
    println!(
        "landmarks: images {} faces {} matched {} unmatched {} mean NME {:?} failure rate {}",
        r.images, r.faces, r.matched, r.unmatched, r.mean_nme, r.failure_rate
    );
    for ext in ["png", "svg"] {
        plot_ced(
            &[("MobileNet-0.25", &r)],
            0.1,
            "Landmarks, WIDER FACE train subset (581 images)",
            &out.join(format!("ced.{ext}")),
        )
        .unwrap();
    }
}
