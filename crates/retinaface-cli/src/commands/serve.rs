//! `retinaface serve`: the HTTP service (see the `retinaface-serve` crate).

use crate::model::{parse_pixels, ModelArgs};
use anyhow::{Context, Result};
use retinaface_serve::{parse_duration, parse_size, Settings};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Weights file (ONNX, PyTorch .pth or safetensors); default: $RETINAFACE_MODEL, else the
    /// embedded MobileNet-0.25.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Detections run at once (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Requests that may wait beyond the running ones; one more is answered 503.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Largest request body (20MB, 512KiB, 1000000); a larger one is answered 413 unread.
    #[arg(long, value_parser = parse_size, default_value = "20MB")]
    max_body: usize,
    /// Largest decoded image, in pixels (100M, 1e8); a larger one is answered 422 before
    /// decoding.
    #[arg(long, value_name = "PIXELS", value_parser = parse_pixels, default_value = "100M")]
    max_image_pixels: u64,
    /// Longest a request may take (30s, 500ms, 2m); 504 after it.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    timeout: Duration,
    /// Most images in one `/v1/detect/batch` request.
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// Require this key on the /v1 routes (x-api-key or Authorization: Bearer).
    #[arg(long, conflicts_with = "api_key_file")]
    api_key: Option<String>,
    /// Require the key in this file (its first line) on the /v1 routes.
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// Ask the server at --addr for /healthz and exit 0 when it answers 200 (a container's
    /// health check, with no HTTP client in the image).
    #[arg(long)]
    healthcheck: bool,
}

/// GET /healthz at `addr` (0.0.0.0 and [::] mean this machine): whether it answers 200.
fn healthcheck(addr: SocketAddr) -> Result<ExitCode> {
    use std::io::{Read, Write};
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let limit = Duration::from_secs(5);
    let mut stream = std::net::TcpStream::connect_timeout(&target, limit)
        .with_context(|| format!("cannot connect to {target}"))?;
    stream.set_read_timeout(Some(limit))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    if head.starts_with(b"HTTP/1.1 200") {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{target}: {}", String::from_utf8_lossy(&head));
        Ok(ExitCode::from(1))
    }
}

pub fn run(a: Args) -> Result<ExitCode> {
    if a.healthcheck {
        return healthcheck(a.addr);
    }
    let api_key = match (&a.api_key, &a.api_key_file) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the API key file {}", path.display()))?;
            let key = text.lines().next().unwrap_or("").trim().to_string();
            if key.is_empty() {
                anyhow::bail!("the API key file {} is empty", path.display());
            }
            Some(key)
        }
        (None, None) => None,
    };
    let defaults = Settings::default();
    let settings = Settings {
        addr: a.addr,
        workers: a.workers.unwrap_or(defaults.workers),
        queue: a.queue,
        max_body: a.max_body,
        max_image_pixels: a.max_image_pixels,
        timeout: a.timeout,
        api_key,
        max_batch: a.max_batch,
    };
    settings.validate().map_err(anyhow::Error::msg)?;
    let model = ModelArgs {
        model: a.model,
        threads: None,
        max_image_pixels: a.max_image_pixels,
        max_side: None,
    };
    let name = model
        .path()
        .map_or("embedded MobileNet-0.25".to_string(), |p| {
            p.display().to_string()
        });
    // Each worker's layers run on the process's thread pool, one thread per core.
    let detector = model.load_with_threads(0)?;
    let workers = settings.workers;
    retinaface_serve::run(settings, detector, name, |addr| {
        eprintln!("listening on http://{addr} ({workers} workers)");
    })?;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}
