//! Choosing the weights: `--model PATH`, else `$RETINAFACE_MODEL`, else the embedded default.

use anyhow::{Context, Result};
use retinaface::{DetectOptions, Detector};
use std::path::PathBuf;

/// Environment variable naming a weights file to use instead of the embedded model.
pub const MODEL_ENV: &str = "RETINAFACE_MODEL";

/// Options shared by every command that runs the detector.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Weights file (ONNX, PyTorch .pth or safetensors); default: $RETINAFACE_MODEL, else the
    /// embedded MobileNet-0.25.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Threads for one image's forward pass (default: all cores; at most 8 per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Largest image decoded, and largest detection pass, in pixels: larger ones are refused
    /// before any allocation (`100M`, `1e8` and `100000000` are the default).
    #[arg(long, value_name = "PIXELS", value_parser = parse_pixels, default_value = "100M")]
    pub max_image_pixels: u64,
    /// Photos with a longer side than this are detected on a copy of this long side, faces
    /// mapped back (default 2000); `full`: always at full resolution. Passes of `--resize`,
    /// `--scales` and `--tta` keep their own sizes.
    #[arg(long, value_name = "N|full", value_parser = parse_side)]
    pub max_side: Option<MaxSide>,
}

/// `--max-side`: a long side in pixels, or full resolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxSide {
    Pixels(u32),
    Full,
}

fn parse_side(text: &str) -> Result<MaxSide, String> {
    if text.eq_ignore_ascii_case("full") {
        return Ok(MaxSide::Full);
    }
    match text.parse::<u32>() {
        Ok(n) if n >= 32 => Ok(MaxSide::Pixels(n)),
        _ => Err(format!(
            "'{text}': expected `full` or a long side of at least 32 pixels"
        )),
    }
}

/// A pixel count: an integer, a float such as `1e8`, or a number with `M`/`MP` (megapixels).
pub fn parse_pixels(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || format!("'{text}': expected a pixel count such as 100M, 1e8 or 100000000");
    let upper = t.to_ascii_uppercase();
    let (number, unit) = match upper.strip_suffix("MP").or_else(|| upper.strip_suffix('M')) {
        Some(n) => (n.to_string(), 1e6),
        None => (upper.clone(), 1.0),
    };
    let v: f64 = number.trim().parse().map_err(|_| bad())?;
    let pixels = v * unit;
    if !(1.0..=1e12).contains(&pixels) {
        return Err(format!("'{text}': expected between 1 and 1e12 pixels"));
    }
    Ok(pixels as u64)
}

impl ModelArgs {
    /// The weights file chosen, if not the embedded one.
    pub fn path(&self) -> Option<PathBuf> {
        self.model.clone().or_else(|| {
            std::env::var_os(MODEL_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }

    /// Load the detector with `threads` per pass (0: the caller's thread pool).
    pub fn load_with_threads(&self, threads: usize) -> Result<Detector> {
        let detector = match self.path() {
            // The library's error names the file.
            Some(p) => Detector::from_file(&p).context("cannot load the model")?,
            None => Detector::default_model().context("cannot load the embedded model")?,
        };
        Ok(detector.with_threads(threads)?)
    }

    /// Threads per pass: `--threads`, else all cores. More than 8 per core only adds
    /// switching (and a large count spends seconds starting threads): refused.
    pub fn threads(&self) -> Result<usize> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        match self.threads {
            None => Ok(cores),
            Some(0) => anyhow::bail!("--threads must be at least 1"),
            Some(n) if n > 8 * cores => anyhow::bail!(
                "--threads {n} is more than this machine can use: at most {} ({cores} cores)",
                8 * cores
            ),
            Some(n) => Ok(n),
        }
    }

    /// `base` with the size limits of the flags.
    pub fn limit(&self, base: DetectOptions) -> DetectOptions {
        DetectOptions {
            max_image_pixels: self.max_image_pixels,
            max_side: match self.max_side {
                None => base.max_side,
                Some(MaxSide::Full) => None,
                Some(MaxSide::Pixels(n)) => Some(n),
            },
            ..base
        }
    }

    /// Decode an input photo within `--max-image-pixels`.
    pub fn load_image(&self, path: &std::path::Path) -> Result<image::RgbImage> {
        Ok(retinaface::input::load_image_limited(
            path,
            self.max_image_pixels,
        )?)
    }
}
