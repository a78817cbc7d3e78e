//! Collecting inputs: files named on the command line are always tried (if they are regular
//! files); folders are walked recursively and their files taken by extension. Planning
//! outputs: one distinct path per input, never an input's, written atomically.

use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
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
    for arg in args.iter().filter(|a| a.is_dir()) {
        if !inputs
            .iter()
            .any(|i| i.in_folder && i.path.starts_with(arg))
        {
            eprintln!(
                "warning: {}: no file with a known extension ({}) in this folder",
                arg.display(),
                exts.join(", ")
            );
        }
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

    /// The input's extension, lower case (`png` when it has none).
    pub fn extension(&self) -> String {
        self.path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("png")
            .to_ascii_lowercase()
    }

    /// The output name before disambiguation: the path under its folder, or the stem of a
    /// named file, with extension `ext`.
    fn base_name(&self, ext: &str) -> PathBuf {
        if self.in_folder {
            self.name.with_extension(ext)
        } else {
            // Not `with_extension` on the stem: `my.photo.jpg`'s stem has a dot of its own.
            PathBuf::from(format!("{}.{ext}", self.stem()))
        }
    }
}

/// One output name per input (relative to an output folder), all distinct: files under a
/// folder keep their relative path, named files their stem (CONVENTIONS); when two inputs
/// would get the same name (`a.jpg` in two folders, or `a.jpg` and `a.png` written as PNG),
/// the later ones get `-2`, `-3`, … before the extension. Names are compared without case, so
/// they stay distinct on case-insensitive file systems too.
pub fn output_names(inputs: &[Input], ext: impl Fn(&Input) -> String) -> Vec<PathBuf> {
    let mut taken: HashSet<String> = HashSet::new();
    let key = |p: &Path| p.to_string_lossy().to_lowercase();
    // Every first-choice name is reserved first, so a disambiguated name never takes one.
    let bases: Vec<PathBuf> = inputs.iter().map(|i| i.base_name(&ext(i))).collect();
    let firsts: HashSet<String> = bases.iter().map(|b| key(b)).collect();
    let mut names = Vec::with_capacity(inputs.len());
    for base in bases {
        let stem = base
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let numbered = |n: usize| match base.extension() {
            Some(e) => base.with_file_name(format!("{stem}-{n}.{}", e.to_string_lossy())),
            None => base.with_file_name(format!("{stem}-{n}")),
        };
        let mut name = base.clone();
        let mut n = 2;
        while taken.contains(&key(&name)) {
            // A numbered name never takes another input's first choice.
            name = numbered(n);
            n += 1;
            while firsts.contains(&key(&name)) {
                name = numbered(n);
                n += 1;
            }
        }
        taken.insert(key(&name));
        names.push(name);
    }
    names
}

/// An absolute, normalised form of `path` whether or not it exists: the longest existing
/// ancestor resolved (symbolic links followed), the rest appended.
pub fn normalize(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut rest = Vec::new();
    let mut base = abs.as_path();
    loop {
        if let Ok(c) = base.canonicalize() {
            let mut out = c;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                base = parent;
            }
            _ => break,
        }
    }
    // Nothing exists (not even the root): a lexical clean-up.
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Refuse, before any work, outputs that would overwrite an input (e.g. `--out` the inputs'
/// own folder): `outputs` are the planned output files.
pub fn refuse_overwriting_inputs(inputs: &[Input], outputs: &[PathBuf]) -> Result<()> {
    let sources: HashMap<PathBuf, &Path> = inputs
        .iter()
        .map(|i| (normalize(&i.path), i.path.as_path()))
        .collect();
    for out in outputs {
        if let Some(src) = sources.get(&normalize(out)) {
            bail!(
                "the output {} would overwrite the input {}: choose an output folder outside the inputs",
                out.display(),
                src.display()
            );
        }
    }
    Ok(())
}

/// Create the output folder and check that files can be written in it, before any work.
pub fn prepare_output_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let probe = dir.join(format!(".retinaface-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| format!("cannot write into {}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Check an output file named by a flag (`--json`, `--csv`, …) before any work: `-` (standard
/// output) when `stdout` allows it, else an extension from `exts`, not an input, in a folder
/// that exists and is writable.
pub fn check_output_file(
    flag: &str,
    path: &Path,
    exts: &[&str],
    stdout: bool,
    inputs: &[Input],
) -> Result<()> {
    if path == Path::new("-") {
        if stdout {
            return Ok(());
        }
        bail!("{flag} needs a file name here, not `-`");
    }
    if !has_extension(path, exts) {
        bail!(
            "{flag} {}: expected a .{} file",
            path.display(),
            exts.join(" or .")
        );
    }
    if path.is_dir() {
        bail!("{flag} {} is a folder", path.display());
    }
    refuse_overwriting_inputs(inputs, &[path.to_path_buf()])?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "{flag} {}: the folder {} does not exist",
            path.display(),
            dir.display()
        );
    }
    prepare_output_dir(dir).with_context(|| format!("{flag} {}", path.display()))
}

/// A temporary name beside `path` for writing it (its folder created): hidden, named after the
/// process, and ending in `path`'s own name, so its extension is kept (ffmpeg picks the
/// container by it). Written there, then renamed into place.
pub fn partial_path(path: &Path) -> Result<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(dir.join(format!(".partial-{}-{name}", std::process::id())))
}

/// Write `bytes` to `path` through a temporary file in the same folder renamed into place: an
/// interrupted run leaves the previous file or none, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = partial_path(path)?;
    let result = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_data()
    });
    if let Err(e) = result.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
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
        } else if let Ok(meta) = std::fs::metadata(arg) {
            if !meta.is_file() {
                errors.push((
                    arg.clone(),
                    format!(
                        "{}, not a regular file",
                        retinaface::input::file_kind(&meta.file_type())
                    ),
                ));
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn named(p: &str) -> Input {
        Input {
            path: PathBuf::from(p),
            name: PathBuf::from(p),
            in_folder: false,
        }
    }

    fn found(dir: &str, rel: &str) -> Input {
        Input {
            path: Path::new(dir).join(rel),
            name: PathBuf::from(rel),
            in_folder: true,
        }
    }

    #[test]
    fn output_names_are_distinct_and_keep_first_choices() {
        let inputs = [
            named("a/photo.jpg"),
            named("b/photo.jpg"),
            named("c/PHOTO.jpg"),
            // Its first choice is the name a disambiguated one would otherwise take.
            named("d/photo-2.jpg"),
            found("e", "x/photo.jpg"),
            found("f", "x/photo.jpg"),
        ];
        let names = output_names(&inputs, Input::extension);
        let names: Vec<&str> = names.iter().map(|n| n.to_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "photo.jpg",
                "photo-3.jpg",
                "PHOTO-4.jpg",
                "photo-2.jpg",
                "x/photo.jpg",
                "x/photo-2.jpg"
            ]
        );
        // A stem with a dot keeps it.
        let names = output_names(&[named("d/my.photo.jpg")], Input::extension);
        assert_eq!(names, [PathBuf::from("my.photo.jpg")]);
        // Another extension for the output (align's PNG crops): a.jpg and a.png collide.
        let names = output_names(&[named("a.jpg"), named("a.png")], |_| "png".into());
        assert_eq!(names, [PathBuf::from("a.png"), PathBuf::from("a-2.png")]);
    }

    #[test]
    fn an_output_onto_an_input_is_refused_through_any_spelling() {
        let dir = std::env::temp_dir().join(format!("retinaface-files-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.jpg"), b"x").unwrap();
        let inputs = [named(dir.join("a.jpg").to_str().unwrap())];
        let same = dir.join("sub/../a.jpg");
        assert!(refuse_overwriting_inputs(&inputs, &[same]).is_err());
        assert!(refuse_overwriting_inputs(&inputs, &[dir.join("sub/a.jpg")]).is_ok());
        // A path that does not exist yet is compared by its existing ancestor.
        assert_eq!(
            normalize(&dir.join("new/../a.jpg")),
            normalize(&dir.join("a.jpg"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
