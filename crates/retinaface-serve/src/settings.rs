//! The service's settings, and the parsers of the sizes and durations its flags take.

use std::net::SocketAddr;
use std::time::Duration;

/// Everything `retinaface serve` is started with; [`Settings::default`] is the CLI's defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen (port 0: any free port; the bound address is reported).
    pub addr: SocketAddr,
    /// Detections run on this many threads at once.
    pub workers: usize,
    /// Requests admitted beyond the running ones; one more is answered 503.
    pub queue: usize,
    /// Largest request body in bytes; a larger one is answered 413 unread.
    pub max_body: usize,
    /// Largest decoded image (width × height); a larger one is answered 422 before decoding.
    pub max_image_pixels: u64,
    /// Longest a request may take from admission to answer (504 after it).
    pub timeout: Duration,
    /// Key the `/v1` routes require, if any.
    pub api_key: Option<String>,
    /// Most images in one batch request.
    pub max_batch: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            queue: 64,
            max_body: 20_000_000,
            max_image_pixels: retinaface::input::DEFAULT_MAX_PIXELS,
            timeout: Duration::from_secs(30),
            api_key: None,
            max_batch: 32,
        }
    }
}

impl Settings {
    /// Refuse settings the service cannot run with.
    pub fn validate(&self) -> Result<(), String> {
        if self.workers == 0 {
            return Err("--workers must be at least 1".into());
        }
        if self.max_body == 0 {
            return Err("--max-body must be at least 1 byte".into());
        }
        if self.max_batch == 0 {
            return Err("--max-batch must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be positive".into());
        }
        if self.api_key.as_deref().is_some_and(str::is_empty) {
            return Err("the API key is empty".into());
        }
        Ok(())
    }
}

/// A size in bytes: `20000000`, `20MB`, `20MiB`, `512KB`, `1.5GB` (KB, MB, GB are powers of
/// 1000; KiB, MiB, GiB of 1024; `B` and lower case accepted).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let factor: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "'{text}': unknown unit (B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}': expected a size such as 20MB, 512KiB or 1000000"))?;
    let bytes = (value * factor).round();
    if !(1.0..=1e12).contains(&bytes) {
        return Err(format!("'{text}': expected between 1 byte and 1 TB"));
    }
    Ok(bytes as usize)
}

/// A duration: `30s`, `500ms`, `2m`, or plain seconds (`30`, `0.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, factor) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}': expected a duration such as 30s, 500ms or 2m"))?;
    let secs = value * factor;
    if !(0.001..=86_400.0).contains(&secs) {
        return Err(format!("'{text}': expected between 1 ms and a day"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("20MB"), Ok(20_000_000));
        assert_eq!(parse_size("20 mb"), Ok(20_000_000));
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_size("512KiB"), Ok(524_288));
        assert_eq!(parse_size("2KB"), Ok(2000));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("12345"), Ok(12345));
        assert_eq!(parse_size("12345B"), Ok(12345));
        for bad in ["", "MB", "20XB", "-5", "0", "1e3", "20 M B"] {
            assert!(parse_size(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["", "s", "0", "-1s", "abc", "1h"] {
            assert!(parse_duration(bad).is_err(), "{bad} was accepted");
        }
    }
}
