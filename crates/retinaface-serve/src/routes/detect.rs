//! `POST /v1/detect` and `POST /v1/detect/batch`.

use super::{accept, millis, single, within};
use crate::error::ApiError;
use crate::options::{Endpoint, Options};
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::Json;
use retinaface::tta::Protocol;
use retinaface::{DetectOptions, Detector, Face};
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// One image's answer: the record of `detect --json`, without the file name.
#[derive(Debug, Serialize)]
pub struct Detection {
    pub width: u32,
    pub height: u32,
    pub faces: Vec<Face>,
}

#[derive(Serialize)]
pub struct DetectAnswer {
    #[serde(flatten)]
    detection: Detection,
    took_ms: f64,
}

/// What detecting one image of a request takes besides its bytes: the pixel limit, the
/// library's options and protocol, and the request's own options.
pub struct Plan {
    pub max_pixels: u64,
    pub detect: DetectOptions,
    pub protocol: Protocol,
    pub options: Options,
}

impl Plan {
    /// The plan of `options`, whose threshold is `default_threshold` unless given.
    pub fn new(
        options: Options,
        default_threshold: f32,
        max_pixels: u64,
    ) -> Result<Plan, ApiError> {
        let (detect, protocol) = options.detection(default_threshold, max_pixels)?;
        Ok(Plan {
            max_pixels,
            detect,
            protocol,
            options,
        })
    }

    /// Decode `bytes` (`name` in errors) and detect: the image and its faces in score order.
    pub fn faces(
        &self,
        detector: &Detector,
        bytes: &[u8],
        name: &str,
    ) -> Result<(image::RgbImage, Vec<Face>), ApiError> {
        let img = retinaface::input::decode_bytes(bytes, Path::new(name), self.max_pixels)?;
        let faces = self.detect(detector, &img)?;
        Ok((img, faces))
    }

    /// The faces of an image already decoded, in score order.
    pub fn detect(
        &self,
        detector: &Detector,
        img: &image::RgbImage,
    ) -> Result<Vec<Face>, ApiError> {
        Ok(retinaface::tta::detect(
            detector,
            img,
            &self.detect,
            &self.protocol,
        )?)
    }

    /// One image's answer: its size and the faces the request's options select.
    pub fn detection(
        &self,
        detector: &Detector,
        bytes: &[u8],
        name: &str,
    ) -> Result<Detection, ApiError> {
        let (img, faces) = self.faces(detector, bytes, name)?;
        Ok(Detection {
            width: img.width(),
            height: img.height(),
            faces: self.options.select(faces),
        })
    }
}

pub async fn detect(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<DetectAnswer>, ApiError> {
    let started = Instant::now();
    within(&state, async {
        let a = accept(&state, req, Endpoint::Detect).await?;
        let item = single(a.upload, Endpoint::Detect)?;
        let bytes = item.bytes?;
        let plan = Plan::new(a.options, 0.5, state.settings.max_image_pixels)?;
        let detection = state
            .run(a.slot, move |detector| {
                plan.detection(detector, &bytes, &item.name)
            })
            .await?;
        count(&state, 1, detection.faces.len());
        Ok(Json(DetectAnswer {
            detection,
            took_ms: millis(started),
        }))
    })
    .await
}

/// One item of a batch's answer.
#[derive(Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum BatchItem {
    Ok(Detection),
    Error { error: String, code: u16 },
}

#[derive(Serialize)]
pub struct BatchAnswer {
    results: Vec<BatchItem>,
    took_ms: f64,
}

pub async fn batch(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<BatchAnswer>, ApiError> {
    let started = Instant::now();
    within(&state, async {
        let a = accept(&state, req, Endpoint::Batch).await?;
        let items = a.upload.items;
        if items.is_empty() {
            return Err(ApiError::bad_request("the request holds no image"));
        }
        let max = state.settings.max_batch;
        if items.len() > max {
            return Err(ApiError::bad_request(format!(
                "the batch holds {} images, above the limit of {max} (--max-batch)",
                items.len()
            )));
        }
        let plan = Plan::new(a.options, 0.5, state.settings.max_image_pixels)?;
        let results = state
            .run(a.slot, move |detector| {
                let results = items
                    .into_iter()
                    .map(|item| {
                        // One image's failure, even a panic, is only its own.
                        let one = || plan.detection(detector, &item.bytes?, &item.name);
                        let result = retinaface::guard::catch(one).unwrap_or_else(|panic| {
                            Err(ApiError::internal(format!("internal error: {panic}")))
                        });
                        match result {
                            Ok(d) => BatchItem::Ok(d),
                            Err(e) => BatchItem::Error {
                                error: e.message,
                                code: e.status.as_u16(),
                            },
                        }
                    })
                    .collect::<Vec<_>>();
                Ok(results)
            })
            .await?;
        let (images, faces) = results.iter().fold((0, 0), |(i, f), r| match r {
            BatchItem::Ok(d) => (i + 1, f + d.faces.len()),
            BatchItem::Error { .. } => (i, f),
        });
        count(&state, images, faces);
        Ok(Json(BatchAnswer {
            results,
            took_ms: millis(started),
        }))
    })
    .await
}

/// Add to the images and faces counters.
pub fn count(state: &AppState, images: usize, faces: usize) {
    state
        .metrics
        .images
        .fetch_add(images as u64, Ordering::Relaxed);
    state
        .metrics
        .faces
        .fetch_add(faces as u64, Ordering::Relaxed);
}
