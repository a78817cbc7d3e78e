//! WIDER FACE validation ground truth: the official `.mat` files, or the text file for
//! box-only uses.

use super::{Setting, WiderError};
use crate::mat::{MatArray, MatFile};
use std::path::Path;

/// The easy/medium/hard lists of one image: 0-based indices into [`GtImage::boxes`] of the
/// faces that count in each setting (the others are "ignored" boxes there).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingLists {
    /// Faces counted in the easy setting.
    pub easy: Vec<usize>,
    /// Faces counted in the medium setting.
    pub medium: Vec<usize>,
    /// Faces counted in the hard setting.
    pub hard: Vec<usize>,
}

impl SettingLists {
    /// The list of one setting.
    pub fn get(&self, setting: Setting) -> &[usize] {
        setting.pick(&self.easy, &self.medium, &self.hard)
    }

    /// The list of one setting, mutably.
    pub fn get_mut(&mut self, setting: Setting) -> &mut Vec<usize> {
        match setting {
            Setting::Easy => &mut self.easy,
            Setting::Medium => &mut self.medium,
            Setting::Hard => &mut self.hard,
        }
    }
}

/// One ground-truth image.
#[derive(Debug, Clone, PartialEq)]
pub struct GtImage {
    /// The image name without extension (`0_Parade_marchingband_1_465`): prediction files
    /// are matched by it.
    pub name: String,
    /// Face boxes as `[x, y, w, h]` in pixels, as annotated.
    pub boxes: Vec<[f64; 4]>,
    /// The setting lists; `None` for ground truth read from the text file.
    pub settings: Option<SettingLists>,
}

/// One event (folder) of the ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct GtEvent {
    /// The event name, e.g. `0--Parade`.
    pub name: String,
    /// Its images in ground-truth order.
    pub images: Vec<GtImage>,
}

/// The validation ground truth: events in file order, each with its images.
///
/// Build one programmatically by filling the public fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroundTruth {
    /// Events in ground-truth order.
    pub events: Vec<GtEvent>,
}

const BOXES_FILE: &str = "wider_face_val.mat";
const TEXT_FILE: &str = "wider_face_val_bbx_gt.txt";

impl GroundTruth {
    /// Loads ground truth from `path`: a folder holding `wider_face_val.mat` and
    /// `wider_{easy,medium,hard}_val.mat` (what `wider_eval.py --gt` takes; naming one of
    /// those files means its folder), or a text ground-truth file such as
    /// `wider_face_val_bbx_gt.txt` (boxes only, no settings).
    pub fn load(path: &Path) -> Result<GroundTruth, WiderError> {
        let is_ext = |e: &str| path.extension().is_some_and(|x| x.eq_ignore_ascii_case(e));
        if path.is_dir() {
            GroundTruth::load_mat_dir(path)
        } else if path.is_file() && is_ext("mat") {
            // One of the .mat files named: the set lives in its folder.
            GroundTruth::load_mat_dir(path.parent().unwrap_or(Path::new(".")))
        } else if path.is_file() && is_ext("txt") {
            GroundTruth::load_text(path)
        } else if !path.exists() {
            Err(WiderError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            })
        } else {
            Err(WiderError::UnknownGroundTruth(path.to_path_buf()))
        }
    }

    /// Loads the official `.mat` files from a folder. Every setting file is required.
    pub fn load_mat_dir(dir: &Path) -> Result<GroundTruth, WiderError> {
        let boxes_path = dir.join(BOXES_FILE);
        if !boxes_path.is_file() {
            let hint = if dir.join(TEXT_FILE).is_file() {
                format!(
                    "; the folder has {TEXT_FILE}, which holds boxes only (load that file for \
                     box-only uses): the easy/medium/hard settings need the .mat files"
                )
            } else {
                String::new()
            };
            return Err(WiderError::MissingFile {
                path: boxes_path,
                why: format!("it holds the ground-truth boxes{hint}"),
            });
        }
        let mut gt = GroundTruth::from_boxes_mat(&boxes_path)?;
        for setting in Setting::ALL {
            let path = dir.join(setting.file_name());
            if !path.is_file() {
                return Err(WiderError::MissingFile {
                    path,
                    why: format!(
                        "the {setting} setting needs it (evaluating easy, medium and hard needs \
                         wider_easy_val.mat, wider_medium_val.mat and wider_hard_val.mat beside \
                         {BOXES_FILE})"
                    ),
                });
            }
            gt.add_setting_mat(setting, &path)?;
        }
        Ok(gt)
    }

    /// Reads `wider_face_val.mat` (variables `event_list`, `file_list`, `face_bbx_list`).
    /// The result has no setting lists until [`GroundTruth::add_setting_mat`] adds them.
    pub fn from_boxes_mat(path: &Path) -> Result<GroundTruth, WiderError> {
        let mat = MatFile::open(path)?;
        let not_wider = |reason: String| WiderError::NotWider {
            path: path.to_path_buf(),
            reason,
        };
        let var = |name: &str| {
            mat.get(name).ok_or_else(|| {
                not_wider(format!(
                    "no variable '{name}' (it has: {})",
                    mat.names().join(", ")
                ))
            })
        };
        let events = column_of_cells(var("event_list")?, "event_list").map_err(&not_wider)?;
        let files = column_of_cells(var("file_list")?, "file_list").map_err(&not_wider)?;
        let boxes = column_of_cells(var("face_bbx_list")?, "face_bbx_list").map_err(&not_wider)?;
        if files.len() != events.len() || boxes.len() != events.len() {
            return Err(not_wider(format!(
                "event_list has {} events, file_list {}, face_bbx_list {}",
                events.len(),
                files.len(),
                boxes.len()
            )));
        }
        let mut out = Vec::with_capacity(events.len());
        for (i, ((ev, fl), bb)) in events.iter().zip(files).zip(boxes).enumerate() {
            let name = ev
                .as_string()
                .ok_or_else(|| not_wider(format!("event_list{{{}}} is not a string", i + 1)))?;
            let fl = column_of_cells(fl, &format!("file_list{{{}}}", i + 1)).map_err(&not_wider)?;
            let bb =
                column_of_cells(bb, &format!("face_bbx_list{{{}}}", i + 1)).map_err(&not_wider)?;
            if fl.len() != bb.len() {
                return Err(not_wider(format!(
                    "event {name}: {} file names but {} box lists",
                    fl.len(),
                    bb.len()
                )));
            }
            let mut images = Vec::with_capacity(fl.len());
            for (j, (f, b)) in fl.iter().zip(bb).enumerate() {
                let image = f.as_string().ok_or_else(|| {
                    not_wider(format!(
                        "file_list{{{}}}{{{}}} is not a string",
                        i + 1,
                        j + 1
                    ))
                })?;
                let boxes = box_matrix(b).map_err(|r| not_wider(format!("{name}/{image}: {r}")))?;
                images.push(GtImage {
                    name: image,
                    boxes,
                    settings: None,
                });
            }
            out.push(GtEvent { name, images });
        }
        Ok(GroundTruth { events: out })
    }

    /// Adds one setting's `gt_list` from `wider_{easy,medium,hard}_val.mat`. Its layout must
    /// follow the boxes' (same events, same image counts) and its indices must be in range.
    pub fn add_setting_mat(&mut self, setting: Setting, path: &Path) -> Result<(), WiderError> {
        let mat = MatFile::open(path)?;
        let not_wider = |reason: String| WiderError::NotWider {
            path: path.to_path_buf(),
            reason,
        };
        let list = mat.get("gt_list").ok_or_else(|| {
            not_wider(format!(
                "no variable 'gt_list' (it has: {})",
                mat.names().join(", ")
            ))
        })?;
        let per_event = column_of_cells(list, "gt_list").map_err(&not_wider)?;
        if per_event.len() != self.events.len() {
            return Err(not_wider(format!(
                "gt_list has {} events, the boxes {}",
                per_event.len(),
                self.events.len()
            )));
        }
        for (i, (ev, cell)) in self.events.iter_mut().zip(per_event).enumerate() {
            let lists =
                column_of_cells(cell, &format!("gt_list{{{}}}", i + 1)).map_err(&not_wider)?;
            if lists.len() != ev.images.len() {
                return Err(not_wider(format!(
                    "event {}: gt_list has {} images, the boxes {}",
                    ev.name,
                    lists.len(),
                    ev.images.len()
                )));
            }
            for (img, keep) in ev.images.iter_mut().zip(lists) {
                let indices = keep_indices(keep, img.boxes.len())
                    .map_err(|r| not_wider(format!("{}/{}: {r}", ev.name, img.name)))?;
                *img.settings
                    .get_or_insert_with(SettingLists::default)
                    .get_mut(setting) = indices;
            }
        }
        Ok(())
    }

    /// Reads the text ground truth (`wider_face_val_bbx_gt.txt` format: `event/name.jpg`, the
    /// face count, then `x y w h …` per face; an image with no face has one line of zeros).
    /// Boxes only: evaluating a setting on it is an error.
    pub fn load_text(path: &Path) -> Result<GroundTruth, WiderError> {
        let bytes = std::fs::read(path).map_err(|source| WiderError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| WiderError::Line {
            path: path.to_path_buf(),
            line: 1,
            reason: "not UTF-8 text".into(),
        })?;
        GroundTruth::parse_text(&text, path)
    }

    /// Parses text ground truth; `path` only names the source in errors.
    pub fn parse_text(text: &str, path: &Path) -> Result<GroundTruth, WiderError> {
        let err = |line: usize, reason: String| WiderError::Line {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty())
            .peekable();
        let mut gt = GroundTruth::default();
        while let Some((no, name_line)) = lines.next() {
            let (event, file) = name_line.rsplit_once('/').ok_or_else(|| {
                err(
                    no,
                    format!("expected an image path event/name.jpg, found '{name_line}'"),
                )
            })?;
            let event = event.rsplit('/').next().unwrap_or(event);
            let stem = Path::new(file)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or(file);
            let (cno, count_line) = lines
                .next()
                .ok_or_else(|| err(no, format!("{name_line}: face count missing")))?;
            let count: usize = count_line.parse().map_err(|_| {
                err(
                    cno,
                    format!("expected the face count, found '{count_line}'"),
                )
            })?;
            let mut boxes = Vec::with_capacity(count.min(100_000));
            for _ in 0..count {
                let (bno, l) = lines
                    .next()
                    .ok_or_else(|| err(cno, format!("{count} faces announced, file ends")))?;
                boxes.push(parse_box(l).map_err(|r| err(bno, r))?);
            }
            if count == 0 {
                // The official file writes a line of zeros for an image without faces.
                if let Some((_, l)) = lines.peek() {
                    if l.split_whitespace().all(|t| t.parse::<f64>().is_ok()) {
                        lines.next();
                    }
                }
            }
            let image = GtImage {
                name: stem.to_string(),
                boxes,
                settings: None,
            };
            match gt.events.iter_mut().find(|e| e.name == event) {
                Some(ev) => ev.images.push(image),
                None => gt.events.push(GtEvent {
                    name: event.to_string(),
                    images: vec![image],
                }),
            }
        }
        Ok(gt)
    }

    /// True when every image has setting lists (the `.mat` ground truth).
    pub fn has_settings(&self) -> bool {
        self.events
            .iter()
            .flat_map(|e| &e.images)
            .all(|i| i.settings.is_some())
    }

    /// Number of images.
    pub fn image_count(&self) -> usize {
        self.events.iter().map(|e| e.images.len()).sum()
    }

    /// The event called `name`.
    pub fn event(&self, name: &str) -> Option<&GtEvent> {
        self.events.iter().find(|e| e.name == name)
    }

    /// The image `name` (without extension) of event `event`.
    pub fn image(&self, event: &str, name: &str) -> Option<&GtImage> {
        self.event(event)?.images.iter().find(|i| i.name == name)
    }
}

fn parse_box(line: &str) -> Result<[f64; 4], String> {
    let mut v = [0.0; 4];
    let mut tokens = line.split_whitespace();
    for slot in &mut v {
        let t = tokens
            .next()
            .ok_or_else(|| format!("expected 'x y w h …', found '{line}'"))?;
        *slot = t
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("'{t}' is not a number"))?;
    }
    Ok(v)
}

/// The cells of a cell vector, as MATLAB indexes `x{i}`.
fn column_of_cells<'a>(a: &'a MatArray, what: &str) -> Result<&'a [MatArray], String> {
    match a.as_cell() {
        Some(cells) if a.is_vector() => Ok(cells),
        Some(_) => Err(format!(
            "{what} is a {:?} cell array, expected a vector",
            a.dims
        )),
        None => Err(format!(
            "{what} is a {:?} array, expected a cell array",
            a.class
        )),
    }
}

/// An N×4 numeric matrix of `x y w h` rows (column-major in the file).
fn box_matrix(a: &MatArray) -> Result<Vec<[f64; 4]>, String> {
    let v = a
        .as_f64()
        .ok_or_else(|| format!("boxes are a {:?} array, expected numbers", a.class))?;
    if v.is_empty() {
        return Ok(Vec::new());
    }
    if a.dims.len() != 2 || a.dims[1] != 4 {
        return Err(format!("boxes have shape {:?}, expected N×4", a.dims));
    }
    let n = a.dims[0];
    Ok((0..n)
        .map(|r| [v[r], v[r + n], v[r + 2 * n], v[r + 3 * n]])
        .collect())
}

/// A K×1 column of 1-based box indices (or an empty array) as 0-based indices.
fn keep_indices(a: &MatArray, n_boxes: usize) -> Result<Vec<usize>, String> {
    let v = a
        .as_f64()
        .ok_or_else(|| format!("gt_list entry is a {:?} array, expected numbers", a.class))?;
    if v.is_empty() {
        return Ok(Vec::new());
    }
    // The reference counts len(entry), i.e. rows: a row vector would count differently.
    if a.dims.len() != 2 || a.dims[1] != 1 {
        return Err(format!(
            "gt_list entry has shape {:?}, expected K×1",
            a.dims
        ));
    }
    v.iter()
        .map(|&x| {
            if x.fract() == 0.0 && x >= 1.0 && x <= n_boxes as f64 {
                Ok(x as usize - 1)
            } else {
                Err(format!(
                    "gt_list index {x} out of range for {n_boxes} boxes"
                ))
            }
        })
        .collect()
}
