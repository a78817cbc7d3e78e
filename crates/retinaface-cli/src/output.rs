//! Writers: the JSON record of an image, WIDER prediction files, drawings.

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use retinaface::mesh::FaceMesh;
use retinaface::Face;
use retinaface_eval::widerface::{format_prediction_file, WiderDetection};
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// One image's detections, the reference's JSON schema.
#[derive(Debug, Serialize)]
pub struct Record {
    pub image: String,
    pub width: u32,
    pub height: u32,
    pub faces: Vec<FaceOut>,
}

/// A face of a record: the detection, and with `--mesh` its mesh.
#[derive(Debug, Serialize)]
pub struct FaceOut {
    #[serde(flatten)]
    pub face: Face,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshOut>,
    /// Per vertex RGB in [0, 1] (`--mesh-colors`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh_colors: Option<Vec<[f32; 3]>>,
}

/// A mesh in the JSON: `[x, y, depth]` per vertex in image pixels, to 0.01 px.
#[derive(Debug, Serialize)]
pub struct MeshOut {
    pub vertices: Vec<[f32; 3]>,
}

impl FaceOut {
    /// A face without a mesh.
    pub fn plain(face: Face) -> Self {
        FaceOut {
            face,
            mesh: None,
            mesh_colors: None,
        }
    }

    /// A face with its mesh, and the colours when `colors`.
    pub fn with_mesh(face: Face, mesh: &FaceMesh, colors: bool) -> Self {
        let round = |v: f32, k: f32| (v * k).round() / k;
        FaceOut {
            face,
            mesh: Some(MeshOut {
                vertices: mesh
                    .vertices
                    .iter()
                    .map(|v| v.map(|x| round(x, 100.0)))
                    .collect(),
            }),
            mesh_colors: colors.then(|| {
                mesh.colors
                    .iter()
                    .map(|c| c.map(|x| round(x, 1000.0)))
                    .collect()
            }),
        }
    }
}

/// Write a WIDER prediction file: stem, count, then `x y w h score` per face with the
/// reference's integer truncation (the eval crate's format).
pub fn write_wider(path: &Path, stem: &str, faces: &[Face]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // The reference detector truncates the corners to integers.
    let detections: Vec<WiderDetection> = faces
        .iter()
        .map(|f| {
            let [x1, y1, x2, y2] = f.bbox.map(|v| v.trunc() as i64 as f64);
            WiderDetection {
                x: x1,
                y: y1,
                w: x2 - x1,
                h: y2 - y1,
                score: f64::from(f.score),
            }
        })
        .collect();
    let s = format_prediction_file(stem, &detections);
    crate::files::write_atomic(path, s.as_bytes())
}

/// Write the JSON array of records to a file or `-` (stdout).
pub fn write_json(target: &Path, records: &[Record]) -> Result<()> {
    let json = serde_json::to_string(records)?;
    if target == Path::new("-") {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{json}")?;
        out.flush()?;
    } else {
        crate::files::write_atomic(target, (json + "\n").as_bytes())?;
    }
    Ok(())
}

/// One CSV row per face: image, face index, score, box corners, landmarks (empty when the
/// model predicts none), to a file or `-`.
pub fn write_csv(target: &Path, records: &[Record]) -> Result<()> {
    let mut text = String::from("image,face,score,x1,y1,x2,y2");
    for k in 0..5 {
        text.push_str(&format!(",lm{k}_x,lm{k}_y"));
    }
    text.push('\n');
    for r in records {
        let image = csv_field(&r.image);
        for (k, f) in r.faces.iter().map(|f| &f.face).enumerate() {
            let [x1, y1, x2, y2] = f.bbox;
            text.push_str(&format!(
                "{image},{k},{:.5},{x1:.2},{y1:.2},{x2:.2},{y2:.2}",
                f.score
            ));
            for p in 0..5 {
                match f.landmarks {
                    Some(l) => text.push_str(&format!(",{:.2},{:.2}", l[p][0], l[p][1])),
                    None => text.push_str(",,"),
                }
            }
            text.push('\n');
        }
    }
    if target == Path::new("-") {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        Ok(())
    } else {
        crate::files::write_atomic(target, text.as_bytes())
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Without an output flag: each photo and its faces, readable, on standard output.
pub fn print_summary(records: &[Record]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for r in records {
        writeln!(
            out,
            "{} ({}×{}): {} face(s)",
            r.image,
            r.width,
            r.height,
            r.faces.len()
        )?;
        for f in r.faces.iter().map(|f| &f.face) {
            let [x1, y1, x2, y2] = f.bbox.map(|v| v.round() as i64);
            writeln!(
                out,
                "  score {:.3}  box ({x1}, {y1})–({x2}, {y2})  {}×{} px",
                f.score,
                x2 - x1,
                y2 - y1
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Save a drawing in the format of its extension (JPEG at quality 95), atomically.
pub fn save_image(img: &RgbImage, path: &Path) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut bytes = std::io::Cursor::new(Vec::new());
    let result = if ext == "jpg" || ext == "jpeg" {
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95).encode_image(img)
    } else {
        let format = image::ImageFormat::from_extension(&ext).unwrap_or(image::ImageFormat::Png);
        img.write_to(&mut bytes, format)
    };
    result.with_context(|| format!("cannot encode {}", path.display()))?;
    crate::files::write_atomic(path, bytes.get_ref())
}

/// Boxes, scores and landmarks drawn on a copy of the image.
pub fn draw(img: &RgbImage, faces: &[Face]) -> RgbImage {
    let mut out = img.clone();
    let thick = ((img.width().max(img.height()) as f32 / 500.0).ceil() as i64).max(1);
    for f in faces {
        let [x1, y1, x2, y2] = f.bbox.map(|v| v.round() as i64);
        for t in 0..thick {
            rect(&mut out, x1 - t, y1 - t, x2 + t, y2 + t, Rgb([0, 255, 0]));
        }
        text(
            &mut out,
            x1,
            y1 - 7 * thick,
            thick,
            &format!("{:.2}", f.score),
            Rgb([0, 255, 0]),
        );
        const COLOURS: [[u8; 3]; 5] = [
            [255, 0, 0],
            [0, 255, 255],
            [255, 0, 255],
            [0, 255, 0],
            [255, 128, 0],
        ];
        for (p, c) in f.landmarks.iter().flatten().zip(COLOURS) {
            dot(
                &mut out,
                p[0].round() as i64,
                p[1].round() as i64,
                thick + 1,
                Rgb(c),
            );
        }
    }
    out
}

/// A mesh's wireframe drawn onto `img`: the edges of the triangles that face the camera
/// (the others are behind the face).
pub fn draw_mesh(img: &mut RgbImage, mesh: &FaceMesh) {
    let c = Rgb([80, 200, 255]);
    let triangles = &retinaface::mesh::Mesh::canonical().triangles;
    for t in triangles {
        let [a, b, d] = t.map(|i| mesh.vertices[i as usize]);
        // Counter-clockwise from the front in the model, so clockwise on screen (y down).
        let area = (b[0] - a[0]) * (d[1] - a[1]) - (b[1] - a[1]) * (d[0] - a[0]);
        if area >= 0.0 {
            continue;
        }
        for (p, q) in [(a, b), (b, d), (d, a)] {
            line(img, [p[0], p[1]], [q[0], q[1]], c);
        }
    }
}

/// A one-pixel line between pixel-space points (clipped to the image; a point outside any
/// sensible range draws nothing).
fn line(img: &mut RgbImage, p: [f32; 2], q: [f32; 2], c: Rgb<u8>) {
    let limit = 4.0 * img.width().max(img.height()) as f32 + 4096.0;
    if [p[0], p[1], q[0], q[1]]
        .iter()
        .any(|v| !v.is_finite() || v.abs() > limit)
    {
        return;
    }
    let steps = (q[0] - p[0]).abs().max((q[1] - p[1]).abs()).ceil().max(1.0) as i64;
    for k in 0..=steps {
        let t = k as f32 / steps as f32;
        let x = p[0] + (q[0] - p[0]) * t;
        let y = p[1] + (q[1] - p[1]) * t;
        put(img, x.floor() as i64, y.floor() as i64, c);
    }
}

/// 3×5 glyphs for the digits and the point, one row per 3 bits (MSB left).
const GLYPHS: [(char, [u8; 5]); 11] = [
    ('0', [7, 5, 5, 5, 7]),
    ('1', [2, 6, 2, 2, 7]),
    ('2', [7, 1, 7, 4, 7]),
    ('3', [7, 1, 7, 1, 7]),
    ('4', [5, 5, 7, 1, 1]),
    ('5', [7, 4, 7, 1, 7]),
    ('6', [7, 4, 7, 5, 7]),
    ('7', [7, 1, 1, 1, 1]),
    ('8', [7, 5, 7, 5, 7]),
    ('9', [7, 5, 7, 1, 7]),
    ('.', [0, 0, 0, 0, 2]),
];

/// A score written with the built-in digits, `scale` pixels per dot, top-left at (x, y).
fn text(img: &mut RgbImage, x: i64, y: i64, scale: i64, s: &str, c: Rgb<u8>) {
    let y = y.max(0);
    for (i, ch) in s.chars().enumerate() {
        let Some((_, rows)) = GLYPHS.iter().find(|(g, _)| *g == ch) else {
            continue;
        };
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            put(
                                img,
                                x + (i as i64 * 4 + col) * scale + dx,
                                y + r as i64 * scale + dy,
                                c,
                            );
                        }
                    }
                }
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn rect(img: &mut RgbImage, x1: i64, y1: i64, x2: i64, y2: i64, c: Rgb<u8>) {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    for x in x1.max(0)..=x2.min(w - 1) {
        put(img, x, y1, c);
        put(img, x, y2, c);
    }
    for y in y1.max(0)..=y2.min(h - 1) {
        put(img, x1, y, c);
        put(img, x2, y, c);
    }
}

fn dot(img: &mut RgbImage, cx: i64, cy: i64, r: i64, c: Rgb<u8>) {
    for y in cy - r..=cy + r {
        for x in cx - r..=cx + r {
            if (x - cx).pow(2) + (y - cy).pow(2) <= r * r {
                put(img, x, y, c);
            }
        }
    }
}
