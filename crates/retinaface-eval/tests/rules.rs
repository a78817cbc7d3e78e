//! The protocol's rules on tiny, hand-computed cases (in-memory ground truth).
//!
//! Thresholds are t_k = 1 − (k+1)/1000, k = 0..999; precision and recall at each threshold
//! are summed over images; AP is the area under the monotone envelope. Scores are chosen so
//! that normalised scores are exact (0, 0.5, 1).

use retinaface_eval::widerface::{
    evaluate, parse_prediction_text, EvalOptions, GroundTruth, GtEvent, GtImage, ImageFilter,
    Predictions, Setting, SettingLists, WiderDetection,
};
use std::path::Path;

fn det(x: f64, y: f64, w: f64, h: f64, score: f64) -> WiderDetection {
    WiderDetection { x, y, w, h, score }
}

/// An image whose boxes all count in every setting.
fn image(name: &str, boxes: &[[f64; 4]]) -> GtImage {
    let all: Vec<usize> = (0..boxes.len()).collect();
    GtImage {
        name: name.into(),
        boxes: boxes.to_vec(),
        settings: Some(SettingLists {
            easy: all.clone(),
            medium: all.clone(),
            hard: all,
        }),
    }
}

fn gt(images: Vec<GtImage>) -> GroundTruth {
    GroundTruth {
        events: vec![GtEvent {
            name: "0--Test".into(),
            images,
        }],
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

const A: [f64; 4] = [0.0, 0.0, 10.0, 10.0];
const B: [f64; 4] = [100.0, 100.0, 10.0, 10.0];
const C: [f64; 4] = [0.0, 0.0, 20.0, 20.0];

/// Image a: a TP (score s1) and an FP (s2); image b: a TP (s3).
/// With normalised scores 1, 0.5, 0: above 0.5 → P 1, R 1/3; from 0.5 on → P 1/2,
/// R 1/3; at 0 → P 2/3, R 2/3. Envelope: 1 up to R 1/3, then 2/3: AP = 1/3 + 1/3·2/3 = 5/9.
fn two_images(s1: f64, s2: f64, s3: f64) -> (GroundTruth, Predictions) {
    let g = gt(vec![image("a", &[A, B]), image("b", &[C])]);
    let mut p = Predictions::new();
    p.insert(
        "0--Test",
        "a",
        vec![
            det(0.0, 0.0, 10.0, 10.0, s1),
            det(50.0, 50.0, 10.0, 10.0, s2),
        ],
    );
    p.insert("0--Test", "b", vec![det(0.0, 0.0, 20.0, 20.0, s3)]);
    (g, p)
}

#[test]
fn two_images_give_the_hand_computed_ap_and_curve() {
    let (g, p) = two_images(1.0, 0.5, 0.0);
    let r = evaluate(&g, &p, &EvalOptions::default()).unwrap();
    for s in Setting::ALL {
        let s = r.get(s);
        assert!(close(s.ap, 5.0 / 9.0), "{}", s.ap);
        assert_eq!((s.faces, s.images), (3, 2));
    }
    let c = &r.hard.pr_curve;
    assert_eq!((c[0].proposals, c[0].true_positives), (1.0, 1.0));
    assert_eq!(c[498].proposals, 1.0); // t = 0.501
    assert_eq!(c[499].threshold, 0.5);
    assert_eq!((c[499].proposals, c[499].precision), (2.0, 0.5));
    assert_eq!((c[999].proposals, c[999].true_positives), (3.0, 2.0));
    assert!(close(c[999].recall, 2.0 / 3.0));
}

#[test]
fn scores_outside_zero_one_are_normalised_over_the_run() {
    for (s1, s2, s3) in [(10.0, 5.0, 0.0), (-3.0, -4.0, -5.0), (1e6, 5e5, 0.0)] {
        let (g, p) = two_images(s1, s2, s3);
        let r = evaluate(&g, &p, &EvalOptions::default()).unwrap();
        assert!(close(r.easy.ap, 5.0 / 9.0), "{s1} {s2} {s3}: {}", r.easy.ap);
        assert_eq!(r.score_range, (s3, s1));
    }
}

#[test]
fn an_ignored_box_makes_its_detection_neither_tp_nor_fp() {
    // Box B is outside the easy list. The highest detection hits B.
    let mut img = image("a", &[A, B]);
    img.settings.as_mut().unwrap().easy = vec![0];
    let g = gt(vec![img]);
    let mut p = Predictions::new();
    p.insert(
        "0--Test",
        "a",
        vec![
            det(100.0, 100.0, 10.0, 10.0, 1.0),
            det(0.0, 0.0, 10.0, 10.0, 0.0),
        ],
    );
    let r = evaluate(&g, &p, &EvalOptions::default()).unwrap();
    // Easy: one face; the B hit is ignored, so above t = 0 there is no proposal (P 0, R 0),
    // at 0 the A hit gives P 1, R 1: AP 1. Were it a false positive, AP would be 1/2.
    assert_eq!(r.easy.faces, 1);
    assert!(close(r.easy.ap, 1.0), "{}", r.easy.ap);
    assert_eq!(r.easy.pr_curve[0].proposals, 0.0);
    assert_eq!(r.easy.pr_curve[999].proposals, 1.0);
    // Hard: both count, both found at full precision.
    assert_eq!(r.hard.faces, 2);
    assert!(close(r.hard.ap, 1.0));
    assert_eq!(r.hard.pr_curve[999].proposals, 2.0);
}

#[test]
fn a_duplicate_detection_is_a_false_positive() {
    // A found at 1, a duplicate of A at 0.5 (IoU 100/142 with the +1 convention), B at 0.
    // Above 0.5: P 1, R 1/2; from 0.5: P 1/2, R 1/2; at 0: P 2/3, R 1. AP = 1/2 + 1/2·2/3.
    let g = gt(vec![image("a", &[A, B])]);
    let dets = vec![
        det(0.0, 0.0, 10.0, 10.0, 1.0),
        det(1.0, 1.0, 10.0, 10.0, 0.5),
        det(100.0, 100.0, 10.0, 10.0, 0.0),
    ];
    let mut p = Predictions::new();
    p.insert("0--Test", "a", dets.clone());
    let r = evaluate(&g, &p, &EvalOptions::default()).unwrap();
    assert!(close(r.easy.ap, 5.0 / 6.0), "{}", r.easy.ap);
    assert_eq!(r.easy.pr_curve[499].precision, 0.5);

    // Unsorted lines: the same detections listed lowest score first, through the parser.
    let text = "a\n3\n100 100 10 10 0\n1 1 10 10 0.5\n\n0 0 10 10 1\n";
    let parsed = parse_prediction_text(text, Path::new("a.txt")).unwrap();
    let mut p = Predictions::new();
    p.insert("0--Test", "a", parsed);
    let r2 = evaluate(&g, &p, &EvalOptions::default()).unwrap();
    assert_eq!(r2.easy.ap, r.easy.ap);
    assert_eq!(r2.easy.pr_curve, r.easy.pr_curve);
}

#[test]
fn an_image_without_predictions_still_counts_its_faces() {
    // a: TP at 1, FP at 0; b: no file. Faces 2: above 0: P 1, R 1/2; at 0: P 1/2: AP 1/2.
    let g = gt(vec![image("a", &[A]), image("b", &[C])]);
    let mut p = Predictions::new();
    p.insert(
        "0--Test",
        "a",
        vec![
            det(0.0, 0.0, 10.0, 10.0, 1.0),
            det(50.0, 50.0, 5.0, 5.0, 0.0),
        ],
    );
    let r = evaluate(&g, &p, &EvalOptions::default()).unwrap();
    assert_eq!((r.easy.faces, r.easy.images), (2, 2));
    assert!(close(r.easy.ap, 0.5), "{}", r.easy.ap);
    // An empty file is the same as no file.
    p.insert("0--Test", "b", Vec::new());
    let r2 = evaluate(&g, &p, &EvalOptions::default()).unwrap();
    assert_eq!(r2.easy, r.easy);
}

#[test]
fn matching_uses_the_plus_one_pixel_convention() {
    // GT 0,0 2×2 and a detection shifted by 1: IoU 6/12 = 0.5 with +1 areas (1/3 without).
    // A single detection: min = max, span 1, normalised score 0: found at t = 0.
    let g = gt(vec![image("a", &[[0.0, 0.0, 2.0, 2.0]])]);
    let mut p = Predictions::new();
    p.insert("0--Test", "a", vec![det(1.0, 0.0, 2.0, 2.0, 0.7)]);
    let r = evaluate(&g, &p, &EvalOptions::default()).unwrap();
    assert!(close(r.easy.ap, 1.0));
    let strict = EvalOptions {
        iou_threshold: 0.51,
        ..EvalOptions::default()
    };
    assert_eq!(evaluate(&g, &p, &strict).unwrap().easy.ap, 0.0);
}

#[test]
fn the_images_filter_keeps_every_score_in_the_normalisation() {
    // a: TP at 1.0, FP at 0.9995. c (filtered out) has a detection at −1000. Normalised over
    // the whole run (as the reference does), both of a's fall above t = 0.999: P 1/2 at
    // every threshold, AP 1/2. Normalised over a alone the TP would lead and AP be 1.
    let g = gt(vec![image("a", &[A]), image("c", &[C])]);
    let mut p = Predictions::new();
    p.insert(
        "0--Test",
        "a",
        vec![
            det(0.0, 0.0, 10.0, 10.0, 1.0),
            det(60.0, 60.0, 5.0, 5.0, 0.9995),
        ],
    );
    p.insert("0--Test", "c", vec![det(300.0, 300.0, 5.0, 5.0, -1000.0)]);
    let opts = EvalOptions {
        images: Some(ImageFilter::from_names(["0--Test/a.jpg"])),
        ..EvalOptions::default()
    };
    let r = evaluate(&g, &p, &opts).unwrap();
    assert_eq!((r.easy.faces, r.easy.images), (1, 1));
    assert!(close(r.easy.ap, 0.5), "{}", r.easy.ap);
    assert_eq!(r.easy.pr_curve[0].proposals, 2.0);
}

#[test]
fn highest_iou_box_wins_even_if_already_found() {
    // Two boxes; detection 2 overlaps A best (already found) and B less: it is a duplicate
    // of A, not a hit on B, as in the reference (argmax over all boxes).
    let g = gt(vec![image(
        "a",
        &[[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 10.0, 10.0]],
    )]);
    let mut p = Predictions::new();
    p.insert(
        "0--Test",
        "a",
        vec![
            det(0.0, 0.0, 10.0, 10.0, 1.0),
            det(1.0, 0.0, 10.0, 10.0, 0.0),
        ],
    );
    let r = evaluate(&g, &p, &EvalOptions::default()).unwrap();
    let last = r.easy.pr_curve[999];
    assert_eq!((last.proposals, last.true_positives), (2.0, 1.0));
}

#[test]
fn no_detection_at_all_is_an_error_like_the_reference() {
    let g = gt(vec![image("a", &[A])]);
    let mut p = Predictions::new();
    p.insert("0--Test", "a", Vec::new());
    let e = evaluate(&g, &p, &EvalOptions::default()).unwrap_err();
    assert!(e.to_string().contains("no predictions"), "{e}");
}
