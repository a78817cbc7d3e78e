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

/// Decode `bytes` and detect; shared by the endpoints.
pub fn detect_bytes(
    detector: &Detector,
    bytes: &[u8],
    name: &str,
    max_pixels: u64,
    options: &DetectOptions,
    protocol: &Protocol,
) -> Result<(image::RgbImage, Vec<Face>), ApiError> {
    let img = retinaface::input::decode_bytes(bytes, Path::new(name), max_pixels)?;
    let faces = retinaface::tta::detect(detector, &img, options, protocol)?;
    Ok((img, faces))
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
        let max_pixels = state.settings.max_image_pixels;
        let (detect_options, protocol) = a.options.detection(0.5, max_pixels)?;
        let options = a.options;
        let detection = state
            .run(a.slot, move |detector| {
                let (img, faces) = detect_bytes(
                    detector,
                    &bytes,
                    &item.name,
                    max_pixels,
                    &detect_options,
                    &protocol,
                )?;
                Ok(Detection {
                    width: img.width(),
                    height: img.height(),
                    faces: options.select(faces),
                })
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
        let max_pixels = state.settings.max_image_pixels;
        let (detect_options, protocol) = a.options.detection(0.5, max_pixels)?;
        let options: Options = a.options;
        let results = state
            .run(a.slot, move |detector| {
                let results = items
                    .into_iter()
                    .map(|item| {
                        // One image's failure, even a panic, is only its own.
                        let one = || -> Result<Detection, ApiError> {
                            let bytes = item.bytes?;
                            let (img, faces) = detect_bytes(
                                detector,
                                &bytes,
                                &item.name,
                                max_pixels,
                                &detect_options,
                                &protocol,
                            )?;
                            Ok(Detection {
                                width: img.width(),
                                height: img.height(),
                                faces: options.select(faces),
                            })
                        };
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
