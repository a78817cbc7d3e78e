//! A request's images and options: the body's form decided by its Content-Type before it is
//! read, its length checked against `--max-body` before it is read and while it is, then the
//! images (raw bytes, multipart parts or base64 in JSON) and the options (query string,
//! multipart text fields or JSON keys).

use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use base64::Engine;
use http_body_util::BodyExt;
use serde_json::{Map, Value};

/// How the body carries its images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The body is the image (`image/*`, `application/octet-stream`).
    Raw,
    /// `multipart/form-data`: parts named `image`/`file` (`images`/`files`), or any part
    /// with a file name; other parts are options.
    Multipart,
    /// `application/json`: `{"image": "<base64>"}` or `{"images": [...]}`, and options.
    Json,
}

/// The form of a body from its Content-Type; anything else is 415.
pub fn form_of(headers: &HeaderMap) -> Result<Form, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "no Content-Type: send the image as image/* or application/octet-stream, \
             multipart/form-data, or application/json",
        ));
    };
    let text = value.to_str().unwrap_or("").to_ascii_lowercase();
    let mime = text.split(';').next().unwrap_or("").trim();
    if mime.starts_with("image/") || mime == "application/octet-stream" {
        Ok(Form::Raw)
    } else if mime == "multipart/form-data" {
        Ok(Form::Multipart)
    } else if mime == "application/json" {
        Ok(Form::Json)
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type '{mime}' is not accepted: send the image as image/* or \
                 application/octet-stream, multipart/form-data, or application/json"
            ),
        ))
    }
}

/// 413 when the declared length is over `max` (the body is then never read).
pub fn check_declared_length(headers: &HeaderMap, max: usize) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > max as u64 => Err(ApiError::too_large(max)),
        _ => Ok(()),
    }
}

/// Read a body of at most `max` bytes; a longer one (chunked, or lying about its length) is
/// 413 as soon as it passes the limit.
pub async fn read_body(mut body: Body, max: usize) -> Result<Bytes, ApiError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > max {
                return Err(ApiError::too_large(max));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(out))
}

/// One image of a request: its name in errors (`image`, `images[2]`, a part's file name) and
/// its bytes, or why they could not be had (bad base64): in a batch that fails only it.
pub struct Item {
    pub name: String,
    pub bytes: Result<Bytes, ApiError>,
}

/// The images and options of a request.
pub struct Upload {
    pub items: Vec<Item>,
    pub options: Map<String, Value>,
}

/// The images and options of a body already read; `head` is the request's head (its
/// headers, query string and the router's extensions, which lift axum's own 2 MB default
/// limit on multipart bodies: ours, `--max-body`, was applied while reading).
pub async fn parse(form: Form, head: Parts, bytes: Bytes) -> Result<Upload, ApiError> {
    let mut options = query_options(head.uri.query())?;
    let items = match form {
        Form::Raw => vec![Item {
            name: "image".into(),
            bytes: Ok(bytes),
        }],
        Form::Json => {
            let value: Value = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
            let Value::Object(mut map) = value else {
                return Err(ApiError::bad_request(
                    "the JSON body must be an object: {\"image\": \"<base64>\", …}",
                ));
            };
            let items = json_items(&mut map)?;
            options.extend(map);
            items
        }
        Form::Multipart => multipart_items(head, bytes, &mut options).await?,
    };
    Ok(Upload { items, options })
}

/// Options of the query string, each value read as JSON where it is (numbers, booleans) and
/// as a string otherwise.
fn query_options(query: Option<&str>) -> Result<Map<String, Value>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    Ok(pairs
        .into_iter()
        .map(|(k, v)| {
            let value = option_value(&v);
            (k, value)
        })
        .collect())
}

/// A text option as JSON: `0.5` → number, `true` → boolean, anything else → string.
fn option_value(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
        _ => Value::String(text.to_string()),
    }
}

/// `image` or `images` taken out of a JSON body.
fn json_items(map: &mut Map<String, Value>) -> Result<Vec<Item>, ApiError> {
    let mut items = Vec::new();
    match (map.remove("image"), map.remove("images")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give either \"image\" or \"images\", not both",
            ))
        }
        (Some(Value::String(s)), None) => items.push(Item {
            name: "image".into(),
            bytes: decode_base64(&s),
        }),
        (Some(_), None) => return Err(ApiError::bad_request("\"image\" must be a base64 string")),
        (None, Some(Value::Array(list))) => {
            for (k, v) in list.into_iter().enumerate() {
                let name = format!("images[{k}]");
                let bytes = match v {
                    Value::String(s) => decode_base64(&s),
                    _ => Err(ApiError::bad_request(format!(
                        "{name} must be a base64 string"
                    ))),
                };
                items.push(Item { name, bytes });
            }
        }
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "\"images\" must be a list of base64 strings",
            ))
        }
        (None, None) => {}
    }
    Ok(items)
}

/// Standard base64 (padding optional), also as a data URL (`data:image/png;base64,…`).
fn decode_base64(text: &str) -> Result<Bytes, ApiError> {
    let payload = match text.strip_prefix("data:") {
        Some(rest) => rest.split_once(',').map_or(rest, |(_, data)| data),
        None => text,
    };
    let cleaned: String = payload.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(cleaned.trim_end_matches('='))
        .map(Bytes::from)
        .map_err(|e| ApiError::bad_request(format!("the image is not valid base64: {e}")))
}

/// The image parts and the text options of a multipart body.
async fn multipart_items(
    head: Parts,
    bytes: Bytes,
    options: &mut Map<String, Value>,
) -> Result<Vec<Item>, ApiError> {
    let request = Request::from_parts(head, Body::from(bytes));
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("bad multipart body: {}", e.body_text())))?;
    let mut items = Vec::new();
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| ApiError::bad_request(format!("bad multipart body: {}", e.body_text())))?;
        let Some(field) = field else { break };
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(str::to_string);
        let data = field
            .bytes()
            .await
            .map_err(|e| ApiError::bad_request(format!("bad multipart body: {}", e.body_text())))?;
        if matches!(name.as_str(), "image" | "file" | "images" | "files") || file_name.is_some() {
            items.push(Item {
                name: file_name.unwrap_or_else(|| format!("part {}", items.len())),
                bytes: Ok(data),
            });
        } else {
            let text = std::str::from_utf8(&data).map_err(|_| {
                ApiError::bad_request(format!("the multipart field '{name}' is not text"))
            })?;
            options.insert(name, option_value(text.trim()));
        }
    }
    Ok(items)
}
