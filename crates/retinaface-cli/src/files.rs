//! Collecting inputs: files named on the command line are always tried; folders are walked
//! recursively and their files taken by extension.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Image extensions taken from folders.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"];

/// Photo and video extensions, for the commands that take both.
pub fn media_extensions() -> Vec<&'static str> {
    IMAGE_EXTENSIONS
        .iter()
        .chain(crate::video::VIDEO_EXTENSIONS)
        .copied()
        .collect()
}

/// [`collect`], with each path that cannot be read reported on standard error at once.
pub fn collect_reported(args: &[PathBuf], exts: &[&str]) -> (Vec<Input>, Vec<(PathBuf, String)>) {
    let (inputs, failures) = collect(args, exts);
    for (p, e) in &failures {
        eprintln!("error: {}: {e}", p.display());
    }
    (inputs, failures)
}

/// One input file and where it came from.
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    /// Path relative to the folder argument it was found under, or the argument itself.
    pub name: PathBuf,
    /// Whether it was found under a folder (outputs keep its relative path).
    pub in_folder: bool,
}

impl Input {
    /// `<event>` for WIDER files: the image's parent folder name.
    pub fn event(&self) -> String {
        self.path
            .canonicalize()
            .unwrap_or_else(|_| self.path.clone())
            .parent()
            .and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "images".into())
    }

    /// File stem.
    pub fn stem(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Where an output for this input goes under `dir`, with extension `ext` (CONVENTIONS:
    /// named files → `DIR/<stem>.<ext>`; files under a folder keep their relative path).
    pub fn output_path(&self, dir: &Path, ext: &str) -> PathBuf {
        let rel = if self.in_folder {
            self.name.clone()
        } else {
            PathBuf::from(self.stem())
        };
        dir.join(rel).with_extension(ext)
    }
}

fn has_extension(p: &Path, exts: &[&str]) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Expand the arguments; a missing path is returned as an error entry so the batch goes on.
pub fn collect(args: &[PathBuf], exts: &[&str]) -> (Vec<Input>, Vec<(PathBuf, String)>) {
    let (mut inputs, mut errors) = (Vec::new(), Vec::new());
    for arg in args {
        if arg.is_dir() {
            let mut found: Vec<PathBuf> = walkdir::WalkDir::new(arg)
                .follow_links(true)
                .into_iter()
                .filter_map(|e| match e {
                    Ok(e) => Some(e),
                    Err(err) => {
                        errors.push((arg.clone(), err.to_string()));
                        None
                    }
                })
                .filter(|e| e.file_type().is_file() && has_extension(e.path(), exts))
                .map(|e| e.into_path())
                .collect();
            found.sort();
            for path in found {
                let name = path
                    .strip_prefix(arg)
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|_| path.clone());
                inputs.push(Input {
                    path,
                    name,
                    in_folder: true,
                });
            }
        } else if arg.exists() {
            inputs.push(Input {
                path: arg.clone(),
                name: arg.clone(),
                in_folder: false,
            });
        } else {
            errors.push((arg.clone(), "no such file or folder".into()));
        }
    }
    (inputs, errors)
}

/// `", N failed"` for a batch's summary line; empty when nothing failed.
pub fn failed_suffix(failures: &[(PathBuf, String)]) -> String {
    if failures.is_empty() {
        String::new()
    } else {
        format!(", {} failed", failures.len())
    }
}

/// A batch's exit code: 1 when any file failed (the others were still processed).
pub fn exit_code(failures: &[(PathBuf, String)]) -> ExitCode {
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
