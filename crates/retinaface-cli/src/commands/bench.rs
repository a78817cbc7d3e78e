//! `retinaface bench`: median and min of the forward pass and of the whole detection per size.

use crate::model::ModelArgs;
use anyhow::{bail, Result};
use retinaface::engine::Feature;
use retinaface::DetectOptions;
use serde::Serialize;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Input sizes as WxH, comma-separated.
    #[arg(long, default_value = "640x480,1280x720,1920x1080")]
    sizes: String,
    /// Timed runs per size (after two warm-up runs).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Print one line of JSON (an array, one object per size).
    #[arg(long)]
    json: bool,
    /// Time on this photo, at its own size, instead of pseudo-random images of `--sizes`
    /// (photos have faces, so detection's post-processing and the mesh branch have work).
    #[arg(long, value_name = "PATH")]
    image: Option<std::path::PathBuf>,
    /// Also time `detect --mesh` (faces and their meshes), interleaved run by run with the
    /// plain detection, and print the ratio.
    #[arg(long)]
    mesh: bool,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Serialize)]
struct Row {
    size: String,
    threads: usize,
    median_ms: f64,
    min_ms: f64,
    detect_median_ms: f64,
    detect_min_ms: f64,
    faces: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_median_ms: Option<f64>,
    /// `mesh_median_ms / detect_median_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_ratio: Option<f64>,
}

fn parse_size(s: &str) -> Result<(usize, usize)> {
    let (w, h) = s
        .trim()
        .split_once('x')
        .ok_or_else(|| anyhow::anyhow!("size `{s}` is not WxH"))?;
    let (w, h): (usize, usize) = (w.parse()?, h.parse()?);
    if w == 0 || h == 0 || w * h > 64_000_000 {
        bail!("size `{s}` is out of range");
    }
    Ok((w, h))
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0])
}

/// A fixed pseudo-random image: the same for every run and every build.
fn noise(w: usize, h: usize) -> image::RgbImage {
    let mut state = 0x2545_f491_u32;
    image::RgbImage::from_fn(w as u32, h as u32, |_, _| {
        let mut px = [0u8; 3];
        for p in &mut px {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            *p = (state >> 24) as u8;
        }
        image::Rgb(px)
    })
}

pub fn run(a: Args) -> Result<ExitCode> {
    let threads = a.model.threads()?;
    let detector = a.model.load_with_threads(threads)?;
    let runs = a.runs.max(1);
    if a.mesh && !detector.has_mesh() {
        bail!("--mesh needs a model with the mesh branch (the embedded model has one)");
    }
    let images: Vec<image::RgbImage> = match &a.image {
        Some(path) => vec![a.model.load_image(path)?],
        None => a
            .sizes
            .split(',')
            .map(|s| parse_size(s).map(|(w, h)| noise(w, h)))
            .collect::<Result<_>>()?,
    };
    let mut rows = Vec::new();
    for img in &images {
        let (w, h) = img.dimensions();
        let mut input = Feature::default();
        retinaface::input::to_tensor_into(img, detector.config().mean_bgr, &mut input);
        let time = |f: &mut dyn FnMut()| {
            for _ in 0..2 {
                f();
            }
            stats(
                (0..runs)
                    .map(|_| {
                        let t = Instant::now();
                        f();
                        t.elapsed().as_secs_f64() * 1e3
                    })
                    .collect(),
            )
        };
        let (median_ms, min_ms) = time(&mut || detector.forward_with(&input, |_| ()));
        let opts = DetectOptions::default();
        let faces = detector.detect(img, &opts)?.len();
        // Plain and mesh runs alternate, and which goes first alternates too, so both see
        // the same machine state.
        let (mut plain, mut meshed) = (Vec::new(), Vec::new());
        let timed = |f: &mut dyn FnMut()| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        };
        for k in 0..runs + 2 {
            let mut run_plain = || {
                let _ = detector.detect(img, &opts);
            };
            let mut run_mesh = || {
                if a.mesh {
                    let _ = detector.detect_meshes(img, &opts);
                }
            };
            let (p, m) = if k % 2 == 0 {
                let p = timed(&mut run_plain);
                (p, timed(&mut run_mesh))
            } else {
                let m = timed(&mut run_mesh);
                (timed(&mut run_plain), m)
            };
            if k >= 2 {
                plain.push(p);
                meshed.push(m);
            }
        }
        let (detect_median_ms, detect_min_ms) = stats(plain);
        let mesh_median_ms = a.mesh.then(|| stats(meshed).0);
        rows.push(Row {
            size: format!("{w}x{h}"),
            threads,
            median_ms,
            min_ms,
            detect_median_ms,
            detect_min_ms,
            faces,
            mesh_median_ms,
            mesh_ratio: mesh_median_ms.map(|m| m / detect_median_ms),
        });
    }
    if a.json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        println!(
            "{:>10} {:>7} {:>12} {:>10} {:>14} {:>6} {:>12} {:>10}",
            "size",
            "threads",
            "median ms",
            "min ms",
            "detect med ms",
            "faces",
            "mesh med ms",
            "mesh/plain"
        );
        for r in &rows {
            let (m, ratio) = match (r.mesh_median_ms, r.mesh_ratio) {
                (Some(m), Some(q)) => (format!("{m:.2}"), format!("{q:.3}")),
                _ => ("-".into(), "-".into()),
            };
            println!(
                "{:>10} {:>7} {:>12.2} {:>10.2} {:>14.2} {:>6} {:>12} {:>10}",
                r.size, r.threads, r.median_ms, r.min_ms, r.detect_median_ms, r.faces, m, ratio
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
