//! What the service answers when it refuses a request: a status and `{"error": "…"}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use retinaface::error::ImageError;

/// A refused request; every one is answered as JSON `{"error": message}`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400: an undecodable image or a bad option.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 413: a body over `--max-body`.
    pub fn too_large(max_body: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {max_body} bytes (--max-body)"),
        )
    }

    /// 503: every worker busy and the queue full.
    pub fn busy() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is busy: every worker is running and the queue is full; retry later",
        )
    }

    /// 504: the request took longer than `--timeout`.
    pub fn timeout(timeout: std::time::Duration) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the request took longer than the limit of {:.3} s (--timeout)",
                timeout.as_secs_f64()
            ),
        )
    }

    /// 500: a bug of ours (a caught panic, a worker gone).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

/// An image the library refused: over the pixel limit (from its header) is 422, anything else
/// about its bytes 400.
impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::TooLarge { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            e => ApiError::bad_request(e.to_string()),
        }
    }
}

impl From<retinaface::Error> for ApiError {
    fn from(e: retinaface::Error) -> Self {
        match e {
            retinaface::Error::Image(e) => e.into(),
            retinaface::Error::InvalidOption(m) => ApiError::bad_request(m),
            e => ApiError::internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
