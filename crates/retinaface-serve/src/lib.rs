//! `retinaface serve`: face detection, alignment and anonymisation over HTTP, with a web page.
//!
//! axum on tokio answers; detections run on a fixed set of worker threads behind a bounded
//! admission ([`state`]), so neither the queue nor the memory grows with the load: a request
//! that finds every slot taken is answered 503 at once. The library stays free of async code;
//! this crate is the only one that links tokio and axum.

pub mod error;
pub mod input;
pub mod metrics;
pub mod options;
mod routes;
pub mod settings;
pub mod state;

pub use error::ApiError;
pub use routes::router;
pub use settings::{parse_duration, parse_size, Settings};
pub use state::AppState;

use retinaface::{DetectOptions, Detector};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid setting: {0}")]
    Settings(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the model's self-test failed: {0}")]
    SelfTest(String),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Serve until SIGINT or SIGTERM, then finish the requests in flight. `model` names the
/// weights in `/v1/info`; `on_ready` is told the bound address (port 0 picks a free one).
pub fn run(
    settings: Settings,
    detector: Detector,
    model: String,
    on_ready: impl FnOnce(std::net::SocketAddr),
) -> Result<(), ServeError> {
    settings.validate().map_err(ServeError::Settings)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("retinaface-http")
        .build()?;
    runtime.block_on(async move {
        let addr = settings.addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let state = AppState::new(detector, model, settings);
        self_test(&state).await?;
        state.ready.store(true, Ordering::SeqCst);
        on_ready(listener.local_addr()?);
        serve(listener, state, shutdown_signal()).await
    })
}

/// Serve on `listener` until `shutdown` completes, then finish the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let app = router(state.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    state.close();
    Ok(())
}

/// The readiness check: one detection through a worker on a built-in 320×240 image (a
/// smooth pattern, no photo: the repository embeds no photo of a person), keeping every
/// candidate; it passes when the network runs and every box and score it yields is finite.
pub async fn self_test(state: &AppState) -> Result<(), ServeError> {
    let slot = state.admit().map_err(|e| ServeError::SelfTest(e.message))?;
    let faces = state
        .run(slot, |detector| {
            let img = image::RgbImage::from_fn(320, 240, |x, y| {
                image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
            });
            let options = DetectOptions {
                threshold: 0.0,
                ..DetectOptions::default()
            };
            Ok(detector.detect(&img, &options)?)
        })
        .await
        .map_err(|e| ServeError::SelfTest(e.message))?;
    let finite = faces
        .iter()
        .all(|f| f.score.is_finite() && f.bbox.iter().all(|v| v.is_finite()));
    if faces.is_empty() || !finite {
        return Err(ServeError::SelfTest(format!(
            "{} candidates, finite: {finite}",
            faces.len()
        )));
    }
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
}
