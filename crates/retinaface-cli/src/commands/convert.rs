//! `retinaface convert IN OUT.safetensors` and `retinaface convert --info FILE`.

use anyhow::{bail, Context, Result};
use retinaface::{arch::Graph, model, weights};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Weights to read: ONNX, PyTorch .pth (legacy or zip) or safetensors.
    input: PathBuf,
    /// The safetensors file to write (folded convolutions, the description's names, the model
    /// configuration in the metadata).
    #[arg(required_unless_present = "info")]
    output: Option<PathBuf>,
    /// Print the architecture the file holds (family, backbone, levels, anchors, heads) and
    /// check its tensors, instead of converting.
    #[arg(long)]
    info: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let (tensors, config) = weights::read_model_file(&a.input)?;
    let folded = model::folded_tensors(&config, &tensors).with_context(|| {
        format!(
            "{} does not fit the network it declares ({})",
            a.input.display(),
            config.summary()
        )
    })?;
    if a.info {
        let graph = Graph::new(&config);
        let params: usize = folded.values().map(|t| t.data.len()).sum();
        println!("{}", config.summary());
        println!(
            "{} layers, {} parameters (BatchNorm folded), {} levels",
            graph.layers.len(),
            params,
            graph.levels.len()
        );
        for (level, (step, heads)) in config.anchors.steps.iter().zip(&graph.levels).enumerate() {
            let shapes: Vec<String> = config
                .anchors
                .shapes(level)
                .map(|(w, h)| format!("{}×{}", w.round(), h.round()))
                .collect();
            println!(
                "  P{} (step {step}): {} anchors per cell [{}]",
                step.trailing_zeros(),
                heads.anchors,
                shapes.join(", ")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(output) = a.output else {
        bail!("an output file is needed");
    };
    if output.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!("output {} must end in .safetensors", output.display());
    }
    let bytes = weights::safetensors::write(&folded, &config)?;
    std::fs::write(&output, bytes).with_context(|| format!("cannot write {}", output.display()))?;
    eprintln!(
        "wrote {} ({} tensors, {})",
        output.display(),
        folded.len(),
        config.summary()
    );
    Ok(ExitCode::SUCCESS)
}
