//! Counters for `GET /metrics`, written in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Everything `/metrics` reports (gauges of the pool are read from it when asked).
#[derive(Default)]
pub struct Metrics {
    /// Requests by (route, status).
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Latency histogram by route: bucket counts (cumulative when written), sum, count.
    latency: Mutex<BTreeMap<String, Histogram>>,
    /// Images decoded and detected (a batch counts each of its images).
    pub images: AtomicU64,
    /// Faces answered.
    pub faces: AtomicU64,
}

#[derive(Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// The pool's gauges at the time of the scrape.
pub struct Gauges {
    pub queued: usize,
    pub in_flight: usize,
    pub workers: usize,
    pub queue_capacity: usize,
}

impl Metrics {
    /// One answered request.
    pub fn record(&self, route: &str, status: u16, took: Duration) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((route.to_string(), status)).or_default() += 1;
        }
        if let Ok(mut l) = self.latency.lock() {
            let h = l.entry(route.to_string()).or_default();
            let s = took.as_secs_f64();
            if let Some(k) = BUCKETS.iter().position(|&b| s <= b) {
                h.buckets[k] += 1;
            }
            h.sum += s;
            h.count += 1;
        }
    }

    /// The text `/metrics` answers.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP retinaface_requests_total Requests answered, by route and status.\n\
             # TYPE retinaface_requests_total counter"
        );
        if let Ok(r) = self.requests.lock() {
            for ((route, status), n) in r.iter() {
                let _ = writeln!(
                    out,
                    "retinaface_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP retinaface_request_duration_seconds Time from a request's arrival to its answer.\n\
             # TYPE retinaface_request_duration_seconds histogram"
        );
        if let Ok(l) = self.latency.lock() {
            for (route, h) in l.iter() {
                let mut cumulative = 0;
                for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                    cumulative += n;
                    let _ = writeln!(
                        out,
                        "retinaface_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    out,
                    "retinaface_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n\
                     retinaface_request_duration_seconds_sum{{route=\"{route}\"}} {}\n\
                     retinaface_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    h.count, h.sum, h.count
                );
            }
        }
        let gauges = [
            (
                "queue_depth",
                "Admitted requests waiting for a worker.",
                g.queued as u64,
            ),
            (
                "in_flight",
                "Requests admitted and not yet answered.",
                g.in_flight as u64,
            ),
            ("workers", "Detection workers.", g.workers as u64),
            (
                "queue_capacity",
                "Requests that may wait beyond the running ones.",
                g.queue_capacity as u64,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP retinaface_{name} {help}\n# TYPE retinaface_{name} gauge\nretinaface_{name} {v}"
            );
        }
        for (name, help, v) in [
            ("images_total", "Images decoded and detected.", &self.images),
            ("faces_total", "Faces answered.", &self.faces),
        ] {
            let _ = writeln!(
                out,
                "# HELP retinaface_{name} {help}\n# TYPE retinaface_{name} counter\nretinaface_{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        if let Some(rss) = resident_bytes() {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory of the process.\n\
                 # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
            );
        }
        out
    }
}

/// The process's resident memory (Linux: /proc/self/statm), if known.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}
