//! Prediction folders in the official text format: `<dir>/<event>/<image>.txt` holding the
//! image name, the number of detections, then one `x y w h score` line per detection.

use super::WiderError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One detection as the prediction files hold it: box `x y w h` (pixels) and a score in any
/// range (the evaluation normalises scores over the whole run).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WiderDetection {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
    /// Confidence, any finite value.
    pub score: f64,
}

/// A prediction set: per event, per image name (the file stem), the detections in file order.
///
/// An image without a file has no detections. Build one programmatically with
/// [`Predictions::insert`], or read a folder with [`Predictions::load`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Predictions {
    /// The folder the predictions were read from, for error messages.
    pub root: Option<PathBuf>,
    /// Event name → image name → detections.
    pub events: BTreeMap<String, BTreeMap<String, Vec<WiderDetection>>>,
}

impl Predictions {
    /// An empty prediction set.
    pub fn new() -> Predictions {
        Predictions::default()
    }

    /// Sets (replaces) the detections of one image.
    pub fn insert(&mut self, event: &str, image: &str, detections: Vec<WiderDetection>) {
        self.events
            .entry(event.to_string())
            .or_default()
            .insert(image.to_string(), detections);
    }

    /// Adds an event folder without any prediction file.
    pub fn insert_event(&mut self, event: &str) {
        self.events.entry(event.to_string()).or_default();
    }

    /// The detections of one image, if it has a file.
    pub fn get(&self, event: &str, image: &str) -> Option<&[WiderDetection]> {
        self.events.get(event)?.get(image).map(Vec::as_slice)
    }

    /// Total number of detections.
    pub fn detection_count(&self) -> usize {
        self.events
            .values()
            .flat_map(|e| e.values())
            .map(Vec::len)
            .sum()
    }

    /// Reads every `<event>/<image>.txt` under `dir`, as `wider_eval.py` does: each
    /// sub-folder is an event, each `*.txt` file in it one image (named by its file stem);
    /// other files are passed over.
    pub fn load(dir: &Path) -> Result<Predictions, WiderError> {
        let mut preds = Predictions {
            root: Some(dir.to_path_buf()),
            events: BTreeMap::new(),
        };
        for entry in sorted_entries(dir)? {
            if !entry.is_dir() {
                continue;
            }
            let event = utf8_name(&entry)?;
            let mut images = BTreeMap::new();
            for file in sorted_entries(&entry)? {
                let name = utf8_name(&file)?;
                let Some(stem) = name.strip_suffix(".txt") else {
                    continue;
                };
                if !file.is_file() {
                    continue;
                }
                images.insert(stem.to_string(), parse_prediction_file(&file)?);
            }
            preds.events.insert(event, images);
        }
        Ok(preds)
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, WiderError> {
    let io = |source| WiderError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        out.push(entry.map_err(io)?.path());
    }
    out.sort();
    Ok(out)
}

fn utf8_name(path: &Path) -> Result<String, WiderError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| WiderError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "file name is not UTF-8"),
        })
}

/// Reads one prediction file.
pub fn parse_prediction_file(path: &Path) -> Result<Vec<WiderDetection>, WiderError> {
    let bytes = std::fs::read(path).map_err(|source| WiderError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| WiderError::Line {
        path: path.to_path_buf(),
        line: 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
        reason: "not UTF-8 text".into(),
    })?;
    parse_prediction_text(&text, path)
}

/// Parses the text of one prediction file; `path` only names it in errors.
///
/// Follows `wider_eval.py`: leading and trailing blank lines are dropped, the first line is
/// the image name and the second the count (neither is used: the rows are what counts), and
/// every further non-blank line is `x y w h score` (extra columns ignored). `\n`, `\r\n` and
/// `\r` all end lines. Unlike the reference, a count line that holds several numbers is an
/// error, as it means the header is missing and the reference would silently drop a row.
pub fn parse_prediction_text(text: &str, path: &Path) -> Result<Vec<WiderDetection>, WiderError> {
    let err = |line: usize, reason: String| WiderError::Line {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut lines = universal_lines(text)
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .skip_while(|(_, l)| l.trim().is_empty());
    let Some((name_no, name)) = lines.next() else {
        return Ok(Vec::new());
    };
    let name_tokens: Vec<&str> = name.split_whitespace().collect();
    if name_tokens.len() >= 5 && name_tokens.iter().all(|t| t.parse::<f64>().is_ok()) {
        return Err(err(
            name_no,
            "expected the image name, found a detection (each file starts with the image name \
             and the number of detections)"
                .into(),
        ));
    }
    if let Some((count_no, count)) = lines.next() {
        let tokens: Vec<&str> = count.split_whitespace().collect();
        match tokens.as_slice() {
            [] => {}
            [t] if t.parse::<f64>().is_ok_and(|n| n >= 0.0 && n.fract() == 0.0) => {}
            [t] => {
                return Err(err(
                    count_no,
                    format!("expected the number of detections, found '{t}'"),
                ))
            }
            _ => {
                return Err(err(
                    count_no,
                    format!(
                        "expected the number of detections, found {} values (is the count line \
                         missing?)",
                        tokens.len()
                    ),
                ))
            }
        }
    }
    let mut dets = Vec::new();
    for (no, line) in lines {
        let mut tokens = line.split_whitespace();
        let mut v = [0.0f64; 5];
        let mut n = 0;
        for slot in &mut v {
            let Some(t) = tokens.next() else { break };
            *slot = match t.parse::<f64>() {
                Ok(x) if x.is_finite() => x,
                Ok(_) => return Err(err(no, format!("'{t}' is not a finite number"))),
                Err(_) => return Err(err(no, format!("'{t}' is not a number"))),
            };
            n += 1;
        }
        match n {
            0 => continue,
            5 => {}
            _ => {
                return Err(err(
                    no,
                    format!(
                        "expected 'x y w h score', found {n} value(s): '{}'",
                        line.trim()
                    ),
                ))
            }
        }
        dets.push(WiderDetection {
            x: v[0],
            y: v[1],
            w: v[2],
            h: v[3],
            score: v[4],
        });
    }
    Ok(dets)
}

/// Splits like Python's universal newlines: `\r\n`, `\r` and `\n` each end a line.
fn universal_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

/// The text of a prediction file in the official format, as a detector would write it
/// (scores with ten decimals, as the reference detector writes them).
pub fn format_prediction_file(image_name: &str, detections: &[WiderDetection]) -> String {
    use std::fmt::Write;
    let mut s = format!("{image_name}\n{}\n", detections.len());
    for d in detections {
        let _ = writeln!(s, "{} {} {} {} {:.10}", d.x, d.y, d.w, d.h, d.score);
    }
    s
}

#[cfg(test)]
mod tests {

    use super::*;

    fn parse(text: &str) -> Result<Vec<WiderDetection>, WiderError> {
        parse_prediction_text(text, Path::new("ev/img.txt"))
    }

    #[test]
    fn tolerates_what_detectors_write() {
        let text = "\r\n  img\r\n3\r\n\r\n1 2 3 4 0.5  \r\n1e1 2.5E0 -3 4 -7e-1\t\r\n\n5 6 7 8 9 extra\r\n\r\n";
        let d = parse(text).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[1].x, 10.0);
        assert_eq!(d[1].score, -0.7);
        assert_eq!(d[2].score, 9.0);
        assert!(parse("").unwrap().is_empty());
        assert!(parse("img\n").unwrap().is_empty());
        assert!(parse("img\n0\n").unwrap().is_empty());
        // Old Mac line ends, and a count that disagrees with the rows (the rows count).
        assert_eq!(parse("img\r7\r1 2 3 4 0.1\r").unwrap().len(), 1);
        // A blank count line, as the reference reads it.
        assert_eq!(parse("img\n\n1 2 3 4 0.1\n").unwrap().len(), 1);
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let e = parse("img\n2\n1 2 3 4 0.5\n1 2 x 4 0.5\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("ev/img.txt:4: "), "{msg}");
        assert!(msg.contains("'x'"), "{msg}");
        let msg = parse("img\n1\n\n1 2 3 4\n").unwrap_err().to_string();
        assert!(
            msg.starts_with("ev/img.txt:4: expected 'x y w h score', found 4"),
            "{msg}"
        );
        let msg = parse("img\n1 2 3 4 0.5\n").unwrap_err().to_string();
        assert!(
            msg.starts_with("ev/img.txt:2: expected the number"),
            "{msg}"
        );
        let msg = parse("1 2 3 4 0.5\n1 2 3 4 0.5\n").unwrap_err().to_string();
        assert!(
            msg.starts_with("ev/img.txt:1: expected the image name"),
            "{msg}"
        );
        let msg = parse("img\n1\n1 2 3 4 nan\n").unwrap_err().to_string();
        assert!(
            msg.starts_with("ev/img.txt:3: 'nan' is not a finite"),
            "{msg}"
        );
        let msg = parse("img\nmany\n").unwrap_err().to_string();
        assert!(msg.starts_with("ev/img.txt:2: "), "{msg}");
    }

    #[test]
    fn format_round_trips() {
        let d = vec![WiderDetection {
            x: 1.5,
            y: 2.0,
            w: 30.0,
            h: 40.25,
            score: 0.987654321,
        }];
        let text = format_prediction_file("0_Parade_1", &d);
        assert_eq!(text, "0_Parade_1\n1\n1.5 2 30 40.25 0.9876543210\n");
        assert_eq!(parse(&text).unwrap(), d);
    }
}
