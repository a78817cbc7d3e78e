//! `retinaface align PATH... --out DIR`: one ArcFace-aligned crop per face.

use crate::files::{self, Input};
use crate::model::ModelArgs;
use crate::progress;
use anyhow::{Context, Result};
use retinaface::{align, DetectOptions, Detector};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Image files or folders (searched recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Folder for the crops (`<stem>_<k>.png`, k the face's index in detection order) and
    /// `transforms.json` (the 2×3 matrix of every crop).
    #[arg(long)]
    out: PathBuf,
    /// Crop size in pixels (the ArcFace template is scaled to it).
    #[arg(long, default_value_t = 112)]
    size: u32,
    /// Score threshold.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// At most this many faces per image (the best first).
    #[arg(long)]
    max_faces: Option<usize>,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(a: Args) -> Result<ExitCode> {
    if a.size < 16 || a.size > 4096 {
        anyhow::bail!("--size {} is outside 16..=4096", a.size);
    }
    let options = DetectOptions {
        threshold: a.threshold,
        ..Default::default()
    };
    options.validate()?;
    let detector = a.model.load_with_threads(a.model.threads())?;
    if !detector.config().has_landmarks() {
        anyhow::bail!(
            "alignment needs landmarks, and this model ({}) predicts none",
            detector.config().summary()
        );
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let (inputs, mut failures) = files::collect_reported(&a.paths, files::IMAGE_EXTENSIONS);
    let bar = progress::bar(inputs.len(), "images");
    let mut transforms = BTreeMap::new();
    for input in &inputs {
        match crops(&detector, input, &a, &options) {
            Ok(list) => transforms.extend(list),
            Err(e) => {
                bar.suspend(|| eprintln!("error: {e:#}"));
                failures.push((input.path.clone(), e.to_string()));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let path = a.out.join("transforms.json");
    std::fs::write(&path, serde_json::to_string_pretty(&transforms)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "{} crop(s) written to {}{}",
        transforms.len(),
        a.out.display(),
        files::failed_suffix(&failures)
    );
    Ok(files::exit_code(&failures))
}

/// Crops of one image: (name relative to `--out`, matrix) per face.
fn crops(
    detector: &Detector,
    input: &Input,
    a: &Args,
    options: &DetectOptions,
) -> Result<Vec<(String, align::Affine)>> {
    let img = retinaface::input::load_image(&input.path)?;
    let faces = detector.detect(&img, options)?;
    let base = input.output_path(&a.out, "png");
    let dir = base
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| a.out.clone());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut out = Vec::new();
    for (k, face) in faces
        .iter()
        .take(a.max_faces.unwrap_or(usize::MAX))
        .enumerate()
    {
        let (crop, m) = align::align_face(&img, face, a.size)
            .context("a face without landmarks cannot be aligned")?;
        let path = dir.join(format!("{}_{k}.png", input.stem()));
        crop.save(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let name = path
            .strip_prefix(&a.out)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        out.push((name, m));
    }
    Ok(out)
}
