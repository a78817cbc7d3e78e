//! Health, readiness, metrics, the model's description, the OpenAPI document and the page.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const OPENAPI: &str = include_str!("../../assets/openapi.json");
const PAGE: &str = include_str!("../../assets/index.html");
const SCRIPT: &str = include_str!("../../assets/app.js");

/// Alive: the process answers.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Ready: the model is loaded and its self-test passed.
pub async fn readyz(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if state.ready.load(Ordering::SeqCst) {
        Ok(Json(serde_json::json!({ "status": "ready" })))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the model's self-test has not passed",
        ))
    }
}

/// Prometheus text.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(&state.gauges());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The model, its configuration, the version and the limits.
pub async fn info(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let s = &state.settings;
    Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "model": state.model,
        "summary": state.detector.config().summary(),
        "config": state.detector.config(),
        "landmarks": state.detector.config().has_landmarks(),
        "limits": {
            "workers": s.workers,
            "queue": s.queue,
            "max_body": s.max_body,
            "max_image_pixels": s.max_image_pixels,
            "max_batch": s.max_batch,
            "timeout_s": s.timeout.as_secs_f64(),
        },
    }))
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route (see /openapi.json)")
}
