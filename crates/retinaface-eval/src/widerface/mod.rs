//! WIDER FACE validation AP, reproducing `shared/tools/ref/wider_eval.py` (the official
//! protocol) on prediction folders written by any detector.
//!
//! ```no_run
//! use retinaface_eval::widerface::{evaluate, EvalOptions, GroundTruth, ImageFilter, Predictions};
//! use std::path::Path;
//! let gt = GroundTruth::load(Path::new("val/ground_truth"))?;
//! let preds = Predictions::load(Path::new("wider_out"))?;
//! let opts = EvalOptions {
//!     images: Some(ImageFilter::from_dir(Path::new("val/images"))?),
//!     ..EvalOptions::default()
//! };
//! let report = evaluate(&gt, &preds, &opts)?;
//! println!("{}", report.to_json()); // {"easy":{"ap":…,"faces":…,"images":…},…}
//! # Ok::<(), retinaface_eval::widerface::WiderError>(())
//! ```

mod challenge;
mod eval;
mod gt;
mod preds;

pub use challenge::{evaluate_range, IouThresholds, RangeReport, RangeSettingReport};
pub use eval::{
    evaluate, evaluate_subset, EvalOptions, EvalReport, ImageFilter, PrPoint, SettingReport,
    Subset, N_THRESHOLDS,
};
pub use gt::{GroundTruth, GtEvent, GtImage, SettingLists};
pub use preds::{
    format_prediction_file, parse_prediction_file, parse_prediction_text, Predictions,
    WiderDetection,
};

use std::path::PathBuf;

/// The three difficulty settings of WIDER FACE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Setting {
    /// `wider_easy_val.mat`.
    Easy,
    /// `wider_medium_val.mat`.
    Medium,
    /// `wider_hard_val.mat`.
    Hard,
}

impl Setting {
    /// The settings in report order.
    pub const ALL: [Setting; 3] = [Setting::Easy, Setting::Medium, Setting::Hard];

    /// The one of three per-setting values that belongs to this setting.
    pub fn pick<'a, T: ?Sized>(self, easy: &'a T, medium: &'a T, hard: &'a T) -> &'a T {
        match self {
            Setting::Easy => easy,
            Setting::Medium => medium,
            Setting::Hard => hard,
        }
    }

    /// `"easy"`, `"medium"` or `"hard"`.
    pub fn name(self) -> &'static str {
        match self {
            Setting::Easy => "easy",
            Setting::Medium => "medium",
            Setting::Hard => "hard",
        }
    }

    /// The official file holding this setting's `gt_list`.
    pub fn file_name(self) -> &'static str {
        match self {
            Setting::Easy => "wider_easy_val.mat",
            Setting::Medium => "wider_medium_val.mat",
            Setting::Hard => "wider_hard_val.mat",
        }
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why ground truth, predictions or an evaluation were refused.
#[derive(Debug, thiserror::Error)]
pub enum WiderError {
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A `.mat` file could not be parsed at all.
    #[error(transparent)]
    Mat(#[from] crate::mat::MatError),
    /// A parseable `.mat` file that does not hold WIDER FACE ground truth.
    #[error("{path} is not WIDER FACE ground truth: {reason}")]
    NotWider {
        /// The file.
        path: PathBuf,
        /// What is missing or inconsistent.
        reason: String,
    },
    /// A ground-truth file the chosen evaluation needs is absent.
    #[error("{path} is missing: {why}")]
    MissingFile {
        /// The file that was looked for.
        path: PathBuf,
        /// What it is needed for.
        why: String,
    },
    /// The ground truth has no easy/medium/hard lists (it came from the text file).
    #[error(
        "the {setting} setting needs wider_{setting}_val.mat: this ground truth has boxes only \
         (the text ground truth wider_face_val_bbx_gt.txt has no settings); load the folder of \
         .mat files instead"
    )]
    SettingsUnavailable {
        /// The setting asked for.
        setting: Setting,
    },
    /// A malformed line in a prediction or text ground-truth file.
    #[error("{path}:{line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
    /// A prediction folder named after an event the ground truth does not have.
    #[error(
        "{path}: event folder '{event}' is not in the ground truth (prediction folders are \
         <pred dir>/<event>/<image>.txt with WIDER event names such as 0--Parade)"
    )]
    UnknownEvent {
        /// The event folder.
        path: PathBuf,
        /// Its name.
        event: String,
    },
    /// Not a single detection in the whole prediction set (the reference exits then too).
    #[error("no predictions found under {0} (expected <event>/<image>.txt files with detections)")]
    NoPredictions(PathBuf),
    /// A path given as ground truth is neither a folder of .mat files nor a .txt file.
    #[error("{0}: expected a folder holding wider_face_val.mat and wider_{{easy,medium,hard}}_val.mat, or wider_face_val_bbx_gt.txt")]
    UnknownGroundTruth(PathBuf),
    /// An option out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
}
