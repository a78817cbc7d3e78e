//! The test-time protocol: Pillow-exact resizing, voting, flip mirroring, and one photo end to
//! end.

use image::RgbImage;
use retinaface::input::resize::{resize_bilinear, scaled_size, Resize};
use retinaface::tta::{self, Merge, Protocol};
use retinaface::{DetectOptions, Detector, Face};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/resize")
        .join(name)
}

fn png(name: &str) -> RgbImage {
    image::open(fixture(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .into_rgb8()
}

#[test]
fn resize_matches_pillow_bilinear_pixel_for_pixel() {
    let src = png("src.png");
    assert_eq!(src.dimensions(), (37, 23));
    // Shrinking (antialiased), enlarging, one axis only (each way), tiny, almost identity,
    // and both pass orders of Pillow 13 (vertical first: 38×22, 30×5, 27×2; 27×3 is the
    // boundary, horizontal first).
    let sizes = [
        (15, 9),
        (85, 53),
        (37, 61),
        (20, 23),
        (4, 3),
        (38, 22),
        (30, 5),
        (27, 3),
        (27, 2),
    ];
    for (w, h) in sizes {
        let ours = resize_bilinear(&src, w, h);
        let pil = png(&format!("pil_{w}x{h}.png"));
        assert_eq!(ours.dimensions(), pil.dimensions());
        let diff = ours
            .as_raw()
            .iter()
            .zip(pil.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(diff, 0, "{w}x{h}: {diff} samples differ from Pillow");
    }
    assert_eq!(resize_bilinear(&src, 37, 23), src);
}

#[test]
fn pyramid_plan_follows_the_reference() {
    // 1024×576 (16:9): 1700 is skipped (1024·576·k² = 5.14 MP > 4.5 MP), the rest kept.
    let p = Protocol::paper();
    let plan = p.plan(1024, 576);
    let sizes: Vec<(u32, u32, bool)> = plan.iter().map(|q| (q.width, q.height, q.flip)).collect();
    assert_eq!(plan.len(), 8);
    assert_eq!(sizes[0], (889, 500, false));
    assert_eq!(sizes[1], (889, 500, true));
    assert_eq!(sizes[6], (2489, 1400, false));
    assert!((plan[0].k - 500.0 / 576.0).abs() < 1e-15);
    // Python's round: half to even.
    assert_eq!(scaled_size(5, 3, 0.5), (2, 2));
    // A panorama over budget at every scale still gets its smallest one.
    let plan = p.plan(20000, 400);
    assert_eq!(plan.len(), 2);
    assert_eq!((plan[0].width, plan[0].height), (25000, 500));
    assert_eq!(
        Protocol::single(Resize::Long(640)).plan(1280, 720)[0].height,
        360
    );
}

fn face(b: [f32; 4], s: f32, lx: f32) -> Face {
    Face {
        bbox: b,
        score: s,
        landmarks: Some([
            [lx, 1.0],
            [lx + 1.0, 2.0],
            [lx + 2.0, 3.0],
            [lx + 3.0, 4.0],
            [lx + 4.0, 5.0],
        ]),
    }
}

#[test]
fn voting_takes_the_weighted_mean_and_the_best_score() {
    let a = face([10.0, 10.0, 50.0, 50.0], 0.9, 0.0);
    let b = face([12.0, 14.0, 54.0, 52.0], 0.6, 10.0);
    let c = face([11.0, 9.0, 49.0, 51.0], 0.3, 20.0);
    let lone = face([100.0, 100.0, 120.0, 120.0], 0.5, 7.0);
    let far = face([300.0, 0.0, 340.0, 40.0], 0.95, 3.0);
    let out = tta::vote(vec![c, lone, a, b, far], 0.4, 750);
    assert_eq!(out.len(), 3);
    // Best first; a cluster of one is kept exactly.
    assert_eq!(out[0], far);
    assert_eq!(out[2], lone);
    let v = out[1];
    assert_eq!(v.score, 0.9);
    let sw = 0.9 + 0.6 + 0.3;
    let mean = |x: [f32; 3]| (x[0] * 0.9 + x[1] * 0.6 + x[2] * 0.3) / sw;
    for i in 0..4 {
        let want = mean([a.bbox[i], b.bbox[i], c.bbox[i]]);
        assert!(
            (v.bbox[i] - want).abs() < 1e-4,
            "coord {i}: {} vs {want}",
            v.bbox[i]
        );
    }
    for k in 0..5 {
        for j in 0..2 {
            let l = |f: &Face| f.landmarks.expect("landmarks")[k][j];
            let want = mean([l(&a), l(&b), l(&c)]);
            assert!((l(&v) - want).abs() < 1e-4);
        }
    }
    // IoU exactly at the threshold joins the cluster (≥), just below does not.
    let base = face([0.0, 0.0, 9.0, 9.0], 0.8, 0.0); // area 100 with +1 pixels
    let half = face([0.0, 0.0, 9.0, 3.0], 0.7, 0.0); // area 40 inside: IoU 0.4
    assert_eq!(tta::vote(vec![base, half], 0.4, 750).len(), 1);
    assert_eq!(tta::vote(vec![base, half], 0.41, 750).len(), 2);
    assert_eq!(tta::vote(vec![c, lone, a, b, far], 0.4, 2).len(), 2);
}

#[test]
fn flip_mirrors_boxes_and_landmarks_with_swap() {
    let f = Face {
        bbox: [10.0, 20.0, 30.0, 45.0],
        score: 0.8,
        landmarks: Some([
            [14.0, 25.0],
            [26.0, 25.5],
            [20.0, 32.0],
            [15.0, 40.0],
            [25.0, 41.0],
        ]),
    };
    let m = f.flip_horizontal(100.0);
    // The reference's convention: x' = w − 1 − x, x1 and x2 exchanged.
    assert_eq!(m.bbox, [69.0, 20.0, 89.0, 45.0]);
    // Left and right eye, left and right mouth corner swap; the nose stays.
    assert_eq!(
        m.landmarks,
        Some([
            [73.0, 25.5],
            [85.0, 25.0],
            [79.0, 32.0],
            [74.0, 41.0],
            [84.0, 40.0]
        ])
    );
    assert_eq!(m.flip_horizontal(100.0), f);
}

fn detector() -> Detector {
    Detector::default_model().unwrap().with_threads(2).unwrap()
}

fn photo() -> RgbImage {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/photos/t1.jpg");
    retinaface::input::load_image(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn flipped_pass_finds_the_same_faces_mirrored_back() {
    let det = detector();
    let img = photo();
    let o = DetectOptions::default();
    let plain = det.detect(&img, &o).unwrap();
    let mirrored = image::imageops::flip_horizontal(&img);
    let back: Vec<Face> = det
        .detect(&mirrored, &o)
        .unwrap()
        .into_iter()
        .map(|f| f.flip_horizontal(img.width() as f32))
        .collect();
    assert_eq!(plain.len(), back.len());
    for p in &plain {
        let q = back
            .iter()
            .max_by(|a, b| {
                let ia = retinaface::post::nms::iou_plus1(&p.bbox, &a.bbox);
                let ib = retinaface::post::nms::iou_plus1(&p.bbox, &b.bbox);
                ia.total_cmp(&ib)
            })
            .unwrap();
        assert!(retinaface::post::nms::iou_plus1(&p.bbox, &q.bbox) > 0.8);
        // The left eye of the mirrored-back face is the left eye (same side of the nose).
        let (ql, pl) = (
            q.landmarks.expect("landmarks"),
            p.landmarks.expect("landmarks"),
        );
        assert!((ql[0][0] - pl[0][0]).abs() < 0.1 * p.width().max(4.0));
        assert!(ql[0][0] < ql[1][0]);
    }
}

#[test]
fn full_protocol_on_one_photo_finds_its_six_faces() {
    let det = detector();
    let img = photo();
    let o = DetectOptions::default();
    let single = det.detect(&img, &o).unwrap();
    assert_eq!(single.len(), 6);
    // Reduced pyramid (the test is a debug build): two short sides, flips, voting.
    let (w, h) = img.dimensions();
    let short = w.min(h);
    let p = Protocol {
        sizes: vec![Resize::Short(short * 3 / 4), Resize::Original],
        flip: true,
        merge: Merge::Vote(tta::VOTE_IOU),
        max_pixels: Some(tta::PAPER_MAX_PIXELS),
    };
    let faces = tta::detect(&det, &img, &o, &p).unwrap();
    let strong: Vec<&Face> = faces.iter().filter(|f| f.score > 0.5).collect();
    assert_eq!(strong.len(), 6, "{faces:?}");
    for s in &single {
        let best = strong
            .iter()
            .map(|f| retinaface::post::nms::iou_plus1(&s.bbox, &f.bbox))
            .fold(0.0f32, f32::max);
        assert!(best > 0.7, "face {:?} not found again (IoU {best})", s.bbox);
    }
    // The protocol at the original size and no flip is the single pass itself.
    let plain = tta::detect(&det, &img, &o, &Protocol::default()).unwrap();
    assert_eq!(plain, single);
}
