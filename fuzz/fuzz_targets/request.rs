//! The service's request parsing: a body in each form (raw, multipart, JSON) with a query
//! string, read into images and options as `retinaface serve` reads them, then the options
//! checked for every endpoint. The input is the form (first byte mod 3), the query's length
//! (second byte), the query, then the body; multipart bodies use the boundary `XB`.
#![no_main]
use axum::http::{header, Request};
use libfuzzer_sys::fuzz_target;
use retinaface_serve::input::{self, Form};
use retinaface_serve::options::{Endpoint, Options};
use std::sync::OnceLock;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let (Some(&form), Some(&query_len)) = (data.first(), data.get(1)) else {
        return;
    };
    let rest = &data[2..];
    let (query, body) = rest.split_at(usize::from(query_len).min(rest.len()));
    let (form, kind) = match form % 3 {
        0 => (Form::Raw, "image/jpeg"),
        1 => (Form::Multipart, "multipart/form-data; boundary=XB"),
        _ => (Form::Json, "application/json"),
    };
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    // A query that is not a valid URI tail is refused by the HTTP layer before us.
    let Ok(request) = Request::builder()
        .uri(format!("/v1/detect?{query}"))
        .header(header::CONTENT_TYPE, kind)
        .body(())
    else {
        return;
    };
    let (head, ()) = request.into_parts();
    let body = axum::body::Bytes::copy_from_slice(body);
    let parsed = runtime().block_on(input::parse(form, head, body));
    if let Ok(upload) = parsed {
        for endpoint in [
            Endpoint::Detect,
            Endpoint::Batch,
            Endpoint::Align,
            Endpoint::Anonymize,
        ] {
            if let Ok(options) = Options::parse(upload.options.clone(), endpoint) {
                let _ = options.detection(0.5, 1 << 20);
                let _ = options.mask();
            }
        }
    }
});
