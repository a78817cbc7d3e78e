//! The anonymisation options photos and videos share (`anonymize`'s flags).

use crate::model::ModelArgs;
use crate::output;
use anyhow::{bail, Result};
use image::RgbImage;
use retinaface::anonymize::{self, Mode, Shape};
use retinaface::{DetectOptions, Detector, Face};

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ModeArg {
    Blur,
    Pixelate,
    Solid,
    None,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ShapeArg {
    Ellipse,
    Box,
}

/// Anonymisation options shared by photos and videos.
#[derive(clap::Args, Clone, Debug)]
pub struct MaskArgs {
    /// How faces are hidden.
    #[arg(long, value_enum, default_value = "blur")]
    pub mode: ModeArg,
    /// The box is enlarged by this factor around its centre.
    #[arg(long, default_value_t = 1.3)]
    pub mask_scale: f32,
    /// Mask shape inside the enlarged box.
    #[arg(long, value_enum, default_value = "ellipse")]
    pub shape: ShapeArg,
    /// Score threshold (lower than detect's: a missed face leaks, a blurred background does not).
    #[arg(long, default_value_t = 0.3)]
    pub threshold: f32,
    /// Draw boxes and scores on top, for checking.
    #[arg(long)]
    pub draw: bool,
    /// Detect on a copy resized by this factor (0 < F ≤ 1), mask at full size.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f32,
    /// Also detect in the frame turned by 90°, 180° and 270° (people lying down, upside-down
    /// frames) and merge: four passes instead of one.
    #[arg(long)]
    pub rotations: bool,
}

impl MaskArgs {
    pub fn options(&self) -> anonymize::Options {
        anonymize::Options {
            mode: match self.mode {
                ModeArg::Blur => Mode::Blur,
                ModeArg::Pixelate => Mode::Pixelate,
                ModeArg::Solid => Mode::Solid,
                ModeArg::None => Mode::None,
            },
            shape: match self.shape {
                ShapeArg::Ellipse => Shape::Ellipse,
                ShapeArg::Box => Shape::Box,
            },
            mask_scale: self.mask_scale,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.scale > 0.0 && self.scale <= 1.0) {
            bail!("--scale {} must be in (0, 1]", self.scale);
        }
        if !(self.mask_scale > 0.0 && self.mask_scale <= 10.0) {
            bail!("--mask-scale {} must be in (0, 10]", self.mask_scale);
        }
        DetectOptions {
            threshold: self.threshold,
            ..Default::default()
        }
        .validate()?;
        Ok(())
    }

    /// Faces of `img`, detected at `--scale` (and in the rotated frames with `--rotations`),
    /// mapped back to full size.
    pub fn detect(
        &self,
        detector: &Detector,
        img: &RgbImage,
        model: &ModelArgs,
    ) -> Result<Vec<Face>> {
        let options = model.limit(DetectOptions {
            threshold: self.threshold,
            ..Default::default()
        });
        if self.rotations {
            return Ok(retinaface::tta::detect_rotations(
                detector, img, self.scale, &options,
            )?);
        }
        Ok(detector.detect_scaled(img, self.scale, &options)?)
    }

    /// Hide `boxes` in `img`, then draw `faces` if asked.
    pub fn apply(&self, img: &mut RgbImage, boxes: &[[f32; 4]], faces: &[Face]) {
        anonymize::anonymize(img, boxes, &self.options());
        if self.draw {
            *img = output::draw(img, faces);
        }
    }
}
