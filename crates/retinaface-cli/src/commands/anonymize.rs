//! `retinaface anonymize PATH... --out DIR`: faces blurred, pixelated or filled in photos and
//! videos.

use crate::files::{self, Input};
use crate::mask::MaskArgs;
use crate::model::ModelArgs;
use crate::{progress, video};
use anyhow::{Context, Result};
use retinaface::anonymize::file::Photo;
use retinaface::Detector;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Photos, videos (mp4 mov mkv webm avi) or folders (searched recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Output folder: named files go to `DIR/<stem>.<ext>`, files under a folder keep their
    /// relative path (same names get `-2`, `-3`…). It may not hold the inputs themselves.
    /// Outputs keep the input's format, size, bit depth, alpha and ICC profile; no other
    /// metadata is copied; JPEGs change only in the blocks the masks touch.
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
    let threads = a.model.threads()?;
    let (inputs, mut failures) = files::collect_reported(&a.paths, &files::media_extensions());
    // Every output is planned, and checked against the inputs, before anything is written.
    let names = files::output_names(&inputs, Input::extension);
    let outputs: Vec<PathBuf> = names.iter().map(|n| a.out.join(n)).collect();
    files::refuse_overwriting_inputs(&inputs, &outputs)?;
    files::prepare_output_dir(&a.out)?;
    type Jobs<'a> = Vec<(&'a Input, &'a PathBuf)>;
    let (photos, videos): (Jobs, Jobs) = inputs
        .iter()
        .zip(&outputs)
        .partition(|(i, _)| !video::is_video(&i.path));
    let mut written = 0;
    if !photos.is_empty() {
        let detector = a.model.load_with_threads(threads)?;
        let bar = progress::bar(photos.len(), "photos");
        for (input, out) in photos {
            let result = retinaface::guard::catch(|| photo(&detector, input, out, &a))
                .unwrap_or_else(|panic| {
                    Err(anyhow::anyhow!(
                        "{}: internal error: {panic}",
                        input.path.display()
                    ))
                });
            match result {
                Ok(()) => written += 1,
                Err(e) => {
                    // Each error names its file once (decoding errors carry the path).
                    let e = crate::describe(&e);
                    bar.suspend(|| eprintln!("error: {e}"));
                    failures.push((input.path.clone(), e));
                }
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    if !videos.is_empty() {
        // Videos run several frames at once, one thread each.
        let detector = a.model.load_with_threads(0)?;
        for (input, out) in videos {
            let result = retinaface::guard::catch(|| {
                video::anonymize(
                    &detector,
                    &input.path,
                    out,
                    &a.mask,
                    &a.video,
                    &a.model,
                    threads,
                )
            })
            .unwrap_or_else(|panic| Err(anyhow::anyhow!("internal error: {panic}")));
            match result {
                Ok(()) => written += 1,
                Err(e) => {
                    eprintln!("error: {}: {}", input.path.display(), crate::describe(&e));
                    failures.push((input.path.clone(), crate::describe(&e)));
                }
            }
        }
    }
    eprintln!(
        "{written} file(s) anonymised into {}{}",
        a.out.display(),
        files::failed_suffix(&failures)
    );
    Ok(files::exit_code(&failures))
}

/// One photo: decoded keeping what a faithful output needs, masked, written like its input
/// (see `retinaface::anonymize::file`) through a temporary file.
fn photo(detector: &Detector, input: &Input, out: &Path, a: &Args) -> Result<()> {
    let bytes =
        retinaface::input::read_input_file(&input.path, retinaface::input::DEFAULT_MAX_FILE_BYTES)?;
    let photo = Photo::decode(&bytes, &input.path, a.model.max_image_pixels)?;
    let mut img = photo.rgb.clone();
    let faces = a
        .mask
        .detect(detector, &img, &a.model)
        .with_context(|| input.path.display().to_string())?;
    let boxes: Vec<[f32; 4]> = faces.iter().map(|f| f.bbox).collect();
    a.mask.apply(&mut img, &boxes, &faces);
    let (encoded, _) = photo
        .encode(&bytes, &img)
        .map_err(|e| anyhow::anyhow!("{}: cannot encode the output: {e}", input.path.display()))?;
    files::write_atomic(out, &encoded)
}
