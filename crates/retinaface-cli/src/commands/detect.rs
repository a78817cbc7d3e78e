//! `retinaface detect PATH...`: faces of every photo as JSON, WIDER files or drawings.

use crate::budget;
use crate::files::{self, Input};
use crate::model::ModelArgs;
use crate::output::{self, FaceOut, Record};
use crate::progress;
use crate::video;
use anyhow::{Context, Result};
use image::RgbImage;
use retinaface::input::resize::Resize;
use retinaface::mesh::FaceMesh;
use retinaface::tta::{self, Merge, Protocol};
use retinaface::{DetectOptions, Detector, Face};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Detection options shared by the commands that detect.
#[derive(clap::Args, Debug, Clone)]
pub struct DetectArgs {
    /// Score threshold (default 0.5; WIDER files keep everything above 0.02 unless given).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// NMS IoU threshold.
    #[arg(long, default_value_t = 0.4)]
    pub nms: f32,
    /// Candidates kept before NMS.
    #[arg(long, default_value_t = 5000)]
    pub top_k: usize,
    /// Faces kept after NMS.
    #[arg(long, default_value_t = 750)]
    pub keep: usize,
    /// Single-pass image size: `original` (default), `short:N` or `long:N` (Pillow-exact
    /// bilinear resize; coordinates are mapped back to the original image).
    #[arg(long, value_name = "MODE", conflicts_with_all = ["scales", "tta"])]
    pub resize: Option<Resize>,
    /// Image pyramid: short sides in pixels, e.g. 500,800,1100,1400,1700 (`--tta`'s).
    #[arg(long, value_name = "S,S,...", value_delimiter = ',')]
    pub scales: Option<Vec<u32>>,
    /// Also run every pass on the mirrored image (boxes and landmarks mirrored back).
    #[arg(long)]
    pub flip: bool,
    /// Merge the passes by box voting at IoU 0.4 (otherwise NMS over their union).
    #[arg(long)]
    pub vote: bool,
    /// Skip pyramid scales whose pixel count W·H·k² exceeds this (default 4.5e6); the
    /// smallest scale runs even when over it.
    #[arg(long, value_name = "PIXELS")]
    pub max_pixels: Option<f64>,
    /// The paper's test-time protocol: `--scales 500,800,1100,1400,1700 --flip --vote
    /// --max-pixels 4.5e6` (each may still be given to change it).
    #[arg(long)]
    pub tta: bool,
    /// Also detect in the photo turned by 90°, 180° and 270° and merge (faces of people
    /// lying down, upside-down frames): four passes.
    #[arg(long, conflicts_with_all = ["scales", "tta", "resize", "flip", "vote"])]
    pub rotations: bool,
}

impl DetectArgs {
    /// Options with `threshold`, the rest from the flags.
    pub fn options(&self, threshold: f32) -> DetectOptions {
        DetectOptions {
            threshold,
            nms: self.nms,
            top_k: self.top_k,
            keep: self.keep,
            ..DetectOptions::default()
        }
    }

    /// The test-time protocol of the flags (one plain pass without any).
    pub fn protocol(&self) -> Result<Protocol> {
        let scales = match (&self.scales, self.tta) {
            (Some(s), _) => Some(s.clone()),
            (None, true) => Some(tta::PAPER_SCALES.to_vec()),
            (None, false) => None,
        };
        let protocol = match scales {
            Some(s) => {
                if s.is_empty() || s.contains(&0) {
                    anyhow::bail!("--scales wants positive short sides, e.g. 500,800,1100");
                }
                Protocol {
                    sizes: s.into_iter().map(Resize::Short).collect(),
                    flip: self.flip || self.tta,
                    merge: if self.vote || self.tta {
                        Merge::Vote(tta::VOTE_IOU)
                    } else {
                        Merge::Nms
                    },
                    max_pixels: Some(self.max_pixels.unwrap_or(tta::PAPER_MAX_PIXELS)),
                }
            }
            None => Protocol {
                sizes: vec![self.resize.unwrap_or(Resize::Original)],
                flip: self.flip,
                merge: if self.vote {
                    Merge::Vote(tta::VOTE_IOU)
                } else {
                    Merge::Nms
                },
                max_pixels: self.max_pixels,
            },
        };
        protocol.validate()?;
        Ok(protocol)
    }

    /// Whether any flag asks for more than one plain pass at the original size.
    pub fn uses_protocol(&self) -> bool {
        self.tta
            || self.flip
            || self.vote
            || self.scales.is_some()
            || self.resize.is_some()
            || self.max_pixels.is_some()
    }
}

/// Detect with the protocol of the flags.
pub fn detect_image(
    detector: &Detector,
    img: &RgbImage,
    options: &DetectOptions,
    protocol: &Protocol,
) -> Result<Vec<Face>> {
    Ok(tta::detect(detector, img, options, protocol)?)
}

/// Detect with the flags: the protocol, or the four turns with `--rotations`.
fn detect_with(
    detector: &Detector,
    img: &RgbImage,
    options: &DetectOptions,
    protocol: &Protocol,
    rotations: bool,
) -> Result<Vec<Face>> {
    if rotations {
        return Ok(tta::detect_rotations(detector, img, 1.0, options)?);
    }
    detect_image(detector, img, options, protocol)
}

/// Faces with their meshes, in one pass of the protocol's size (the callers refuse
/// protocols of several passes).
pub fn detect_meshes(
    detector: &Detector,
    img: &RgbImage,
    options: &DetectOptions,
    protocol: &Protocol,
) -> Result<Vec<(Face, FaceMesh)>> {
    let (w, h) = img.dimensions();
    let passes = protocol.plan(w, h);
    let (pw, ph) = match passes.as_slice() {
        [] => return Ok(Vec::new()),
        [p] => (p.width, p.height),
        _ => anyhow::bail!("--mesh runs on one pass"),
    };
    Ok(detector.detect_meshes_resized(img, (pw, ph), options)?)
}

#[derive(clap::Args)]
pub struct Args {
    /// Image files or folders (searched recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Write a JSON array of records here (`-` for standard output).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write one CSV row per face here (`-` for standard output): image, face index, score,
    /// box corners and the five landmarks.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write the photos with boxes and landmarks drawn into this folder.
    #[arg(long)]
    draw: Option<PathBuf>,
    /// Write WIDER FACE prediction files (`<event>/<stem>.txt`) into this folder.
    #[arg(long)]
    wider: Option<PathBuf>,
    /// Videos (mp4 mov mkv webm avi): write one JSON line per frame here (`-` for standard
    /// output), `{"frame", "time_s", "faces"}`. Without it, `--json FILE` puts each video's
    /// lines beside FILE as `<video stem>.jsonl`.
    #[arg(long)]
    jsonl: Option<PathBuf>,
    /// Each face's 3D mesh from the dense regression branch: 468 vertices in the JSON
    /// (`"mesh": {"vertices": [[x, y, depth], ...]}`, image pixels, depth behind the face's
    /// centre), its wireframe in `--draw`'s pictures. Needs a model with the branch (the
    /// embedded one has it); one plain pass (with --resize at most).
    #[arg(long)]
    mesh: bool,
    /// With the mesh, each vertex's colour in the JSON (`"mesh_colors"`, RGB in [0, 1]).
    #[arg(long)]
    mesh_colors: bool,
    /// Write each face's mesh as a Wavefront OBJ with vertex colours into this folder:
    /// `<photo>-face<k>.obj` (k from 0, in the JSON's order).
    #[arg(long, value_name = "DIR")]
    mesh_obj: Option<PathBuf>,
    #[command(flatten)]
    detect: DetectArgs,
    #[command(flatten)]
    model: ModelArgs,
}

/// Where each photo's outputs go, planned before any work.
struct Plan {
    /// `--draw` file per photo.
    draw: Vec<Option<PathBuf>>,
    /// `--wider` file per photo, or why the photo has none (another photo's file).
    wider: Vec<Option<Result<PathBuf, String>>>,
    /// `--mesh-obj` name per photo, without extension (`-face<k>.obj` is added per face).
    mesh_obj: Vec<Option<PathBuf>>,
}

impl Args {
    /// Whether any flag asks for the meshes.
    fn wants_mesh(&self) -> bool {
        self.mesh || self.mesh_colors || self.mesh_obj.is_some()
    }
}

pub fn run(a: Args) -> Result<ExitCode> {
    let shown_threshold = a.detect.threshold.unwrap_or(0.5);
    let run_threshold = a
        .detect
        .threshold
        .unwrap_or(if a.wider.is_some() { 0.02 } else { 0.5 });
    let mut options = a.model.limit(a.detect.options(run_threshold));
    if a.wider.is_some() {
        // The WIDER FACE protocol detects at the original scale.
        options.max_side = None;
    }
    options.validate()?;
    let protocol = a.detect.protocol()?;
    refuse_impossible_passes(&protocol, options.max_image_pixels)?;
    if a.wants_mesh() && (protocol.flip || protocol.sizes.len() > 1 || a.detect.rotations) {
        anyhow::bail!(
            "--mesh runs on one pass: it does not combine with --tta, --scales, --flip or --rotations"
        );
    }
    let threads = a.model.threads()?;
    let (inputs, mut failures) = files::collect_reported(&a.paths, &files::media_extensions());
    let (videos, inputs): (Vec<Input>, Vec<Input>) =
        inputs.into_iter().partition(|i| video::is_video(&i.path));
    check_video_flags(&a, &videos)?;
    let all: Vec<Input> = inputs.iter().chain(&videos).cloned().collect();
    for (flag, target) in [
        ("--json", &a.json),
        ("--csv", &a.csv),
        ("--jsonl", &a.jsonl),
    ] {
        if let Some(t) = target {
            let exts: &[&str] = match flag {
                "--csv" => &["csv"],
                "--jsonl" => &["jsonl", "json"],
                _ => &["json"],
            };
            files::check_output_file(flag, t, exts, true, &all)?;
        }
    }
    if [&a.json, &a.csv, &a.jsonl]
        .iter()
        .filter(|t| t.as_deref() == Some(std::path::Path::new("-")))
        .count()
        > 1
    {
        anyhow::bail!("only one of --json, --csv and --jsonl can write to standard output");
    }
    let plan = plan_outputs(&a, &inputs)?;
    let video_targets = plan_video_targets(&a, &videos, &all)?;
    // Throughput: several images run at once, one thread each, which beat threads within
    // one image on the 145 validation images (see README); a single image gets all threads.
    let parallel = inputs.len() > 1 && threads > 1;
    let detector = a
        .model
        .load_with_threads(if parallel { 0 } else { threads })?;
    if a.wants_mesh() && !detector.has_mesh() {
        anyhow::bail!(
            "--mesh needs a model with the mesh branch; this one has none (the embedded model has one)"
        );
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let bar = progress::bar(inputs.len(), "images");
    let job = |k: usize| {
        let input = &inputs[k];
        let r = retinaface::guard::catch(|| {
            process(
                &detector,
                input,
                &a,
                &options,
                &protocol,
                shown_threshold,
                &plan,
                k,
            )
        })
        .unwrap_or_else(|panic| {
            Err(anyhow::anyhow!(
                "{}: internal error: {panic}",
                input.path.display()
            ))
        });
        bar.inc(1);
        r
    };
    let results: Vec<Result<Record>> = if parallel {
        use rayon::prelude::*;
        let costs: Vec<u64> = inputs
            .iter()
            .map(|i| budget::photo_cost(&i.path, options.max_side))
            .collect();
        let mut results = Vec::with_capacity(inputs.len());
        for wave in budget::waves(&costs, budget::IN_FLIGHT_BYTES) {
            results.extend(pool.install(|| wave.into_par_iter().map(job).collect::<Vec<_>>()));
        }
        results
    } else {
        (0..inputs.len()).map(job).collect()
    };
    let mut records = Vec::with_capacity(inputs.len());
    let mut faces_total = 0;
    for (input, result) in inputs.iter().zip(results) {
        match result {
            Ok(r) => {
                faces_total += r.faces.len();
                records.push(r);
            }
            Err(e) => {
                bar.suspend(|| eprintln!("error: {}", crate::describe(&e)));
                failures.push((input.path.clone(), crate::describe(&e)));
            }
        }
    }
    bar.finish_and_clear();
    if let Some(target) = &a.json {
        output::write_json(target, &records)?;
    }
    if let Some(target) = &a.csv {
        output::write_csv(target, &records)?;
    }
    if a.json.is_none() && a.csv.is_none() && a.draw.is_none() && a.wider.is_none() {
        output::print_summary(&records)?;
    }
    if !videos.is_empty() {
        let video_detector = a.model.load_with_threads(0)?;
        for (input, target) in videos.iter().zip(&video_targets) {
            let result = retinaface::guard::catch(|| {
                detect_video(
                    &video_detector,
                    input,
                    target,
                    &a,
                    &options,
                    shown_threshold,
                )
            })
            .unwrap_or_else(|panic| Err(anyhow::anyhow!("internal error: {panic}")));
            if let Err(e) = result {
                eprintln!("error: {}: {}", input.path.display(), crate::describe(&e));
                failures.push((input.path.clone(), crate::describe(&e)));
            }
        }
    }
    eprintln!(
        "{} image(s){}, {} face(s) above {shown_threshold} in the images{}",
        records.len(),
        if videos.is_empty() {
            String::new()
        } else {
            format!(" and {} video(s)", videos.len())
        },
        faces_total,
        files::failed_suffix(&failures)
    );
    Ok(files::exit_code(&failures))
}

/// A resize whose every pass is above the pixel limit whatever the photo (`short:100000`
/// makes at least 10¹⁰ pixels) is refused before any work.
fn refuse_impossible_passes(protocol: &Protocol, max_pixels: u64) -> Result<()> {
    for size in &protocol.sizes {
        let least = match *size {
            Resize::Original => continue,
            Resize::Short(s) => u64::from(s) * u64::from(s),
            Resize::Long(s) => u64::from(s),
        };
        if least > max_pixels {
            anyhow::bail!(
                "{size} makes passes of at least {least} pixels, above --max-image-pixels {max_pixels}"
            );
        }
    }
    Ok(())
}

/// Videos are detected frame by frame in one plain pass, and write JSON lines only: the
/// flags that would be ignored for them are refused when videos are among the inputs.
fn check_video_flags(a: &Args, videos: &[Input]) -> Result<()> {
    let Some(first) = videos.first() else {
        return Ok(());
    };
    let d = &a.detect;
    let flags = [
        ("--tta", d.tta),
        ("--rotations", d.rotations),
        ("--scales", d.scales.is_some()),
        ("--resize", d.resize.is_some()),
        ("--flip", d.flip),
        ("--vote", d.vote),
        ("--max-pixels", d.max_pixels.is_some()),
        ("--draw", a.draw.is_some()),
        ("--wider", a.wider.is_some()),
        ("--csv", a.csv.is_some()),
        ("--mesh", a.wants_mesh()),
    ];
    if let Some((flag, _)) = flags.iter().find(|(_, on)| *on) {
        anyhow::bail!(
            "{flag} applies to photos only, and {} is a video: give videos in a separate run",
            first.path.display()
        );
    }
    if a.jsonl.is_none() && a.json.as_deref() == Some(std::path::Path::new("-")) {
        anyhow::bail!(
            "--json - writes the photos' JSON array; give --jsonl FILE (or -) for the frames of {}",
            first.path.display()
        );
    }
    Ok(())
}

/// Where each video's JSON lines go: `--jsonl` (one file for all, `-` for standard output),
/// else beside `--json FILE` as `<video stem>.jsonl` (same stems get `-2`, `-3`, …), else
/// standard output. Files are checked, and started empty, before any work.
fn plan_video_targets(a: &Args, videos: &[Input], all: &[Input]) -> Result<Vec<PathBuf>> {
    let targets: Vec<PathBuf> = match (&a.jsonl, &a.json) {
        (Some(t), _) => vec![t.clone(); videos.len()],
        (None, Some(j)) if j.as_os_str() != "-" && !videos.is_empty() => {
            let flat: Vec<Input> = videos
                .iter()
                .map(|v| Input {
                    in_folder: false,
                    ..v.clone()
                })
                .collect();
            files::output_names(&flat, |_| "jsonl".into())
                .into_iter()
                .map(|n| j.with_file_name(n))
                .collect()
        }
        _ => vec![PathBuf::from("-"); videos.len()],
    };
    let files_only: Vec<PathBuf> = targets
        .iter()
        .filter(|t| t.as_os_str() != "-")
        .cloned()
        .collect();
    files::refuse_overwriting_inputs(all, &files_only)?;
    for (input, t) in videos.iter().zip(&targets) {
        if t.as_os_str() != "-" && a.jsonl.is_none() {
            eprintln!(
                "{}: video records go to {} (JSON lines)",
                input.path.display(),
                t.display()
            );
        }
    }
    let mut started = std::collections::HashSet::new();
    for t in &files_only {
        if started.insert(t.clone()) {
            std::fs::write(t, b"").with_context(|| format!("cannot write {}", t.display()))?;
        }
    }
    Ok(targets)
}

/// Output paths of every photo: drawings keep the input's relative path (disambiguated
/// names, never an input), WIDER files are `<event>/<stem>.txt` and a second photo with the
/// same event and stem fails instead of overwriting the first one's.
fn plan_outputs(a: &Args, inputs: &[Input]) -> Result<Plan> {
    let mut plan = Plan {
        draw: vec![None; inputs.len()],
        wider: vec![None; inputs.len()],
        mesh_obj: vec![None; inputs.len()],
    };
    if let Some(dir) = &a.mesh_obj {
        // Unique names per photo; `-face<k>.obj` after each keeps them unique per face.
        let names = files::output_names(inputs, |_| "obj".into());
        files::prepare_output_dir(dir)?;
        plan.mesh_obj = names
            .iter()
            .map(|n| Some(dir.join(n.with_extension(""))))
            .collect();
    }
    if let Some(dir) = &a.draw {
        let names = files::output_names(inputs, Input::extension);
        let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        files::refuse_overwriting_inputs(inputs, &paths)?;
        files::prepare_output_dir(dir)?;
        plan.draw = paths.into_iter().map(Some).collect();
    }
    if let Some(dir) = &a.wider {
        let mut seen: std::collections::HashMap<PathBuf, &std::path::Path> = Default::default();
        let mut paths = Vec::new();
        for input in inputs {
            let p = dir
                .join(input.event())
                .join(format!("{}.txt", input.stem()));
            if let Some(first) = seen.get(&p) {
                paths.push(Some(Err(format!(
                    "{}: its WIDER file {} would overwrite that of {}",
                    input.path.display(),
                    p.display(),
                    first.display()
                ))));
            } else {
                seen.insert(p.clone(), &input.path);
                paths.push(Some(Ok(p)));
            }
        }
        let planned: Vec<PathBuf> = paths.iter().flatten().flatten().cloned().collect();
        files::refuse_overwriting_inputs(inputs, &planned)?;
        files::prepare_output_dir(dir)?;
        plan.wider = paths;
    }
    Ok(plan)
}

/// A video frame's detections (one JSON line).
#[derive(serde::Serialize)]
struct FrameRecord<'a> {
    video: &'a str,
    frame: u64,
    time_s: f64,
    faces: Vec<&'a Face>,
}

/// One JSON line per frame of a video, to `--jsonl` or beside `--json FILE`.
fn detect_video(
    detector: &Detector,
    input: &Input,
    target: &Path,
    a: &Args,
    options: &DetectOptions,
    shown: f32,
) -> Result<()> {
    let target = target.to_path_buf();
    let mut out: Box<dyn std::io::Write> = if target.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        // Started empty by `run` (one file for all videos with --jsonl, one per video beside
        // --json): each video appends its lines.
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(&target)
            .with_context(|| format!("cannot write {}", target.display()))?;
        Box::new(std::io::BufWriter::new(f))
    };
    let video_name = input.name.to_string_lossy().into_owned();
    video::detect(
        detector,
        &input.path,
        a.model.threads()?,
        options,
        |frame, time_s, faces| {
            let faces: Vec<&Face> = faces.iter().filter(|f| f.score > shown).collect();
            let record = FrameRecord {
                video: &video_name,
                frame,
                time_s,
                faces,
            };
            writeln!(out, "{}", serde_json::to_string(&record)?)?;
            Ok(())
        },
    )?;
    out.flush()?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn process(
    detector: &Detector,
    input: &Input,
    a: &Args,
    options: &DetectOptions,
    protocol: &Protocol,
    shown: f32,
    plan: &Plan,
    k: usize,
) -> Result<Record> {
    let wider = match &plan.wider[k] {
        Some(Err(conflict)) => anyhow::bail!("{conflict}"),
        Some(Ok(path)) => Some(path),
        None => None,
    };
    let img = a.model.load_image(&input.path)?;
    let (faces, meshes) = if a.wants_mesh() {
        let found = detect_meshes(detector, &img, options, protocol)
            .with_context(|| input.path.display().to_string())?;
        found.into_iter().map(|(f, m)| (f, Some(m))).unzip()
    } else {
        let faces = detect_with(detector, &img, options, protocol, a.detect.rotations)
            .with_context(|| input.path.display().to_string())?;
        let none = vec![None; faces.len()];
        (faces, none)
    };
    if let Some(path) = wider {
        output::write_wider(path, &input.stem(), &faces)?;
    }
    let shown: Vec<(Face, Option<FaceMesh>)> = faces
        .into_iter()
        .zip(meshes)
        .filter(|(f, _)| f.score > shown)
        .collect();
    if let Some(base) = &plan.mesh_obj[k] {
        let triangles = &retinaface::mesh::Mesh::canonical().triangles;
        for (i, mesh) in shown.iter().filter_map(|(_, m)| m.as_ref()).enumerate() {
            let mut name = base.as_os_str().to_owned();
            name.push(format!("-face{i}.obj"));
            let path = PathBuf::from(name);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            files::write_atomic(&path, mesh.to_obj(triangles).as_bytes())?;
        }
    }
    if let Some(path) = &plan.draw[k] {
        let faces: Vec<Face> = shown.iter().map(|(f, _)| *f).collect();
        let mut drawn = output::draw(&img, &faces);
        if a.mesh {
            for mesh in shown.iter().filter_map(|(_, m)| m.as_ref()) {
                output::draw_mesh(&mut drawn, mesh);
            }
        }
        output::save_image(&drawn, path)?;
    }
    let faces = shown
        .into_iter()
        .map(|(f, m)| match (&m, a.mesh || a.mesh_colors) {
            (Some(m), true) => FaceOut::with_mesh(f, m, a.mesh_colors),
            _ => FaceOut::plain(f),
        })
        .collect();
    Ok(Record {
        image: input.name.to_string_lossy().into_owned(),
        width: img.width(),
        height: img.height(),
        faces,
    })
}
