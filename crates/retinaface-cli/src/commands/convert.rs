//! `retinaface convert IN OUT.safetensors`.

use anyhow::{bail, Context, Result};
use retinaface::{model, weights, ModelConfig};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Weights to read: ONNX, PyTorch .pth (legacy or zip) or safetensors.
    input: PathBuf,
    /// The safetensors file to write (folded convolutions, the port's names).
    output: PathBuf,
}

pub fn run(a: Args) -> Result<ExitCode> {
    if a.output.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!("output {} must end in .safetensors", a.output.display());
    }
    let tensors = weights::read_file(&a.input)?;
    let config = ModelConfig::infer(&tensors);
    let folded = model::folded_tensors(&config, &tensors).with_context(|| {
        format!(
            "{} does not fit the {:?} RetinaFace",
            a.input.display(),
            config.backbone
        )
    })?;
    let bytes = weights::safetensors::write(&folded, &config)?;
    std::fs::write(&a.output, bytes)
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    eprintln!(
        "wrote {} ({} tensors, {:?})",
        a.output.display(),
        folded.len(),
        config.backbone
    );
    Ok(ExitCode::SUCCESS)
}
