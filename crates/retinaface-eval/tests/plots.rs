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
