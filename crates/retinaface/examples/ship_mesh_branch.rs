//! Cut the dense regression branch out of a `mobilenet0.25-port-mesh` run's export into the
//! file the library embeds beside the detection model
//! (`crates/retinaface/models/retinaface-mobilenet0.25-mesh.safetensors`), after checking
//! that the run left every detection tensor of the embedded model as it was. FINAL may be a
//! run's export or a checkpoint's (unfolded) `model.safetensors`.
//!
//! ```sh
//! cargo run --release -p retinaface --example ship_mesh_branch -- \
//!     runs/mobilenet0.25-port-mesh/final.safetensors \
//!     crates/retinaface/models/retinaface-mobilenet0.25-mesh.safetensors
//! ```

use retinaface::weights::{self, embedded, safetensors, NamedTensors};
use retinaface::ModelConfig;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [from, to] = args.as_slice() else {
        return Err("usage: ship_mesh_branch FINAL.safetensors OUT.safetensors".into());
    };
    let (tensors, config) = weights::read_model_file(from)?;
    if config.mesh.is_none() {
        return Err(format!("{}: the model has no mesh branch", from.display()).into());
    }
    // Folded or not (a checkpoint's unfolded copy), its detection layers must fold to the
    // embedded detection model's tensors exactly.
    let detection = safetensors::read(embedded::BYTES)?;
    let folded = retinaface::model::folded_tensors(&ModelConfig::mobilenet025(), &tensors)?;
    for (name, t) in &detection {
        if folded.get(name).map(|x| &x.data) != Some(&t.data) {
            return Err(format!("{name} differs from the embedded model's").into());
        }
    }
    let branch: NamedTensors = tensors
        .into_iter()
        .filter(|(name, _)| name.starts_with("MeshHead.") || name.starts_with("mesh_decoder."))
        .collect();
    if branch.is_empty() {
        return Err(format!("{}: no branch tensors", from.display()).into());
    }
    let names: Vec<&String> = branch.keys().collect();
    println!("{} branch tensors: {names:?}", branch.len());
    std::fs::write(to, safetensors::write(&branch, &embedded::config())?)?;
    Ok(())
}
