//! `retinaface anonymize PATH... --out DIR`: faces blurred, pixelated or filled in photos and
//! videos.

use crate::files::{self, Input};
use crate::model::ModelArgs;
use crate::{output, progress, video};
use anyhow::{bail, Context, Result};
use image::RgbImage;
use retinaface::anonymize::{self, Mode, Shape};
use retinaface::{DetectOptions, Detector, Face};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ModeArg {
    Blur,
    Pixelate,
    Solid,
    None,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ShapeArg {
    Ellipse,
    Box,
}

/// Anonymisation options shared by photos and videos.
#[derive(clap::Args, Clone, Debug)]
pub struct MaskArgs {
    /// How faces are hidden.
    #[arg(long, value_enum, default_value = "blur")]
    pub mode: ModeArg,
    /// The box is enlarged by this factor around its centre.
    #[arg(long, default_value_t = 1.3)]
    pub mask_scale: f32,
    /// Mask shape inside the enlarged box.
    #[arg(long, value_enum, default_value = "ellipse")]
    pub shape: ShapeArg,
    /// Score threshold (lower than detect's: a missed face leaks, a blurred background does not).
    #[arg(long, default_value_t = 0.3)]
    pub threshold: f32,
    /// Draw boxes and scores on top, for checking.
    #[arg(long)]
    pub draw: bool,
    /// Detect on a copy resized by this factor (0 < F ≤ 1), mask at full size.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f32,
}

impl MaskArgs {
    pub fn options(&self) -> anonymize::Options {
        anonymize::Options {
            mode: match self.mode {
                ModeArg::Blur => Mode::Blur,
                ModeArg::Pixelate => Mode::Pixelate,
                ModeArg::Solid => Mode::Solid,
                ModeArg::None => Mode::None,
            },
            shape: match self.shape {
                ShapeArg::Ellipse => Shape::Ellipse,
                ShapeArg::Box => Shape::Box,
            },
            mask_scale: self.mask_scale,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.scale > 0.0 && self.scale <= 1.0) {
            bail!("--scale {} must be in (0, 1]", self.scale);
        }
        if !(self.mask_scale > 0.0 && self.mask_scale <= 10.0) {
            bail!("--mask-scale {} must be in (0, 10]", self.mask_scale);
        }
        DetectOptions {
            threshold: self.threshold,
            ..Default::default()
        }
        .validate()?;
        Ok(())
    }

    /// Faces of `img`, detected at `--scale` and mapped back to full size.
    pub fn detect(&self, detector: &Detector, img: &RgbImage) -> Result<Vec<Face>> {
        let options = DetectOptions {
            threshold: self.threshold,
            ..Default::default()
        };
        if self.scale >= 1.0 {
            return Ok(detector.detect(img, &options)?);
        }
        let (w, h) = (
            (img.width() as f32 * self.scale).round().max(1.0) as u32,
            (img.height() as f32 * self.scale).round().max(1.0) as u32,
        );
        let small = image::imageops::resize(img, w, h, image::imageops::FilterType::Triangle);
        let (sx, sy) = (
            img.width() as f32 / w as f32,
            img.height() as f32 / h as f32,
        );
        Ok(detector
            .detect(&small, &options)?
            .into_iter()
            .map(|f| Face {
                bbox: [
                    f.bbox[0] * sx,
                    f.bbox[1] * sy,
                    f.bbox[2] * sx,
                    f.bbox[3] * sy,
                ],
                score: f.score,
                landmarks: f.landmarks.map(|l| l.map(|[x, y]| [x * sx, y * sy])),
            })
            .collect())
    }

    /// Hide `boxes` in `img`, then draw `faces` if asked.
    pub fn apply(&self, img: &mut RgbImage, boxes: &[[f32; 4]], faces: &[Face]) {
        anonymize::anonymize(img, boxes, &self.options());
        if self.draw {
            *img = output::draw(img, faces);
        }
    }
}

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
