//! Videos through the system's `ffmpeg` and `ffprobe`: frames piped raw in and out, several
//! frames detected at once, masks held across frames, audio copied.

use crate::mask::MaskArgs;
use crate::model::ModelArgs;
use crate::progress;
use anyhow::{anyhow, bail, Context, Result};
use image::RgbImage;
use rayon::prelude::*;
use retinaface::anonymize::Hold;
use retinaface::{DetectOptions, Detector, Face};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// Video extensions taken from folders.
pub const VIDEO_EXTENSIONS: &[&str] = &["mp4", "mov", "mkv", "webm", "avi"];

/// Whether `path` is taken as a video (by extension).
pub fn is_video(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.iter().any(|v| v.eq_ignore_ascii_case(e)))
}

/// Video options.
#[derive(clap::Args, Clone, Debug)]
pub struct VideoArgs {
    /// Leave the audio out of anonymised videos (it is copied by default).
    #[arg(long)]
    pub no_audio: bool,
    /// Keep each face masked for this many frames after its last detection.
    #[arg(long, default_value_t = 2)]
    pub hold: usize,
}

/// What `ffprobe` says of a video's first video stream.
#[derive(Debug, Clone)]
pub struct Probe {
    pub width: u32,
    pub height: u32,
    /// Frame rate as a fraction, as ffprobe writes it (`25/1`, `30000/1001`).
    pub rate: String,
    pub fps: f64,
    pub frames: Option<u64>,
    pub has_audio: bool,
}

fn tool(name: &str) -> Command {
    let mut c = Command::new(name);
    c.stdin(Stdio::null());
    c
}

fn spawn_error(name: &str, e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow!("`{name}` not found: videos need ffmpeg installed (Debian/Ubuntu: apt-get install ffmpeg)")
    } else {
        anyhow!("cannot run {name}: {e}")
    }
}

/// Probe a video file.
pub fn probe(path: &Path) -> Result<Probe> {
    let out = tool("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(path)
        .output()
        .map_err(|e| spawn_error("ffprobe", e))?;
    if !out.status.success() {
        bail!(
            "not a readable video: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("ffprobe printed no JSON")?;
    let streams = json["streams"].as_array().cloned().unwrap_or_default();
    let v = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .ok_or_else(|| anyhow!("no video stream"))?;
    let (mut width, mut height) = (
        v["width"].as_u64().unwrap_or(0) as u32,
        v["height"].as_u64().unwrap_or(0) as u32,
    );
    if width == 0 || height == 0 || u64::from(width) * u64::from(height) > 100_000_000 {
        bail!("unsupported frame size {width}×{height}");
    }
    // ffmpeg applies the display rotation when decoding: a quarter turn swaps the sides.
    let rotation = v["side_data_list"]
        .as_array()
        .and_then(|l| l.iter().find_map(|d| d["rotation"].as_f64()))
        .or_else(|| v["tags"]["rotate"].as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0.0);
    if (rotation.abs() - 90.0).abs() < 1.0 || (rotation.abs() - 270.0).abs() < 1.0 {
        std::mem::swap(&mut width, &mut height);
    }
    let rate = v["r_frame_rate"].as_str().unwrap_or("25/1").to_owned();
    let fps = rate
        .split_once('/')
        .and_then(|(n, d)| Some(n.parse::<f64>().ok()? / d.parse::<f64>().ok()?))
        .filter(|f| f.is_finite() && *f > 0.0)
        .ok_or_else(|| anyhow!("unusable frame rate `{rate}`"))?;
    let frames = v["nb_frames"].as_str().and_then(|s| s.parse().ok());
    let has_audio = streams.iter().any(|s| s["codec_type"] == "audio");
    Ok(Probe {
        width,
        height,
        rate,
        fps,
        frames,
        has_audio,
    })
}

/// Raw RGB frames out of `ffmpeg`.
struct Frames {
    child: Child,
    stdout: ChildStdout,
    frame_bytes: usize,
    probe: Probe,
}

impl Frames {
    fn open(path: &Path) -> Result<Frames> {
        let probe = probe(path)?;
        let mut child = tool("ffmpeg")
            .args(["-v", "error", "-nostdin", "-i"])
            .arg(path)
            .args([
                "-map",
                "0:v:0",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
                "-fps_mode",
                "passthrough",
                "pipe:1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error("ffmpeg", e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no pipe from ffmpeg"))?;
        let frame_bytes = probe.width as usize * probe.height as usize * 3;
        Ok(Frames {
            child,
            stdout,
            frame_bytes,
            probe,
        })
    }

    /// Up to `n` next frames; fewer at the end.
    fn read_batch(&mut self, n: usize) -> Result<Vec<RgbImage>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let mut buf = vec![0u8; self.frame_bytes];
            let mut got = 0;
            while got < buf.len() {
                match self.stdout.read(&mut buf[got..])? {
                    0 => break,
                    k => got += k,
                }
            }
            if got == 0 {
                break;
            }
            if got < buf.len() {
                bail!("the decoder stopped in the middle of a frame");
            }
            out.push(
                RgbImage::from_raw(self.probe.width, self.probe.height, buf)
                    .ok_or_else(|| anyhow!("frame size"))?,
            );
        }
        Ok(out)
    }

    /// Wait for the decoder; an error (a truncated or damaged file) is reported.
    fn finish(mut self, frames_read: u64) -> Result<()> {
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let status = self.child.wait()?;
        if !status.success() {
            bail!("ffmpeg could not decode it: {}", err.trim());
        }
        if let Some(n) = self.probe.frames {
            if frames_read < n {
                bail!(
                    "truncated: {frames_read} of {n} frames decoded ({})",
                    err.trim()
                );
            }
        }
        if frames_read == 0 {
            bail!("no frames decoded");
        }
        Ok(())
    }
}

/// Raw RGB frames into `ffmpeg`, the input's audio copied.
struct Encoder {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: std::thread::JoinHandle<String>,
}

impl Encoder {
    fn open(input: &Path, output: &Path, p: &Probe, audio: bool) -> Result<Encoder> {
        let ext = output
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let even = p.width.is_multiple_of(2) && p.height.is_multiple_of(2);
        let codec: &[&str] = match ext.as_str() {
            "webm" => &[
                "-c:v",
                "libvpx-vp9",
                "-b:v",
                "0",
                "-crf",
                "32",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
            ],
            "avi" => &["-c:v", "mpeg4", "-q:v", "2"],
            _ => &["-c:v", "libx264", "-preset", "veryfast", "-crf", "18"],
        };
        let mut cmd = tool("ffmpeg");
        cmd.args([
            "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s",
        ])
        .arg(format!("{}x{}", p.width, p.height))
        .args(["-framerate", &p.rate, "-i", "pipe:0"]);
        if audio {
            cmd.arg("-i")
                .arg(input)
                .args(["-map", "0:v:0", "-map", "1:a?", "-c:a", "copy"]);
        } else {
            cmd.arg("-an");
        }
        cmd.args(codec)
            .args([
                "-pix_fmt",
                if even || ext == "avi" {
                    "yuv420p"
                } else {
                    "yuv444p"
                },
                "-fps_mode",
                "passthrough",
                "-map_metadata",
                "-1",
            ])
            .arg(output)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| spawn_error("ffmpeg", e))?;
        let stdin = child.stdin.take();
        let mut err = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no pipe from ffmpeg"))?;
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Ok(Encoder {
            child,
            stdin,
            stderr,
        })
    }

    fn write(&mut self, frame: &RgbImage) -> Result<()> {
        let pipe = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("encoder closed"))?;
        pipe.write_all(frame.as_raw())
            .context("the encoder stopped")
    }

    fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        let err = self.stderr.join().unwrap_or_default();
        if !status.success() {
            bail!("ffmpeg could not encode: {}", err.trim());
        }
        Ok(())
    }
}

/// Run `f` over batches of frames, detecting each batch's frames in parallel.
fn for_each_batch(
    detector: &Detector,
    input: &Path,
    threads: usize,
    detect: &(dyn Fn(&Detector, &RgbImage) -> Result<Vec<Face>> + Sync),
    mut f: impl FnMut(&Probe, Vec<(RgbImage, Vec<Face>)>) -> Result<()>,
) -> Result<u64> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()?;
    let mut frames = Frames::open(input)?;
    let probe = frames.probe.clone();
    let bar = progress::bar(probe.frames.unwrap_or(0).max(2) as usize, "frames");
    // Frames in flight: two per thread, fewer for large frames (raw RGB plus a pass each at
    // most 2000 pixels a side), so that the batch stays within the in-flight budget.
    let pixels = u64::from(probe.width) * u64::from(probe.height);
    let frame_cost = 3 * pixels + 34 * pixels.min(4_000_000);
    let fit = (crate::budget::IN_FLIGHT_BYTES / frame_cost.max(1)).max(1) as usize;
    let batch = (2 * threads.max(1)).min(fit);
    let mut count = 0u64;
    loop {
        let imgs = frames.read_batch(batch)?;
        if imgs.is_empty() {
            break;
        }
        let detected: Vec<Result<Vec<Face>>> =
            pool.install(|| imgs.par_iter().map(|img| detect(detector, img)).collect());
        let pairs = imgs
            .into_iter()
            .zip(detected)
            .map(|(i, d)| d.map(|d| (i, d)))
            .collect::<Result<Vec<_>>>()?;
        count += pairs.len() as u64;
        bar.inc(pairs.len() as u64);
        f(&probe, pairs)?;
    }
    bar.finish_and_clear();
    frames.finish(count)?;
    Ok(count)
}

/// Anonymise a video into `output` (same size, frame rate and frame count; audio copied unless
/// `--no-audio`).
pub fn anonymize(
    detector: &Detector,
    input: &Path,
    output: &Path,
    mask: &MaskArgs,
    v: &VideoArgs,
    model: &ModelArgs,
    threads: usize,
) -> Result<()> {
    // Encoded beside the output under a temporary name, renamed into place once complete.
    let partial = crate::files::partial_path(output)?;
    let probe = probe(input)?;
    let mut encoder = Encoder::open(input, &partial, &probe, probe.has_audio && !v.no_audio)?;
    let mut hold = Hold::new(v.hold);
    let detect = |d: &Detector, img: &RgbImage| mask.detect(d, img, model);
    let result = for_each_batch(detector, input, threads, &detect, |_, batch| {
        for (mut img, faces) in batch {
            let boxes = hold.push(faces.iter().map(|f| f.bbox).collect());
            mask.apply(&mut img, &boxes, &faces);
            encoder.write(&img)?;
        }
        Ok(())
    });
    let finished = encoder.finish();
    if result.is_err() || finished.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result?;
    finished?;
    std::fs::rename(&partial, output).with_context(|| format!("cannot write {}", output.display()))
}

/// Detect faces in every frame; `sink` gets (frame index, time in seconds, faces).
pub fn detect(
    detector: &Detector,
    input: &Path,
    threads: usize,
    options: &DetectOptions,
    mut sink: impl FnMut(u64, f64, &[Face]) -> Result<()>,
) -> Result<u64> {
    let detect = |d: &Detector, img: &RgbImage| Ok(d.detect(img, options)?);
    let mut index = 0u64;
    for_each_batch(detector, input, threads, &detect, |p, batch| {
        for (_, faces) in batch {
            sink(index, index as f64 / p.fps, &faces)?;
            index += 1;
        }
        Ok(())
    })
}
