//! The MAT reader on files written by scipy (tests/fixtures/write_scipy_mat.py, run here; the
//! CI script installs numpy and scipy) and on the official WIDER files.

mod common;

use common::{fixture, gt_dir};
use retinaface_eval::mat::{MatClass, MatData, MatFile};
use std::path::{Path, PathBuf};

/// Writes the scipy files into a fresh folder with `$PYTHON` (default `python3`).
fn scipy_files() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("retinaface-mat-{}", std::process::id()));
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .arg(fixture("write_scipy_mat.py"))
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    assert!(
        out.status.success(),
        "write_scipy_mat.py failed (needs numpy and scipy): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn check(dir: &Path, file: &str) {
    let m = MatFile::open(&dir.join(file)).expect(file);
    assert!(m.header.starts_with("MATLAB 5.0 MAT-file"), "{}", m.header);
    let v = |n: &str| m.get(n).unwrap_or_else(|| panic!("{file}: no {n}"));

    let dbl = v("dbl");
    assert_eq!(
        (dbl.class, dbl.dims.as_slice()),
        (MatClass::Double, &[2, 3][..])
    );
    // Column-major: [[1.5, -2, 3.25], [4, 5, 6]].
    assert_eq!(dbl.as_f64().unwrap(), [1.5, 4.0, -2.0, 5.0, 3.25, 6.0]);
    assert_eq!(v("i32").class, MatClass::Int32);
    assert_eq!(v("i32").as_f64().unwrap(), [-7.0, 8.0]);
    assert_eq!(v("u8").as_f64().unwrap(), [1.0, 2.0, 255.0]);
    assert_eq!(v("i64").as_f64().unwrap(), [-(2f64.powi(40))]);
    assert_eq!(v("sgl").class, MatClass::Single);
    assert_eq!(v("sgl").as_f64().unwrap(), [0.5, 0.25]);
    match &v("cpx").data {
        MatData::Numeric { real, imag } => {
            assert_eq!(real, &[1.0, 3.0]);
            assert_eq!(imag.as_deref(), Some(&[2.0, -4.0][..]));
        }
        other => panic!("{other:?}"),
    }
    assert!(v("flag").logical);
    assert_eq!(v("flag").as_f64().unwrap(), [1.0, 0.0]);
    assert_eq!(v("txt").as_string().unwrap(), "héllo wörld");
    assert_eq!(v("rows").char_rows().unwrap(), ["ab", "cd"]);
    assert_eq!(v("rows").as_string(), None);

    let cel = v("cel").as_cell().unwrap();
    assert_eq!(cel.len(), 3);
    assert_eq!(cel[0].as_f64().unwrap(), [1.0]);
    assert_eq!(cel[1].as_string().unwrap(), "x");
    assert!(cel[2].is_empty());

    let nest = v("nest");
    assert_eq!(nest.dims, [1, 1, 1, 1, 1, 1]);
    let inner = &nest.as_cell().unwrap()[0];
    assert_eq!(inner.as_f64().unwrap(), [42.0]);

    let st = v("st");
    assert_eq!(st.class, MatClass::Struct);
    assert_eq!(st.field(0, "a").unwrap().as_f64().unwrap(), [1.0, 2.0]);
    assert_eq!(st.field(0, "name").unwrap().as_string().unwrap(), "bob");
    assert!(st.field(0, "nope").is_none());

    assert_eq!(v("empty").dims, [0, 3]);
    assert!(v("empty").is_empty());
}

#[test]
fn reads_scipy_files_compressed_and_not() {
    let dir = scipy_files();
    check(&dir, "scipy_types.mat");
    check(&dir, "scipy_types_uncompressed.mat");
    let a = MatFile::open(&dir.join("scipy_types.mat")).unwrap();
    let b = MatFile::open(&dir.join("scipy_types_uncompressed.mat")).unwrap();
    assert_eq!(a.variables, b.variables);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reads_the_official_wider_files() {
    let m = MatFile::open(&gt_dir().join("wider_face_val.mat")).unwrap();
    assert_eq!(
        m.names(),
        [
            "blur_label_list",
            "event_list",
            "expression_label_list",
            "face_bbx_list",
            "file_list",
            "illumination_label_list",
            "invalid_label_list",
            "occlusion_label_list",
            "pose_label_list"
        ]
    );
    let events = m.get("event_list").unwrap();
    assert_eq!(events.dims, [61, 1]);
    assert_eq!(
        events.as_cell().unwrap()[2].as_string().unwrap(),
        "10--People_Marching"
    );
    let boxes = &m.get("face_bbx_list").unwrap().as_cell().unwrap()[0]
        .as_cell()
        .unwrap()[0];
    assert_eq!(boxes.class, MatClass::Int32);
    assert_eq!(boxes.dims[1], 4);
    let hard = MatFile::open(&gt_dir().join("wider_hard_val.mat")).unwrap();
    assert!(hard.get("gt_list").is_some());
}
