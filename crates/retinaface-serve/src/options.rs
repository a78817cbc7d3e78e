//! The options a request may give (query string, multipart text fields or JSON keys), which
//! of them each endpoint takes, and what they mean for the library.

use crate::error::ApiError;
use retinaface::anonymize::{self, Mode, Shape};
use retinaface::detector::DEFAULT_MAX_SIDE;
use retinaface::input::resize::Resize;
use retinaface::tta::Protocol;
use retinaface::{DetectOptions, Face};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Every option of every endpoint; [`Endpoint::options`] says which one takes which.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Options {
    /// Keep faces scoring above this (0.5; 0.3 for `anonymize`).
    pub threshold: Option<f32>,
    /// NMS IoU threshold (0.4).
    pub nms: Option<f32>,
    /// At most this many faces, the largest first (0: all, in score order).
    pub limit: Option<usize>,
    /// Detect on a copy whose long side is at most this (default 2000, as `detect`).
    pub max_size: Option<u32>,
    /// Answer the landmarks (true).
    pub landmarks: Option<bool>,
    /// The paper's test-time protocol (false).
    pub tta: Option<bool>,
    /// Crop size of `align` (112).
    pub size: Option<u32>,
    /// `anonymize`: blur, pixelate, solid.
    pub mode: Option<String>,
    /// `anonymize`: ellipse or box.
    pub shape: Option<String>,
    /// `anonymize`: the box enlarged by this factor (1.3).
    pub mask_scale: Option<f32>,
}

/// The endpoints that take images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Detect,
    Batch,
    Align,
    Anonymize,
}

const DETECTION: [&str; 6] = ["threshold", "nms", "limit", "max_size", "landmarks", "tta"];

impl Endpoint {
    /// The options it takes.
    pub fn options(self) -> Vec<&'static str> {
        let mut names = DETECTION.to_vec();
        match self {
            Endpoint::Detect | Endpoint::Batch => {}
            Endpoint::Align => names.push("size"),
            Endpoint::Anonymize => {
                names.retain(|n| !matches!(*n, "limit" | "landmarks"));
                names.extend(["mode", "shape", "mask_scale"]);
            }
        }
        names
    }

    /// Its path, for messages.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Detect => "/v1/detect",
            Endpoint::Batch => "/v1/detect/batch",
            Endpoint::Align => "/v1/align",
            Endpoint::Anonymize => "/v1/anonymize",
        }
    }
}

impl Options {
    /// The options of `map` that `endpoint` takes; any other key is a 400 naming it.
    pub fn parse(map: Map<String, Value>, endpoint: Endpoint) -> Result<Options, ApiError> {
        let known = endpoint.options();
        if let Some(bad) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ApiError::bad_request(format!(
                "unknown option '{bad}' for {} (it takes: {})",
                endpoint.path(),
                known.join(", ")
            )));
        }
        let options: Options = serde_json::from_value(Value::Object(map))
            .map_err(|e| ApiError::bad_request(format!("bad option: {e}")))?;
        options.validate()?;
        Ok(options)
    }

    fn validate(&self) -> Result<(), ApiError> {
        if let Some(n) = self.max_size {
            if n < 32 {
                return Err(ApiError::bad_request(format!(
                    "max_size {n} is below 32 pixels"
                )));
            }
        }
        if let Some(s) = self.size {
            if !(16..=1024).contains(&s) {
                return Err(ApiError::bad_request(format!(
                    "size {s} is outside 16..=1024"
                )));
            }
        }
        if let Some(m) = self.mask_scale {
            if !(m > 0.0 && m <= 10.0) {
                return Err(ApiError::bad_request(format!(
                    "mask_scale {m} is outside (0, 10]"
                )));
            }
        }
        self.mask()?;
        Ok(())
    }

    /// The library's detection options (threshold `default_threshold` unless given) and the
    /// test-time protocol.
    pub fn detection(
        &self,
        default_threshold: f32,
        max_image_pixels: u64,
    ) -> Result<(DetectOptions, Protocol), ApiError> {
        let options = DetectOptions {
            threshold: self.threshold.unwrap_or(default_threshold),
            nms: self.nms.unwrap_or(0.4),
            max_side: Some(self.max_size.unwrap_or(DEFAULT_MAX_SIDE)),
            max_image_pixels,
            ..DetectOptions::default()
        };
        options.validate()?;
        let protocol = if self.tta == Some(true) {
            Protocol::paper()
        } else {
            Protocol::single(Resize::Original)
        };
        Ok((options, protocol))
    }

    /// `limit` and `landmarks` applied to faces in score order.
    pub fn select(&self, faces: Vec<Face>) -> Vec<Face> {
        self.limit_faces(faces)
            .into_iter()
            .map(|f| self.shown(f))
            .collect()
    }

    /// `limit` applied to faces in score order: the largest first, when given.
    pub fn limit_faces(&self, mut faces: Vec<Face>) -> Vec<Face> {
        if let Some(limit) = self.limit.filter(|&n| n > 0) {
            // Largest first; a stable sort keeps score order among equal areas.
            faces.sort_by(|a, b| area(b).total_cmp(&area(a)));
            faces.truncate(limit);
        }
        faces
    }

    /// A face as answered: without its landmarks when `landmarks` is false.
    pub fn shown(&self, mut face: Face) -> Face {
        if self.landmarks == Some(false) {
            face.landmarks = None;
        }
        face
    }

    /// The anonymisation options.
    pub fn mask(&self) -> Result<anonymize::Options, ApiError> {
        let d = anonymize::Options::default();
        let mode = match self.mode.as_deref() {
            None => d.mode,
            Some("blur") => Mode::Blur,
            Some("pixelate") => Mode::Pixelate,
            Some("solid") => Mode::Solid,
            Some(m) => {
                return Err(ApiError::bad_request(format!(
                    "mode '{m}' is not one of blur, pixelate, solid"
                )))
            }
        };
        let shape = match self.shape.as_deref() {
            None => d.shape,
            Some("ellipse") => Shape::Ellipse,
            Some("box") => Shape::Box,
            Some(s) => {
                return Err(ApiError::bad_request(format!(
                    "shape '{s}' is not one of ellipse, box"
                )))
            }
        };
        Ok(anonymize::Options {
            mode,
            shape,
            mask_scale: self.mask_scale.unwrap_or(d.mask_scale),
        })
    }
}

fn area(f: &Face) -> f32 {
    f.width().max(0.0) * f.height().max(0.0)
}
