//! What a trained branch renders: for the first training images of a run, each image's
//! best-overlapping face anchor's crop beside the branch's rendering from two model files
//! (say the run's first checkpoint and its final export), ×4, one row per image, and
//! L_pixel of each.
//!
//! ```sh
//! cargo run --release -p retinaface-train --example mesh_crops -- \
//!     RUN/config.toml BEFORE.safetensors AFTER.safetensors OUT.png [IMAGES]
//! ```

use burn::tensor::Device;
use image::RgbImage;
use retinaface_train::config::TrainConfig;
use retinaface_train::data::{AugmentConfig, Dataset, Loader};
use retinaface_train::network::{tensor, Model};
use retinaface_train::render::loss::{chosen_anchors, pixel_loss, BatchInputs, BranchTerm};
use std::path::Path;

const ZOOM: u32 = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config, before, after, out, rest @ ..] = &args[..] else {
        return Err("usage: mesh_crops CONFIG BEFORE AFTER OUT.png [IMAGES]".into());
    };
    let images: usize = rest.first().map_or(Ok(8), |s| s.parse())?;
    let config = TrainConfig::load(Path::new(config))?;
    let model_config = config.model.model_config();
    let mut dataset = Dataset::load(&config.data.images, &config.data.labels_path())?;
    dataset.truncate(images);
    // The images as they are, square-padded and resized, without random crops or colours.
    let augment = AugmentConfig {
        min_face: config.augment.min_face,
        ..AugmentConfig::none()
    };
    let loader = Loader::new(
        dataset,
        &model_config,
        augment,
        config.matching,
        config.data.image_size,
        images,
        config.run.seed,
    );
    let batch = loader.load(0, 0);
    let s = batch.size;
    let device = Device::flex();
    let chosen = chosen_anchors(&batch.targets, 1);
    let size = config.loss.mesh_crop;
    let term = BranchTerm::new(size, &device);
    let mut columns: Vec<Vec<RgbImage>> = Vec::new();
    let mut crops = Vec::new();
    for file in [before, after] {
        let tensors = retinaface::weights::read_file(Path::new(file))?;
        let model = Model::from_tensors(&model_config, &tensors, &device)?;
        let x = tensor(batch.images.clone(), vec![batch.len(), 3, s, s], &device);
        let params = model
            .net
            .forward(x)
            .mesh
            .ok_or("the model has no mesh branch")?;
        let decoder = model.net.mesh_decoder.as_ref().ok_or("no decoder")?;
        let mean = model.config.mean_bgr;
        let inputs = BatchInputs {
            images: &batch.images,
            side: s,
            mean_bgr: mean,
            priors: loader.priors(),
            targets: &batch.targets,
            variances: model.config.variances,
        };
        let (rendering, targets) = term
            .render_chosen(params, decoder, &chosen, &inputs)
            .ok_or("no face anchor in these images")?;
        let loss = pixel_loss(&rendering, &targets, size).into_scalar::<f32>();
        println!("{file}: L_pixel {loss:.4} over {} crops", chosen.len());
        columns.push(rendering.images(chosen.len(), size));
        crops = targets;
    }
    let sheet = retinaface_train::render::sheet(&crops, size, &columns, ZOOM);
    sheet.save(out)?;
    println!("crop | before | after per image: {out}");
    Ok(())
}
