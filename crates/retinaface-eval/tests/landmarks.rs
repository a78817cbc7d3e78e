//! label.txt parsing and the landmark NME evaluation.

mod common;

use retinaface_eval::landmarks::{
    evaluate_landmarks, LabelFile, LandmarkDetection, LandmarkEvalOptions,
};
use std::collections::HashMap;
use std::path::Path;

#[test]
fn parses_the_real_training_label_file() {
    let path = common::shared_dir().join("data/widerface/train/label.txt");
    let labels = LabelFile::load(&path).expect("label.txt");
    assert_eq!(labels.images.len(), 581);
    // Counted with awk: 17,505 face lines, 7,199 with the first point's x ≥ 0.
    assert_eq!(labels.face_count(), 17505);
    assert_eq!(labels.faces_with_landmarks(), 7199);
    let first = &labels.images[0];
    assert_eq!(first.path, "0--Parade/0_Parade_marchingband_1_849.jpg");
    assert_eq!(first.faces.len(), 1);
    let f = &first.faces[0];
    assert_eq!(f.bbox, [449.0, 330.0, 122.0, 149.0]);
    assert_eq!(f.points[0], [488.906, 373.643, 0.0]);
    assert_eq!(f.points[4], [538.357, 431.491, 0.0]);
    assert_eq!(f.extra, Some(0.82));
    // Every image listed in the official box file of the same subset.
    let boxes = std::fs::read_to_string(
        common::shared_dir().join("data/widerface/train/wider_face_train_bbx_gt_subset.txt"),
    )
    .unwrap();
    for img in &labels.images {
        assert!(boxes.contains(&img.path), "{}", img.path);
    }
}

fn face_line(bbox: [f32; 4], pts: [Option<[f32; 2]>; 5]) -> String {
    let mut s = format!("{} {} {} {}", bbox[0], bbox[1], bbox[2], bbox[3]);
    for p in pts {
        match p {
            Some([x, y]) => s += &format!(" {x} {y} 0.0"),
            None => s += " -1.0 -1.0 -1.0",
        }
    }
    s + " 0.5\n"
}

fn det(bbox: [f32; 4], score: f32, landmarks: [[f32; 2]; 5]) -> LandmarkDetection {
    LandmarkDetection {
        bbox,
        score,
        landmarks,
    }
}

#[test]
fn nme_on_a_hand_computed_case() {
    let p1 = [
        [10.0, 10.0],
        [90.0, 10.0],
        [50.0, 50.0],
        [20.0, 80.0],
        [80.0, 80.0],
    ];
    // Face 2: 50×200 box (√(w·h) = 100), nose not annotated.
    let p2 = [
        [210.0, 20.0],
        [240.0, 20.0],
        [0.0, 0.0],
        [210.0, 150.0],
        [240.0, 150.0],
    ];
    let mut text = String::from("# ev/one.jpg\n");
    text += &face_line([0.0, 0.0, 100.0, 100.0], p1.map(Some)); // face 0
    text += &face_line(
        [200.0, 0.0, 50.0, 200.0],
        [Some(p2[0]), Some(p2[1]), None, Some(p2[3]), Some(p2[4])],
    ); // face 1
    text += &face_line([500.0, 500.0, 40.0, 40.0], p1.map(Some)); // face 2: no detection
    text += "600 0 30 30\n"; // face 3: no landmarks, not evaluated
    text += &face_line(
        [0.0, 300.0, 100.0, 100.0],
        p1.map(|[x, y]| Some([x, y + 300.0])),
    ); // face 4
    text += "# ev/two.jpg\n";
    text += &face_line([0.0, 0.0, 100.0, 100.0], p1.map(Some));
    text += "# ev/not_run.jpg\n";
    text += &face_line([0.0, 0.0, 100.0, 100.0], p1.map(Some));
    let labels = LabelFile::parse(&text, Path::new("label.txt")).unwrap();

    let mut one = Vec::new();
    // Face 0: a perfect box whose first point is off by (3, 4) → mean error 5/5 = 1 → NME 0.01,
    // and a worse-overlapping detection with perfect points that must not be chosen.
    let mut off = p1;
    off[0] = [13.0, 14.0];
    one.push(det([0.0, 0.0, 100.0, 100.0], 0.9, off));
    one.push(det([10.0, 0.0, 110.0, 100.0], 0.95, p1));
    // Face 1: points 0 and 4 off by 10 → mean over 4 annotated points 5 → NME 0.05; whatever
    // the detector says about the unannotated nose does not count.
    let mut d2 = p2;
    d2[0][0] += 10.0;
    d2[4][1] -= 10.0;
    d2[2] = [1000.0, 1000.0];
    one.push(det([200.0, 0.0, 250.0, 200.0], 0.6, d2));
    // ... and a perfect one below the score threshold, which must be passed over.
    one.push(det([200.0, 0.0, 250.0, 200.0], 0.5, p2));
    // Face 4: every point off by 20 px horizontally → NME 0.2, a failure.
    one.push(det(
        [0.0, 300.0, 100.0, 400.0],
        0.99,
        p1.map(|[x, y]| [x + 20.0, y + 300.0]),
    ));
    let mut dets = HashMap::new();
    dets.insert("ev/one.jpg".to_string(), one);
    // ev/two.jpg ran and found nothing: its face is unmatched. Keyed by bare file name.
    dets.insert("two.jpg".to_string(), Vec::new());
    dets.insert("ev/stranger.jpg".to_string(), Vec::new());

    let r = evaluate_landmarks(&labels, &dets, &LandmarkEvalOptions::default()).unwrap();
    assert_eq!(r.images, 2);
    assert_eq!(r.missing_images, ["ev/not_run.jpg"]);
    assert_eq!(r.unknown_images, ["ev/stranger.jpg"]);
    assert_eq!(r.faces, 5);
    assert_eq!((r.matched, r.unmatched, r.high_nme), (3, 2, 1));
    let nme: Vec<Option<f64>> = r.per_face.iter().map(|f| f.nme).collect();
    let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-12);
    assert!(close(nme[0], 0.01), "{nme:?}");
    assert!(close(nme[1], 0.05), "{nme:?}");
    assert_eq!(nme[2], None);
    assert!(close(nme[3], 0.2), "{nme:?}");
    assert_eq!(nme[4], None);
    assert_eq!(r.per_face[3].face, 4);
    assert_eq!(r.per_face[0].iou, Some(1.0));
    assert!(close(r.mean_nme, (0.01 + 0.05 + 0.2) / 3.0));
    // Failures: face 4 (NME 0.2) and the two unmatched faces, of 5.
    assert!((r.failure_rate - 3.0 / 5.0).abs() < 1e-12);

    let ced = r.ced(0.1, 10);
    assert_eq!(ced.len(), 11);
    assert_eq!(ced[0], (0.0, 0.0));
    assert!((ced[2].1 - 1.0 / 5.0).abs() < 1e-12, "{ced:?}"); // x = 0.02: face 0
    assert!((ced[6].1 - 2.0 / 5.0).abs() < 1e-12, "{ced:?}"); // x = 0.06: faces 0, 1
    assert!((ced[10].1 - 2.0 / 5.0).abs() < 1e-12, "{ced:?}"); // 0.2 is beyond the axis

    // A stricter IoU still matches face 0 (IoU 1); a score threshold of 0.96 drops all of
    // image one's detections but the 0.99 one, which matches face 4 only.
    let strict = LandmarkEvalOptions {
        iou_threshold: 0.95,
        ..LandmarkEvalOptions::default()
    };
    let r2 = evaluate_landmarks(&labels, &dets, &strict).unwrap();
    assert!(close(r2.per_face[0].nme, 0.01));
    let picky = LandmarkEvalOptions {
        score_threshold: 0.96,
        ..LandmarkEvalOptions::default()
    };
    let r3 = evaluate_landmarks(&labels, &dets, &picky).unwrap();
    assert_eq!((r3.matched, r3.unmatched), (1, 4));
}

#[test]
fn detections_deserialise_from_detection_json_faces() {
    let json = r#"{"box": [1.5, 2, 30, 40], "score": 0.9, "landmarks": [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]], "extra": 1}"#;
    let d: LandmarkDetection = serde_json::from_str(json).unwrap();
    assert_eq!(d.bbox, [1.5, 2.0, 30.0, 40.0]);
    assert_eq!(d.landmarks[4], [9.0, 10.0]);
}
