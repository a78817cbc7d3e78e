//! The service's web page in headless Chromium, driven over WebDriver by chromedriver
//! (Debian's `chromium` and `chromium-driver`, which `.ci/run` installs): a photo chosen in
//! the page is detected and drawn, its faces listed, and its anonymised copy shown.

mod common;

use common::{shared, Server};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver on a free port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(tool).exists(),
                "{tool} is missing: install Debian's chromium and chromium-driver (.ci/run does)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session.
struct Session<'a> {
    http: Client,
    base: String,
    _driver: &'a Driver,
}

impl<'a> Session<'a> {
    fn new(driver: &'a Driver) -> Session<'a> {
        let http = Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        // As root Chromium needs --no-sandbox; the background services would try the network.
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1400,1200"]
            }
        }}});
        let answer: Value = http
            .post(format!("{}/session", driver.url))
            .json(&capabilities)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_string();
        Session {
            http,
            base: format!("{}/session/{id}", driver.url),
            _driver: driver,
        }
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let answer: Value = request.send().unwrap().json().unwrap();
        assert!(
            answer["value"].get("error").is_none(),
            "{method} {path}: {answer}"
        );
        answer["value"].clone()
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    fn script(&self, code: &str) -> Value {
        self.call("POST", "/execute/sync", json!({"script": code, "args": []}))
    }

    /// Wait until `code` returns true (the page works asynchronously).
    fn wait_for(&self, code: &str, what: &str) {
        let started = Instant::now();
        while self.script(code) != Value::Bool(true) {
            let status = self.script("return document.getElementById('status').textContent");
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{what}: still not there; the page says {status}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self.http.delete(&self.base).send();
    }
}

#[test]
fn the_page_draws_and_lists_the_faces_of_a_chosen_photo_and_anonymises_it() {
    let server = Server::start(&[]);
    let driver = Driver::start();
    let session = Session::new(&driver);
    session.call("POST", "/url", json!({"url": server.url("/")}));
    // Choosing the file in the page's file input uploads it.
    let input = session.find("#file");
    let photo = shared().join("data/photos/t1.jpg").canonicalize().unwrap();
    session.call(
        "POST",
        &format!("/element/{input}/value"),
        json!({"text": photo.to_str().unwrap()}),
    );
    session.wait_for(
        "return document.querySelectorAll('#faces li').length > 0",
        "the list of faces",
    );
    let listed = session.script("return document.querySelectorAll('#faces li').length");
    assert_eq!(listed, json!(6));
    let status = session.script("return document.getElementById('status').textContent");
    assert!(status.as_str().unwrap().starts_with("6 faces"), "{status}");
    // The drawing: the photo at its size, with green box pixels where the first face's box is.
    let drawn = session.script(
        "const c = document.getElementById('canvas');
         return [c.hidden, c.width, c.height]",
    );
    assert_eq!(drawn, json!([false, 1280, 886]));
    let first = session.script("return document.querySelector('#faces li').textContent");
    // The first listed face is the CLI's first face, rounded as the page writes it.
    let cli = common::detected_faces(&photo, 0.5);
    let b: Vec<i64> = cli[0]["box"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap().round() as i64)
        .collect();
    let expected = format!(
        "score {:.3}  box ({}, {})–({}, {})",
        cli[0]["score"].as_f64().unwrap(),
        b[0],
        b[1],
        b[2],
        b[3]
    );
    assert_eq!(first.as_str().unwrap(), expected);

    // Switch to the anonymised copy.
    let toggle = session.find("#show-anonymized");
    session.call("POST", &format!("/element/{toggle}/click"), json!({}));
    session.wait_for(
        "const i = document.getElementById('anonymized');
         return !i.hidden && i.complete && i.naturalWidth === 1280",
        "the anonymised photo",
    );
    let status = session.script("return document.getElementById('status').textContent");
    assert_eq!(status, json!("6 face(s) hidden"));
    let download = session
        .script("const a = document.getElementById('download'); return [a.hidden, a.download]");
    assert_eq!(download, json!([false, "anonymized-t1.jpg"]));
}
