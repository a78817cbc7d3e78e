//! `retinaface serve` against a real HTTP client on loopback: every endpoint and input form,
//! every error status with its JSON error, the limits, the key, and graceful shutdown.

mod common;

use base64::Engine;
use common::{shared, Server};
use reqwest::blocking::{multipart, Client};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A client that opens a connection per request: the server may close a connection after
/// refusing a request whose body it did not read (401, 413), and a pooled client that reused
/// it would see the close as a broken response (it did, once in CI).
fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

fn t1() -> Vec<u8> {
    std::fs::read(shared().join("data/photos/t1.jpg")).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Status and JSON body of a response.
fn json(r: reqwest::blocking::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: not JSON ({e}): {text}"));
    (status, value)
}

/// The error of a refused request, checked to be `{"error": "…"}` with `status`.
fn refused(r: reqwest::blocking::Response, status: u16) -> String {
    let (got, body) = json(r);
    assert_eq!(got, status, "{body}");
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"))
        .to_string()
}

/// A request written by hand: its head, then `body`; the status line read back.
fn raw_request(addr: SocketAddr, head: &str, body: &[u8]) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut status = String::new();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    reader.read_line(&mut status).unwrap();
    (stream, status)
}

/// One whole HTTP/1.1 response (head and a body of its Content-Length) from `stream`.
fn read_response(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&bytes).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                return text;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&bytes).to_string(),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn detect_answers_the_same_faces_as_the_cli_in_every_input_form() {
    let t1 = t1();
    let cli = common::detected_faces(&shared().join("data/photos/t1.jpg"), 0.5);
    assert_eq!(cli.len(), 6);
    let server = Server::start(&[]);
    let c = client();
    let forms = [
        c.post(server.url("/v1/detect"))
            .header("content-type", "image/jpeg")
            .body(t1.clone()),
        c.post(server.url("/v1/detect"))
            .header("content-type", "application/octet-stream")
            .body(t1.clone()),
        c.post(server.url("/v1/detect"))
            .multipart(multipart::Form::new().part("image", multipart::Part::bytes(t1.clone()))),
        c.post(server.url("/v1/detect"))
            .multipart(multipart::Form::new().part(
                "file",
                multipart::Part::bytes(t1.clone()).file_name("t1.jpg"),
            )),
        c.post(server.url("/v1/detect"))
            .json(&serde_json::json!({ "image": b64(&t1) })),
        c.post(server.url("/v1/detect")).json(&serde_json::json!({
            "image": format!("data:image/jpeg;base64,{}", b64(&t1))
        })),
    ];
    for (k, request) in forms.into_iter().enumerate() {
        let (status, answer) = json(request.send().unwrap());
        assert_eq!(status, 200, "form {k}: {answer}");
        assert_eq!(
            (answer["width"].as_u64(), answer["height"].as_u64()),
            (Some(1280), Some(886))
        );
        // The same record, number for number.
        assert_eq!(answer["faces"].as_array().unwrap(), &cli, "form {k}");
        assert!(answer["took_ms"].as_f64().unwrap() > 0.0);
    }

    // Options: in the query, as JSON keys, as multipart fields.
    let all = common::detected_faces(&shared().join("data/photos/t1.jpg"), 0.02);
    assert!(all.len() > 6);
    let (_, q) = json(
        c.post(server.url("/v1/detect?threshold=0.02&landmarks=false"))
            .header("content-type", "image/jpeg")
            .body(t1.clone())
            .send()
            .unwrap(),
    );
    let faces = q["faces"].as_array().unwrap();
    assert_eq!(faces.len(), all.len());
    assert!(faces.iter().all(|f| f.get("landmarks").is_none()));
    let (_, j) = json(
        c.post(server.url("/v1/detect"))
            .json(&serde_json::json!({ "image": b64(&t1), "threshold": 0.02 }))
            .send()
            .unwrap(),
    );
    assert_eq!(j["faces"].as_array().unwrap(), &all);
    let (_, m) = json(
        c.post(server.url("/v1/detect"))
            .multipart(
                multipart::Form::new()
                    .part("image", multipart::Part::bytes(t1.clone()))
                    .text("limit", "2"),
            )
            .send()
            .unwrap(),
    );
    // `limit`: the largest faces first.
    let area = |f: &Value| {
        let b: Vec<f64> = f["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        (b[2] - b[0]) * (b[3] - b[1])
    };
    let mut largest = cli.clone();
    largest.sort_by(|a, b| area(b).total_cmp(&area(a)));
    assert_eq!(m["faces"].as_array().unwrap(), &largest[..2]);

    // Multipart bodies above axum's own 2 MB default are read (the limit is --max-body):
    // a 1000×1000 noise PNG of about 3 MB.
    let mut seed = 1u32;
    let noise = image::RgbImage::from_fn(1000, 1000, |_, _| {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let [a, b, c, _] = seed.to_le_bytes();
        image::Rgb([a, b, c])
    });
    let mut png = std::io::Cursor::new(Vec::new());
    noise.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let png = png.into_inner();
    assert!(png.len() > 2_500_000, "{}", png.len());
    let (status, big) = json(
        c.post(server.url("/v1/detect"))
            .multipart(multipart::Form::new().part("image", multipart::Part::bytes(png)))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "{big}");
    assert_eq!(big["width"], 1000);

    // A photo without faces is no error.
    let mut blank = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(64, 48, image::Rgb([200, 200, 200]))
        .write_to(&mut blank, image::ImageFormat::Png)
        .unwrap();
    let (status, none) = json(
        c.post(server.url("/v1/detect"))
            .header("content-type", "image/png")
            .body(blank.into_inner())
            .send()
            .unwrap(),
    );
    assert_eq!((status, none["faces"].as_array().unwrap().len()), (200, 0));
    assert_eq!(
        (none["width"].as_u64(), none["height"].as_u64()),
        (Some(64), Some(48))
    );
}

#[test]
fn batch_answers_in_order_and_a_bad_item_fails_alone() {
    let t1 = t1();
    let server = Server::start(&["--max-batch", "4"]);
    let c = client();
    let (status, answer) = json(
        c.post(server.url("/v1/detect/batch"))
            .json(&serde_json::json!({
                "images": [b64(&t1), "this is not base64!", b64(b"not an image"), b64(&t1)]
            }))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["ok", "error", "error", "ok"]);
    assert_eq!(results[0]["faces"].as_array().unwrap().len(), 6);
    assert_eq!(results[0], results[3]);
    assert!(results[1]["error"].as_str().unwrap().contains("base64"));
    assert_eq!(results[2]["code"], 400);

    // Several multipart parts.
    let (status, answer) = json(
        c.post(server.url("/v1/detect/batch"))
            .multipart(
                multipart::Form::new()
                    .part(
                        "images",
                        multipart::Part::bytes(t1.clone()).file_name("a.jpg"),
                    )
                    .part(
                        "images",
                        multipart::Part::bytes(b"junk".to_vec()).file_name("b.jpg"),
                    ),
            )
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["faces"].as_array().unwrap().len(), 6);
    assert!(results[1]["error"].as_str().unwrap().contains("b.jpg"));

    // Over --max-batch.
    let five: Vec<String> = (0..5).map(|_| b64(b"x")).collect();
    let e = refused(
        c.post(server.url("/v1/detect/batch"))
            .json(&serde_json::json!({ "images": five }))
            .send()
            .unwrap(),
        400,
    );
    assert!(e.contains("--max-batch"), "{e}");
}

#[test]
fn every_refusal_has_its_status_and_a_json_error() {
    let t1 = t1();
    // t1.jpg is 1280×886 = 1,134,080 pixels; the body limit is its exact size.
    let limit = t1.len().to_string();
    let server = Server::start(&["--max-body", &limit, "--max-image-pixels", "1000000"]);
    let c = client();
    let post = |path: &str, kind: &str, body: Vec<u8>| {
        c.post(server.url(path))
            .header("content-type", kind)
            .body(body)
            .send()
            .unwrap()
    };
    // 415 from the Content-Type alone.
    let e = refused(post("/v1/detect", "text/plain", b"hello".to_vec()), 415);
    assert!(e.contains("text/plain"), "{e}");
    // 400: undecodable image, bad and unknown options, an empty request.
    let e = refused(
        post("/v1/detect", "image/jpeg", b"not a jpeg".to_vec()),
        400,
    );
    assert!(e.contains("image"), "{e}");
    refused(
        post("/v1/detect?threshold=abc", "image/jpeg", t1.clone()),
        400,
    );
    refused(
        post("/v1/detect?threshold=1.5", "image/jpeg", t1.clone()),
        400,
    );
    let e = refused(post("/v1/detect?colour=red", "image/jpeg", t1.clone()), 400);
    assert!(e.contains("colour"), "{e}");
    refused(
        post("/v1/detect", "application/json", b"{\"image\": 3}".to_vec()),
        400,
    );
    refused(post("/v1/detect", "application/json", b"{".to_vec()), 400);
    refused(post("/v1/detect", "application/json", b"{}".to_vec()), 400);
    refused(
        post("/v1/anonymize?mode=swirl", "image/jpeg", t1.clone()),
        400,
    );
    // 422: over --max-image-pixels, from the header.
    let e = refused(post("/v1/detect", "image/jpeg", t1.clone()), 422);
    assert!(e.contains("1280×886"), "{e}");
    // 413: one byte over --max-body; exactly --max-body is read (and then refused for its
    // pixels, which shows it was accepted as a body).
    let mut over = t1.clone();
    over.push(0);
    let e = refused(post("/v1/detect", "image/jpeg", over), 413);
    assert!(e.contains("--max-body"), "{e}");
    refused(post("/v1/detect", "image/jpeg", t1.clone()), 422);
    // 413 is answered from the declared length, before any of the body is sent.
    let head = format!(
        "POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
        t1.len() + 1
    );
    let (_stream, status) = raw_request(server.addr, &head, b"");
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    // 404 is JSON too.
    refused(c.get(server.url("/v1/nothing")).send().unwrap(), 404);
}

#[test]
fn the_key_is_required_on_v1_and_nowhere_else() {
    let t1 = t1();
    let server = Server::start(&["--api-key", "s3cret"]);
    let c = client();
    let detect = || {
        c.post(server.url("/v1/detect"))
            .header("content-type", "image/jpeg")
            .body(t1.clone())
    };
    refused(detect().send().unwrap(), 401);
    refused(detect().header("x-api-key", "wrong").send().unwrap(), 401);
    refused(
        detect()
            .header("authorization", "Bearer s3cre")
            .send()
            .unwrap(),
        401,
    );
    refused(c.get(server.url("/v1/info")).send().unwrap(), 401);
    assert_eq!(
        detect()
            .header("x-api-key", "s3cret")
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        detect()
            .header("authorization", "Bearer s3cret")
            .send()
            .unwrap()
            .status(),
        200
    );
    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/"] {
        assert_eq!(
            c.get(server.url(open)).send().unwrap().status(),
            200,
            "{open}"
        );
    }
}

#[test]
fn align_and_anonymize_answer_crops_and_the_photo() {
    let t1 = t1();
    let server = Server::start(&[]);
    let c = client();
    let (status, answer) = json(
        c.post(server.url("/v1/align?size=112"))
            .header("content-type", "image/jpeg")
            .body(t1.clone())
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "{answer}");
    let faces = answer["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 6);
    for f in faces {
        let png = base64::engine::general_purpose::STANDARD
            .decode(f["crop"].as_str().unwrap())
            .unwrap();
        let crop = image::load_from_memory(&png).unwrap();
        assert_eq!((crop.width(), crop.height()), (112, 112));
        assert_eq!(f["matrix"].as_array().unwrap().len(), 2);
    }
    // Without landmarks in the answer, every face is still aligned (with its landmarks).
    let (_, bare) = json(
        c.post(server.url("/v1/align?landmarks=false"))
            .header("content-type", "image/jpeg")
            .body(t1.clone())
            .send()
            .unwrap(),
    );
    let bare = bare["faces"].as_array().unwrap();
    assert_eq!(bare.len(), 6);
    for (b, f) in bare.iter().zip(faces) {
        assert!(b.get("landmarks").is_none());
        assert_eq!((&b["crop"], &b["matrix"]), (&f["crop"], &f["matrix"]));
    }
    // The ZIP: six crops and faces.json.
    let zip = c
        .post(server.url("/v1/align"))
        .header("content-type", "image/jpeg")
        .header("accept", "application/zip")
        .body(t1.clone())
        .send()
        .unwrap();
    assert_eq!(zip.headers()["content-type"], "application/zip");
    let bytes = zip.bytes().unwrap();
    // Local file headers ("PK\x03\x04"): six PNGs and the JSON.
    let entries = bytes.windows(4).filter(|w| w == b"PK\x03\x04").count();
    assert_eq!(entries, 7);

    // Anonymize: a JPEG of the same size, six faces hidden, no longer detected.
    let r = c
        .post(server.url("/v1/anonymize?mode=solid"))
        .header("content-type", "image/jpeg")
        .body(t1.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(r.headers()["x-faces"], "6");
    let out = r.bytes().unwrap().to_vec();
    let img = image::load_from_memory(&out).unwrap();
    assert_eq!((img.width(), img.height()), (1280, 886));
    let (_, again) = json(
        c.post(server.url("/v1/detect"))
            .header("content-type", "image/jpeg")
            .body(out)
            .send()
            .unwrap(),
    );
    assert_eq!(again["faces"].as_array().unwrap().len(), 0, "{again}");
    // JSON in, JSON out.
    let (status, answer) = json(
        c.post(server.url("/v1/anonymize"))
            .json(&serde_json::json!({ "image": b64(&t1), "mode": "pixelate" }))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200);
    assert_eq!(answer["content_type"], "image/jpeg");
    assert_eq!(answer["faces"].as_array().unwrap().len(), 6);
}

/// Wait until the server has admitted `n` requests (its `retinaface_in_flight` gauge).
fn wait_in_flight(c: &Client, server: &Server, n: usize) {
    let line = format!("retinaface_in_flight {n}\n");
    let started = std::time::Instant::now();
    while !c
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
        .contains(&line)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never {n} in flight"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_full_queue_is_503_a_late_request_504_and_shutdown_finishes_what_runs() {
    let t1 = t1();
    let server = Server::start(&["--workers", "1", "--queue", "0"]);
    let c = client();
    let head = format!(
        "POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
        t1.len()
    );
    // A request whose body is still arriving holds the only slot.
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.write_all(head.as_bytes()).unwrap();
    slow.write_all(&t1[..1000]).unwrap();
    wait_in_flight(&c, &server, 1);
    let r = c
        .post(server.url("/v1/detect"))
        .header("content-type", "image/jpeg")
        .body(t1.clone())
        .send()
        .unwrap();
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let e = refused(r, 503);
    assert!(e.contains("busy"), "{e}");
    // The slow request, once its body is in, is answered.
    slow.write_all(&t1[1000..]).unwrap();
    let answer = read_response(&mut slow);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Past --timeout: 504, and the slot is freed.
    let hasty = Server::start(&["--workers", "1", "--queue", "0", "--timeout", "1s"]);
    let mut slow = TcpStream::connect(hasty.addr).unwrap();
    slow.write_all(head.as_bytes()).unwrap();
    slow.write_all(&t1[..1000]).unwrap();
    let answer = read_response(&mut slow);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains("--timeout"), "{answer}");
    wait_in_flight(&c, &hasty, 0);
    let metrics = c.get(hasty.url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains("retinaface_requests_total{route=\"/v1/detect\",status=\"504\"} 1"),
        "{metrics}"
    );
    drop(hasty);

    // The slot is free again.
    assert_eq!(
        c.post(server.url("/v1/detect"))
            .header("content-type", "image/jpeg")
            .body(t1.clone())
            .send()
            .unwrap()
            .status(),
        200
    );
    wait_in_flight(&c, &server, 0);
    let metrics = c
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for line in [
        "retinaface_requests_total{route=\"/v1/detect\",status=\"503\"} 1",
        "retinaface_requests_total{route=\"/v1/detect\",status=\"200\"} 2",
        "retinaface_images_total 2",
        "retinaface_faces_total 12",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    assert!(metrics.contains("process_resident_memory_bytes "));

    // SIGTERM while a request is in flight: it is answered, then the server exits.
    let mut server = server;
    let mut in_flight = TcpStream::connect(server.addr).unwrap();
    in_flight.write_all(head.as_bytes()).unwrap();
    in_flight.write_all(&t1[..1000]).unwrap();
    wait_in_flight(&c, &server, 1);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(200));
    in_flight.write_all(&t1[1000..]).unwrap();
    let answer = read_response(&mut in_flight);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn health_info_openapi_and_the_page() {
    let server = Server::start(&[]);
    let c = client();
    let (status, ready) = json(c.get(server.url("/readyz")).send().unwrap());
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    let (_, health) = json(c.get(server.url("/healthz")).send().unwrap());
    assert_eq!(health["status"], "ok");
    let (_, info) = json(c.get(server.url("/v1/info")).send().unwrap());
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["landmarks"], true);
    assert_eq!(info["limits"]["queue"], 64);
    assert_eq!(info["limits"]["max_body"], 20_000_000);
    // Every documented path is served.
    let (_, doc) = json(c.get(server.url("/openapi.json")).send().unwrap());
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    for (path, item) in doc["paths"].as_object().unwrap() {
        let method = item.as_object().unwrap().keys().next().unwrap().clone();
        let r = match method.as_str() {
            "get" => c.get(server.url(path)).send().unwrap(),
            _ => c
                .post(server.url(path))
                .header("content-type", "image/png")
                .body(Vec::<u8>::new())
                .send()
                .unwrap(),
        };
        assert_ne!(r.status().as_u16(), 404, "{method} {path}");
    }
    let page = c.get(server.url("/")).send().unwrap().text().unwrap();
    assert!(page.contains("<script src=\"/app.js\">"));
    let script = c.get(server.url("/app.js")).send().unwrap();
    assert!(script.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(script.text().unwrap().contains("/v1/detect"));
}
