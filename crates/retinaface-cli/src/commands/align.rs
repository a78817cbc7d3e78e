//! `retinaface align PATH... --out DIR`: one ArcFace-aligned crop per face.

use crate::files::{self, Input};
use crate::model::ModelArgs;
use crate::progress;
use anyhow::{Context, Result};
use retinaface::{align, DetectOptions, Detector};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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
    let options = a.model.limit(DetectOptions {
        threshold: a.threshold,
        ..Default::default()
    });
    options.validate()?;
    let detector = a.model.load_with_threads(a.model.threads()?)?;
    if !detector.config().has_landmarks() {
        anyhow::bail!(
            "alignment needs landmarks, and this model ({}) predicts none",
            detector.config().summary()
        );
    }
    let (inputs, mut failures) = files::collect_reported(&a.paths, files::IMAGE_EXTENSIONS);
    // Each photo's crops are `<name>_<k>.png` with a distinct `<name>` per photo; the crops
    // and transforms.json must not be inputs.
    let names = files::output_names(&inputs, |_| "png".into());
    let bases: Vec<PathBuf> = names.iter().map(|n| a.out.join(n)).collect();
    let transforms_path = a.out.join("transforms.json");
    files::refuse_overwriting_inputs(&inputs, std::slice::from_ref(&transforms_path))?;
    files::prepare_output_dir(&a.out)?;
    let bar = progress::bar(inputs.len(), "images");
    let mut transforms = BTreeMap::new();
    for (input, base) in inputs.iter().zip(&bases) {
        let result =
            retinaface::guard::catch(|| crops(&detector, input, base, &inputs, &a, &options))
                .unwrap_or_else(|panic| {
                    Err(anyhow::anyhow!(
                        "{}: internal error: {panic}",
                        input.path.display()
                    ))
                });
        match result {
            Ok(list) => transforms.extend(list),
            Err(e) => {
                bar.suspend(|| eprintln!("error: {}", crate::describe(&e)));
                failures.push((input.path.clone(), crate::describe(&e)));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let json = serde_json::to_string_pretty(&transforms)? + "\n";
    files::write_atomic(&transforms_path, json.as_bytes())?;
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
    base: &Path,
    inputs: &[Input],
    a: &Args,
    options: &DetectOptions,
) -> Result<Vec<(String, align::Affine)>> {
    let img = a.model.load_image(&input.path)?;
    let faces = detector
        .detect(&img, options)
        .with_context(|| input.path.display().to_string())?;
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (k, face) in faces
        .iter()
        .take(a.max_faces.unwrap_or(usize::MAX))
        .enumerate()
    {
        let (crop, m) = align::align_face(&img, face, a.size)
            .context("a face without landmarks cannot be aligned")?;
        let path = base.with_file_name(format!("{stem}_{k}.png"));
        files::refuse_overwriting_inputs(inputs, std::slice::from_ref(&path))?;
        crate::output::save_image(&image::DynamicImage::ImageRgb8(crop).into_rgb8(), &path)?;
        let name = path
            .strip_prefix(&a.out)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        out.push((name, m));
    }
    Ok(out)
}
