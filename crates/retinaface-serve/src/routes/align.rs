//! `POST /v1/align`: an ArcFace-aligned crop of every face, as base64 PNGs in JSON with their
//! matrices, or as a ZIP (`Accept: application/zip`: `face_<k>.png` and `faces.json`).

use super::detect::{count, Plan};
use super::{accept, millis, single, within};
use crate::error::ApiError;
use crate::options::Endpoint;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use retinaface::align::{self, Affine};
use retinaface::Face;
use serde::Serialize;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

/// One aligned face.
#[derive(Serialize)]
struct Aligned {
    #[serde(flatten)]
    face: Face,
    /// The 2×3 matrix from the photo to the crop.
    matrix: Affine,
    /// The crop, base64 PNG (left out of the ZIP's `faces.json`, whose crops are files).
    #[serde(skip_serializing_if = "Option::is_none")]
    crop: Option<String>,
}

#[derive(Serialize)]
struct AlignAnswer {
    width: u32,
    height: u32,
    size: u32,
    faces: Vec<Aligned>,
    took_ms: f64,
}

pub async fn align(State(state): State<Arc<AppState>>, req: Request) -> Result<Response, ApiError> {
    let started = Instant::now();
    within(&state, async {
        if !state.detector.config().has_landmarks() {
            return Err(ApiError::bad_request(format!(
                "alignment needs landmarks, and this model ({}) predicts none",
                state.detector.config().summary()
            )));
        }
        let a = accept(&state, req, Endpoint::Align).await?;
        let zip = a
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/zip"));
        let item = single(a.upload, Endpoint::Align)?;
        let bytes = item.bytes?;
        let size = a.options.size.unwrap_or(112);
        let plan = Plan::new(a.options, 0.5, state.settings.max_image_pixels)?;
        let (width, height, crops) = state
            .run(a.slot, move |detector| {
                let (img, faces) = plan.faces(detector, &bytes, &item.name)?;
                let mut crops = Vec::new();
                // Aligned with the detected landmarks, answered without them when asked.
                for face in plan.options.limit_faces(faces) {
                    let Some((crop, matrix)) = align::align_face(&img, &face, size) else {
                        continue;
                    };
                    crops.push((plan.options.shown(face), matrix, png(&crop)?));
                }
                Ok((img.width(), img.height(), crops))
            })
            .await?;
        count(&state, 1, crops.len());
        if zip {
            return zip_answer(crops);
        }
        let faces = crops
            .into_iter()
            .map(|(face, matrix, png)| Aligned {
                face,
                matrix,
                crop: Some(base64::engine::general_purpose::STANDARD.encode(png)),
            })
            .collect();
        Ok(Json(AlignAnswer {
            width,
            height,
            size,
            faces,
            took_ms: millis(started),
        })
        .into_response())
    })
    .await
}

fn png(img: &image::RgbImage) -> Result<Vec<u8>, ApiError> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| ApiError::internal(format!("cannot encode a crop: {e}")))?;
    Ok(out.into_inner())
}

/// `face_<k>.png` per face and `faces.json` (the faces with their matrices), stored.
fn zip_answer(crops: Vec<(Face, Affine, Vec<u8>)>) -> Result<Response, ApiError> {
    let fail = |e: &dyn std::fmt::Display| ApiError::internal(format!("cannot write the ZIP: {e}"));
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut listed = Vec::new();
    for (k, (face, matrix, png)) in crops.into_iter().enumerate() {
        zip.start_file(format!("face_{k}.png"), stored)
            .map_err(|e| fail(&e))?;
        zip.write_all(&png).map_err(|e| fail(&e))?;
        listed.push(Aligned {
            face,
            matrix,
            crop: None,
        });
    }
    zip.start_file("faces.json", stored).map_err(|e| fail(&e))?;
    let json = serde_json::to_vec_pretty(&listed).map_err(|e| fail(&e))?;
    zip.write_all(&json).map_err(|e| fail(&e))?;
    let bytes = zip.finish().map_err(|e| fail(&e))?.into_inner();
    Ok(([(header::CONTENT_TYPE, "application/zip")], bytes).into_response())
}
