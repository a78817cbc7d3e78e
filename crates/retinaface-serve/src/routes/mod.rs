//! The routes: the image endpoints under `/v1` (behind the key when one is set), the
//! operational ones (health, readiness, metrics, OpenAPI) and the web page.

mod align;
mod anonymize;
mod detect;
mod ops;

use crate::error::ApiError;
use crate::input::{self, Upload};
use crate::options::{Endpoint, Options};
use crate::state::{AppState, Slot};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;

/// The service's router.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/detect", post(detect::detect))
        .route("/v1/detect/batch", post(detect::batch))
        .route("/v1/align", post(align::align))
        .route("/v1/anonymize", post(anonymize::anonymize))
        .route("/v1/info", get(ops::info))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .merge(v1)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/", get(ops::page))
        .route("/app.js", get(ops::script))
        .fallback(ops::not_found)
        // Bodies are read by `input::read_body` with `--max-body`; multipart parsing then
        // runs over bytes already read.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// Count every answer by route and status, with its latency.
async fn record(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", |m| m.as_str())
        .to_string();
    let response = next.run(req).await;
    state
        .metrics
        .record(&route, response.status().as_u16(), started.elapsed());
    response
}

/// The `/v1` routes want the key, when one is set: `x-api-key: KEY` or
/// `Authorization: Bearer KEY`, compared in constant time.
async fn require_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.settings.api_key {
        if !key_matches(req.headers(), key) {
            return ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "a valid API key is required (x-api-key header or Authorization: Bearer)",
            )
            .into_response();
        }
    }
    next.run(req).await
}

fn key_matches(headers: &HeaderMap, key: &str) -> bool {
    let given = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
        });
    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(key.as_bytes())))
}

/// A request admitted to an image endpoint: its slot, images and options.
struct Accepted {
    slot: Slot,
    upload: Upload,
    options: Options,
    form: input::Form,
    headers: HeaderMap,
}

/// The steps every image endpoint takes, in this order: the form (415) and the declared
/// length (413) from the head, a slot (503), the body read within the limit (413), then the
/// images and options (400).
async fn accept(state: &AppState, req: Request, endpoint: Endpoint) -> Result<Accepted, ApiError> {
    let (parts, body) = req.into_parts();
    let form = input::form_of(&parts.headers)?;
    input::check_declared_length(&parts.headers, state.settings.max_body)?;
    let slot = state.admit()?;
    let bytes = input::read_body(body, state.settings.max_body).await?;
    let headers = parts.headers.clone();
    let mut upload = input::parse(form, parts, bytes).await?;
    let options = Options::parse(std::mem::take(&mut upload.options), endpoint)?;
    Ok(Accepted {
        slot,
        upload,
        options,
        form,
        headers,
    })
}

/// `work` within `--timeout` (504 after it).
async fn within<T>(
    state: &AppState,
    work: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout(state.settings.timeout, work)
        .await
        .unwrap_or_else(|_| Err(ApiError::timeout(state.settings.timeout)))
}

/// The one image of a single-image endpoint.
fn single(upload: Upload, endpoint: Endpoint) -> Result<input::Item, ApiError> {
    let mut items = upload.items;
    match items.len() {
        1 => Ok(items.remove(0)),
        0 => Err(ApiError::bad_request("the request holds no image")),
        n => Err(ApiError::bad_request(format!(
            "{} takes one image and the request holds {n}; /v1/detect/batch takes several",
            endpoint.path()
        ))),
    }
}

/// Milliseconds since `t`.
fn millis(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e6).round() / 1e3
}
