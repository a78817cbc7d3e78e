//! `retinaface anonymize PATH... --out DIR`: faces blurred, pixelated or filled in photos and
//! videos.

use crate::files::{self, Input};
use crate::mask::MaskArgs;
use crate::model::ModelArgs;
use crate::{progress, video};
use anyhow::{Context, Result};
use image::RgbImage;
use retinaface::Detector;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Photos, videos (mp4 mov mkv webm avi) or folders (searched recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Output folder: named files go to `DIR/<stem>.<ext>`, files under a folder keep their
    /// relative path. Outputs keep the input's format and size; no metadata is copied.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    mask: MaskArgs,
    #[command(flatten)]
    video: video::VideoArgs,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(a: Args) -> Result<ExitCode> {
    a.mask.validate()?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let (inputs, mut failures) = files::collect_reported(&a.paths, &files::media_extensions());
    let threads = a.model.threads();
    let (photos, videos): (Vec<&Input>, Vec<&Input>) =
        inputs.iter().partition(|i| !video::is_video(&i.path));
    if !photos.is_empty() {
        let detector = a.model.load_with_threads(threads)?;
        let bar = progress::bar(photos.len(), "photos");
        for input in photos {
            if let Err(e) = photo(&detector, input, &a) {
                bar.suspend(|| eprintln!("error: {e:#}"));
                failures.push((input.path.clone(), e.to_string()));
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    if !videos.is_empty() {
        // Videos run several frames at once, one thread each.
        let detector = a.model.load_with_threads(0)?;
        for input in videos {
            let ext = input
                .path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("mp4")
                .to_ascii_lowercase();
            let out = input.output_path(&a.out, &ext);
            if let Err(e) =
                video::anonymize(&detector, &input.path, &out, &a.mask, &a.video, threads)
            {
                eprintln!("error: {}: {e:#}", input.path.display());
                failures.push((input.path.clone(), e.to_string()));
            }
        }
    }
    eprintln!(
        "{} file(s) anonymised into {}{}",
        inputs.len() - failures.len().min(inputs.len()),
        a.out.display(),
        files::failed_suffix(&failures)
    );
    Ok(files::exit_code(&failures))
}

fn photo(detector: &Detector, input: &Input, a: &Args) -> Result<()> {
    let mut img = retinaface::input::load_image(&input.path)?;
    let faces = a.mask.detect(detector, &img)?;
    let boxes: Vec<[f32; 4]> = faces.iter().map(|f| f.bbox).collect();
    a.mask.apply(&mut img, &boxes, &faces);
    let ext = input
        .path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("png")
        .to_ascii_lowercase();
    save(&img, &input.output_path(&a.out, &ext))
}

/// Save in the format of the extension (JPEG at quality 95), with no metadata.
pub fn save(img: &RgbImage, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let result = if ext == "jpg" || ext == "jpeg" {
        std::fs::File::create(path)
            .map_err(image::ImageError::IoError)
            .and_then(|f| {
                let mut w = std::io::BufWriter::new(f);
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut w, 95).encode_image(img)
            })
    } else {
        img.save(path)
    };
    result.with_context(|| format!("cannot write {}", path.display()))
}
