//! The mesh branch's renderer and loss on a real photo, on their own: detect the faces, fit
//! a fresh decoder with one code, camera and light per face to their crops by gradient
//! descent on L_pixel, print the loss, and draw each face's crop beside its rendering before
//! and after the fit (×4, one row per face).
//!
//! ```sh
//! cargo run --release -p retinaface-train --example mesh_fit -- PHOTO OUT.png [FACES] [STEPS]
//! ```

use burn::tensor::Device;
use retinaface_train::render::fit::fit_crops;
use retinaface_train::render::loss::crops;
use std::path::PathBuf;
use std::time::Instant;

const SIZE: usize = 64;
const ZOOM: u32 = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [photo, out, rest @ ..] = &args[..] else {
        return Err("usage: mesh_fit PHOTO OUT.png [FACES] [STEPS]".into());
    };
    let faces: usize = rest.first().map_or(Ok(4), |s| s.parse())?;
    let steps: usize = rest.get(1).map_or(Ok(200), |s| s.parse())?;
    let image = retinaface::input::load_image(&PathBuf::from(photo))?;
    let detector = retinaface::Detector::default_model()?;
    let found = detector.detect(&image, &retinaface::DetectOptions::default())?;
    let boxes: Vec<[f32; 4]> = found.iter().take(faces).map(|f| f.bbox).collect();
    if boxes.is_empty() {
        return Err("no face found".into());
    }
    let targets = crops(&image, &boxes, SIZE);
    let started = Instant::now();
    let report = fit_crops(
        &targets,
        boxes.len(),
        SIZE,
        steps,
        0.01,
        1,
        &Device::flex().autodiff(),
    )?;
    println!(
        "{} face(s), {steps} steps in {:.1} s: L_pixel {:.4} -> {:.4}",
        boxes.len(),
        started.elapsed().as_secs_f64(),
        report.losses.first().copied().unwrap_or(f32::NAN),
        report.losses.last().copied().unwrap_or(f32::NAN)
    );
    let columns = [report.before, report.after];
    let sheet = retinaface_train::render::sheet(&targets, SIZE, &columns, ZOOM);
    sheet.save(out)?;
    println!("crop | before | after per face: {out}");
    Ok(())
}
