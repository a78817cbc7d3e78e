//! `retinaface eval widerface|landmarks`: WIDER FACE AP (of prediction files, or of our
//! detector run first) and landmark NME / failure rate / CED.
//!
//! Results go to standard output (a table, or exactly one line of JSON with `--json`);
//! progress and logs to standard error.

use crate::commands::detect::{detect_image, detect_meshes, DetectArgs};
use crate::files;
use crate::model::ModelArgs;
use crate::output;
use crate::progress;
use anyhow::{bail, Context, Result};
use retinaface::tta::Protocol;
use retinaface::{DetectOptions, Detector};
use retinaface_eval::widerface::{
    evaluate, evaluate_range, EvalOptions, GroundTruth, ImageFilter, IouThresholds, Predictions,
};
use retinaface_eval::{evaluate_landmarks, LabelFile, LandmarkDetection, LandmarkEvalOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Score threshold of the detections an evaluation runs on (CONVENTIONS: 0.02).
pub const EVAL_THRESHOLD: f32 = 0.02;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: EvalCommand,
}

#[derive(clap::Subcommand)]
enum EvalCommand {
    /// WIDER FACE validation AP (easy / medium / hard) of prediction files (`--pred`), or of
    /// our detector run on `--images` first; the official protocol of wider_eval.py.
    Widerface(WiderArgs),
    /// Landmark NME (÷ √(w·h) of the box), failure rate (NME > 10 % or no match) and CED of
    /// our detector against a RetinaFace label.txt.
    Landmarks(LandmarkArgs),
}

#[derive(clap::Args)]
struct WiderArgs {
    /// Prediction folder (`<event>/<image>.txt`) to evaluate. Without it, the detector runs on
    /// `--images` and its files are evaluated.
    #[arg(long, value_name = "DIR")]
    pred: Option<PathBuf>,
    /// Ground truth: the folder of wider_face_val.mat and wider_{easy,medium,hard}_val.mat.
    #[arg(long, value_name = "DIR")]
    gt: PathBuf,
    /// Images (searched recursively). With `--pred`: evaluate only the images named here
    /// (wider_eval.py --images). Without: run the detector on them, then evaluate them.
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// Keep the detector's prediction files here (default: a temporary folder, removed).
    #[arg(long, value_name = "DIR", conflicts_with = "pred")]
    pred_out: Option<PathBuf>,
    /// IoU at which a detection matches a face: one threshold T, or a range A:B[:STEP] (step
    /// 0.05) whose APs are averaged: `0.5:0.95` is the WIDER Face Challenge mAP.
    #[arg(long, default_value = "0.5", value_name = "T|A:B[:S]", value_parser = parse_iou)]
    iou: IouThresholds,
    /// Print exactly one line of JSON: {"easy": {"ap", "faces", "images"}, "medium", "hard"};
    /// with an IoU range each setting also has "per_iou" (threshold → AP), and "ap" is their
    /// mean.
    #[arg(long)]
    json: bool,
    /// Draw the three PR curves to this file (.png or .svg).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    #[command(flatten)]
    detect: DetectArgs,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(clap::Args)]
struct LandmarkArgs {
    /// RetinaFace label file (`# event/name.jpg`, then one face per line with 5 points).
    #[arg(long, value_name = "FILE")]
    labels: PathBuf,
    /// The folder the label file's image paths are relative to.
    #[arg(long, value_name = "DIR")]
    images: PathBuf,
    /// Draw the cumulative error distribution to this file (.png or .svg).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// The CED's x range: NME from 0 to this.
    #[arg(long, default_value_t = 0.1)]
    max_nme: f64,
    /// Print exactly one line of JSON with the figures.
    #[arg(long)]
    json: bool,
    /// Score the five landmark vertices of each face's mesh (the dense regression branch:
    /// eye centres, nose tip, mouth corners) instead of the landmark head's points.
    #[arg(long)]
    mesh: bool,
    #[command(flatten)]
    detect: DetectArgs,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(a: Args) -> Result<ExitCode> {
    match a.command {
        EvalCommand::Widerface(w) => widerface(w),
        EvalCommand::Landmarks(l) => landmarks(l),
    }
}

/// What the detector loop measured.
struct Timing {
    images: usize,
    seconds: f64,
}

impl Timing {
    fn log(&self, protocol: &Protocol, threads: usize) {
        eprintln!(
            "detected {} image(s) in {:.1} s: {:.3} s per image ({} pass(es) of sizes {}{}{}, {} thread(s))",
            self.images,
            self.seconds,
            self.seconds / self.images.max(1) as f64,
            protocol.sizes.len() * if protocol.flip { 2 } else { 1 },
            protocol
                .sizes
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(","),
            if protocol.flip { ", flipped" } else { "" },
            match protocol.merge {
                retinaface::tta::Merge::Vote(t) => format!(", voting at {t}"),
                retinaface::tta::Merge::Nms => String::new(),
            },
            threads,
        );
    }
}

fn widerface(a: WiderArgs) -> Result<ExitCode> {
    if a.iou.is_range() && a.plot.is_some() {
        bail!("--plot draws the curves of one IoU threshold: give --iou T, not a range");
    }
    // Outputs are checked before the (long) detection and evaluation.
    if let Some(plot) = &a.plot {
        files::check_output_file("--plot", plot, &["png", "svg"], false, &[])?;
    }
    if let Some(dir) = &a.pred_out {
        files::prepare_output_dir(dir)?;
    }
    let gt = GroundTruth::load(&a.gt)
        .with_context(|| format!("cannot load the ground truth {}", a.gt.display()))?;
    let mut _temp = None;
    let pred_dir = match (&a.pred, &a.images) {
        (Some(p), _) => {
            if a.detect.uses_protocol() || a.model.model.is_some() || a.detect.threshold.is_some() {
                bail!(
                    "detection options (--model, --threshold, --tta, --scales, --flip, --vote, \
                     --resize, --max-pixels) need --images without --pred: --pred evaluates \
                     existing files"
                );
            }
            p.clone()
        }
        (None, Some(images)) => {
            let dir = match &a.pred_out {
                Some(d) => d.clone(),
                None => {
                    let t = tempfile::Builder::new()
                        .prefix("retinaface-wider-")
                        .tempdir()
                        .context("cannot create a temporary folder for the predictions")?;
                    let p = t.path().to_path_buf();
                    _temp = Some(t);
                    p
                }
            };
            let threshold = a.detect.threshold.unwrap_or(EVAL_THRESHOLD);
            // Evaluation protocols detect at the original scale.
            let options = DetectOptions {
                max_side: None,
                ..a.model.limit(a.detect.options(threshold))
            };
            options.validate()?;
            let protocol = a.detect.protocol()?;
            let threads = a.model.threads()?;
            let detector = a.model.load_with_threads(threads)?;
            let timing = detect_to_wider(&detector, images, &dir, &options, &protocol)?;
            timing.log(&protocol, threads);
            if a.pred_out.is_some() {
                eprintln!("prediction files in {}", dir.display());
            }
            dir
        }
        (None, None) => bail!(
            "give --pred DIR (prediction files to evaluate) or --images DIR (run the detector \
             on these images, then evaluate)"
        ),
    };
    let preds = Predictions::load(&pred_dir)
        .with_context(|| format!("cannot load the predictions in {}", pred_dir.display()))?;
    let filter = match &a.images {
        Some(d) => Some(
            ImageFilter::from_dir(d)
                .with_context(|| format!("cannot list the images in {}", d.display()))?,
        ),
        None => None,
    };
    let opts = EvalOptions {
        iou_threshold: a.iou.values()[0],
        images: filter,
    };
    if a.images.is_none() {
        // Without --images every ground-truth image counts; a missing file is a missed image.
        let total = gt.image_count();
        let found: usize = gt
            .events
            .iter()
            .map(|e| {
                e.images
                    .iter()
                    .filter(|i| preds.get(&e.name, &i.name).is_some())
                    .count()
            })
            .sum();
        if total > 0 && found * 2 < total {
            eprintln!(
                "warning: only {found} of the {total} ground-truth images have a prediction file; \
                 the others count as images where nothing was found. Give --images DIR to \
                 evaluate on a subset"
            );
        }
    }
    if a.iou.is_range() {
        let report = evaluate_range(&gt, &preds, &opts, &a.iou)?;
        if a.json {
            println!("{}", report.to_json());
        } else {
            print!("{}", report.to_text(&a.iou));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = evaluate(&gt, &preds, &opts)?;
    if !report.unknown_images.is_empty() {
        eprintln!(
            "warning: {} prediction file(s) match no ground-truth image (e.g. {}); their scores \
             still take part in the score normalisation, as in wider_eval.py",
            report.unknown_images.len(),
            report.unknown_images[0]
        );
    }
    if let Some(plot) = &a.plot {
        let name = a
            .pred
            .as_deref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "retinaface".into());
        retinaface_eval::plot::plot_pr_curves(&report, &format!("WIDER FACE val — {name}"), plot)
            .with_context(|| format!("cannot draw {}", plot.display()))?;
        eprintln!("PR curves in {}", plot.display());
    }
    if a.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(ExitCode::SUCCESS)
}

/// Run the detector on every image under `images` and write `dir/<event>/<stem>.txt`.
fn detect_to_wider(
    detector: &Detector,
    images: &Path,
    dir: &Path,
    options: &DetectOptions,
    protocol: &Protocol,
) -> Result<Timing> {
    if !images.is_dir() {
        bail!("{}: not a folder of images", images.display());
    }
    let (inputs, failures) = files::collect(&[images.to_path_buf()], files::IMAGE_EXTENSIONS);
    if let Some((p, e)) = failures.first() {
        bail!("{}: {e}", p.display());
    }
    if inputs.is_empty() {
        bail!("no images (jpg, jpeg, png, ...) under {}", images.display());
    }
    let bar = progress::bar(inputs.len(), "images");
    let start = Instant::now();
    for input in &inputs {
        let img = retinaface::input::load_image_limited(&input.path, options.max_image_pixels)?;
        let faces = detect_image(detector, &img, options, protocol)
            .with_context(|| format!("{}", input.path.display()))?;
        let path = dir
            .join(input.event())
            .join(format!("{}.txt", input.stem()));
        output::write_wider(&path, &input.stem(), &faces)?;
        bar.inc(1);
    }
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok(Timing {
        images: inputs.len(),
        seconds,
    })
}

fn landmarks(a: LandmarkArgs) -> Result<ExitCode> {
    if !(a.max_nme.is_finite() && a.max_nme > 0.0) {
        bail!("--max-nme {} must be positive", a.max_nme);
    }
    if let Some(plot) = &a.plot {
        files::check_output_file("--plot", plot, &["png", "svg"], false, &[])?;
    }
    let labels = LabelFile::load(&a.labels)?;
    if labels.images.is_empty() {
        bail!(
            "{}: no images (lines '# event/name.jpg')",
            a.labels.display()
        );
    }
    if !a.images.is_dir() {
        bail!("{}: not a folder", a.images.display());
    }
    let threshold = a.detect.threshold.unwrap_or(EVAL_THRESHOLD);
    // Evaluation protocols detect at the original scale.
    let options = DetectOptions {
        max_side: None,
        ..a.model.limit(a.detect.options(threshold))
    };
    options.validate()?;
    let protocol = a.detect.protocol()?;
    let threads = a.model.threads()?;
    let detector = a.model.load_with_threads(threads)?;
    if a.mesh && !detector.has_mesh() {
        bail!("--mesh needs a model with the mesh branch (the embedded model has one)");
    }
    if a.mesh && (protocol.flip || protocol.sizes.len() > 1) {
        bail!("--mesh runs on one pass: it does not combine with --tta, --scales or --flip");
    }
    if !a.mesh && !detector.config().has_landmarks() {
        bail!(
            "this model ({}) predicts no landmarks",
            detector.config().summary()
        );
    }
    let bar = progress::bar(labels.images.len(), "images");
    let start = Instant::now();
    let mut detections: HashMap<String, Vec<LandmarkDetection>> = HashMap::new();
    for image in &labels.images {
        let path = a.images.join(&image.path);
        let img = a.model.load_image(&path).with_context(|| {
            format!(
                "image '{}' of {} (looked for in {})",
                image.path,
                a.labels.display(),
                a.images.display()
            )
        })?;
        let found: Vec<LandmarkDetection> = if a.mesh {
            detect_meshes(&detector, &img, &options, &protocol)
                .with_context(|| format!("{}", path.display()))?
                .into_iter()
                .map(|(f, m)| LandmarkDetection {
                    bbox: f.bbox,
                    score: f.score,
                    landmarks: m.landmarks(),
                })
                .collect()
        } else {
            detect_image(&detector, &img, &options, &protocol)
                .with_context(|| format!("{}", path.display()))?
                .into_iter()
                .filter_map(|f| {
                    Some(LandmarkDetection {
                        bbox: f.bbox,
                        score: f.score,
                        landmarks: f.landmarks?,
                    })
                })
                .collect()
        };
        detections.insert(image.path.clone(), found);
        bar.inc(1);
    }
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Timing {
        images: labels.images.len(),
        seconds,
    }
    .log(&protocol, threads);
    let report = evaluate_landmarks(&labels, &detections, &LandmarkEvalOptions::default())?;
    if let Some(plot) = &a.plot {
        let name = a
            .model
            .path()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "MobileNet-0.25 (embedded)".into());
        retinaface_eval::plot::plot_ced(
            &[(name.as_str(), &report)],
            a.max_nme,
            &format!(
                "Landmarks — {}",
                a.labels
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            plot,
        )
        .with_context(|| format!("cannot draw {}", plot.display()))?;
        eprintln!("CED in {}", plot.display());
    }
    if a.json {
        println!("{}", report.summary_json());
    } else {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_iou(text: &str) -> Result<IouThresholds, String> {
    IouThresholds::parse(text).map_err(|e| e.to_string())
}
