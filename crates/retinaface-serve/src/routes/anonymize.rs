//! `POST /v1/anonymize`: the photo back with its faces hidden, in its own format and without
//! metadata (the library's `anonymize::file`): as the body for raw and multipart requests,
//! base64 in JSON for JSON ones.

use super::detect::{count, Plan};
use super::{accept, millis, single, within};
use crate::error::ApiError;
use crate::input::Form;
use crate::options::Endpoint;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use retinaface::anonymize::file::Photo;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

pub async fn anonymize(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    within(&state, async {
        let a = accept(&state, req, Endpoint::Anonymize).await?;
        let form = a.form;
        let item = single(a.upload, Endpoint::Anonymize)?;
        let bytes = item.bytes?;
        let mask = a.options.mask()?;
        // A missed face leaks, a blurred background does not: 0.3, as the CLI.
        let plan = Plan::new(a.options, 0.3, state.settings.max_image_pixels)?;
        let (encoded, mime, faces) = state
            .run(a.slot, move |detector| {
                // Decoded keeping what a faithful re-encoding needs, not as `Plan::faces` does.
                let photo = Photo::decode(&bytes, Path::new(&item.name), plan.max_pixels)?;
                let mut img = photo.rgb.clone();
                let faces = plan.detect(detector, &img)?;
                let boxes: Vec<[f32; 4]> = faces.iter().map(|f| f.bbox).collect();
                retinaface::anonymize::anonymize(&mut img, &boxes, &mask);
                let mime = photo.format().to_mime_type();
                let (encoded, _) = photo
                    .encode(&bytes, &img)
                    .map_err(|e| ApiError::internal(format!("cannot encode the output: {e}")))?;
                Ok((encoded, mime, faces))
            })
            .await?;
        count(&state, 1, faces.len());
        if form == Form::Json {
            return Ok(Json(serde_json::json!({
                "image": base64::engine::general_purpose::STANDARD.encode(&encoded),
                "content_type": mime,
                "faces": faces,
                "took_ms": millis(started),
            }))
            .into_response());
        }
        let mut response = encoded.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
        headers.insert(
            HeaderName::from_static("x-faces"),
            HeaderValue::from(faces.len()),
        );
        Ok(response)
    })
    .await
}
