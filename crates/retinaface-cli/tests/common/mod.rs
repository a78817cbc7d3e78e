//! Helpers shared by the CLI's integration tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// `../shared` beside the repository; tests fail (never skip) when it is missing.
pub fn shared() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    assert!(
        p.join("data").is_dir(),
        "../shared is missing at {}",
        p.display()
    );
    p
}

/// A fresh, empty folder for one test (named after the test binary, the case and the process).
pub fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "retinaface-{}-{name}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Run the binary (with the embedded model, whatever the environment says), any exit status.
pub fn retinaface(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_retinaface"))
        .args(args)
        .env_remove("RETINAFACE_MODEL")
        .output()
        .unwrap()
}

/// Run the binary as [`retinaface`] does; the test fails with its stderr unless it succeeds.
pub fn succeed(args: &[&str]) -> std::process::Output {
    let out = retinaface(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The faces `detect` finds above `threshold` in one photo (its JSON record's `faces`).
pub fn detected_faces(path: &Path, threshold: f32) -> Vec<serde_json::Value> {
    let out = retinaface(&[
        "detect",
        s(path),
        "--threshold",
        &threshold.to_string(),
        "--json",
        "-",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json[0]["faces"].as_array().unwrap().clone()
}

/// A server started with `flags` on a free port; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start(flags: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_retinaface"))
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(flags)
            .env_remove("RETINAFACE_MODEL")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the server stopped before listening")
                .unwrap();
            if let Some(rest) = line.strip_prefix("listening on http://") {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
