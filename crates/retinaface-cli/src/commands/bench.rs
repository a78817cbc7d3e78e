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

pub fn run(a: Args) -> Result<ExitCode> {
    let threads = a.model.threads()?;
    let detector = a.model.load_with_threads(threads)?;
    let runs = a.runs.max(1);
    let mut rows = Vec::new();
    for size in a.sizes.split(',') {
        let (w, h) = parse_size(size)?;
        // A fixed pseudo-random image: the same for every run and every build.
        let mut state = 0x2545_f491_u32;
        let img = image::RgbImage::from_fn(w as u32, h as u32, |_, _| {
            let mut px = [0u8; 3];
            for p in &mut px {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                *p = (state >> 24) as u8;
            }
            image::Rgb(px)
        });
        let mut input = Feature::default();
        retinaface::input::to_tensor_into(&img, detector.config().mean_bgr, &mut input);
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
        let (detect_median_ms, detect_min_ms) = time(&mut || {
            let _ = detector.detect(&img, &opts);
        });
        rows.push(Row {
            size: format!("{w}x{h}"),
            threads,
            median_ms,
            min_ms,
            detect_median_ms,
            detect_min_ms,
        });
    }
    if a.json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        println!(
            "{:>10} {:>7} {:>12} {:>10} {:>14}",
            "size", "threads", "median ms", "min ms", "detect med ms"
        );
        for r in &rows {
            println!(
                "{:>10} {:>7} {:>12.2} {:>10.2} {:>14.2}",
                r.size, r.threads, r.median_ms, r.min_ms, r.detect_median_ms
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
