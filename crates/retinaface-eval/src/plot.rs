//! Figures: the precision-recall curves of the three WIDER settings, and the cumulative
//! error distribution (CED) of the landmark NME. PNG or SVG, chosen by the file extension.
//!
//! Text is laid out (and, for PNG, drawn) with DejaVu Sans embedded in the binary, so the
//! figures come out the same on any machine, with no system font or font library needed.

use crate::landmarks::LandmarkReport;
use crate::widerface::{EvalReport, Setting};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Why a figure could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The output extension is neither `.png` nor `.svg`.
    #[error("{0}: unsupported figure format (use a .png or .svg file name)")]
    UnsupportedExtension(PathBuf),
    /// The embedded font could not be registered.
    #[error("font: {0}")]
    Font(String),
    /// Drawing failed.
    #[error("drawing {path}: {reason}")]
    Draw {
        /// The output file.
        path: PathBuf,
        /// The backend's complaint.
        reason: String,
    },
    /// Writing the file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The output file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// PNG encoding failed.
    #[error("encoding {path}: {reason}")]
    Encode {
        /// The output file.
        path: PathBuf,
        /// The encoder's complaint.
        reason: String,
    },
}

/// One labelled curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Points `(x, y)` in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// Where the legend goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegendCorner {
    /// Bottom left (PR curves keep it free).
    LowerLeft,
    /// Top left (CED curves keep it free).
    UpperLeft,
}

/// A line chart: title, axis names and ranges, and its curves.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// X axis name.
    pub x_label: String,
    /// Y axis name.
    pub y_label: String,
    /// X range.
    pub x_range: (f64, f64),
    /// Y range.
    pub y_range: (f64, f64),
    /// The curves, drawn in the palette's order.
    pub series: Vec<Series>,
    /// Where the legend goes.
    pub legend: LegendCorner,
    /// Format X tick labels as percentages.
    pub x_percent: bool,
}

/// Figure size in pixels (also the SVG's view box).
pub const FIGURE_SIZE: (u32, u32) = (1200, 900);

/// matplotlib's first colours: blue, orange, green, red, purple, brown.
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

const FONT: &str = "sans-serif";

fn ensure_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
                .and_then(|()| register_font(FONT, FontStyle::Bold, dejavu::sans::bold()))
                .map_err(|_| "the embedded DejaVu Sans could not be parsed".to_string())
        })
        .clone()
        .map_err(PlotError::Font)
}

/// The PR curves of easy, medium and hard in one figure, each labelled with its AP.
/// Thresholds at which no detection passes are left out of the curves.
pub fn plot_pr_curves(report: &EvalReport, title: &str, path: &Path) -> Result<(), PlotError> {
    let series = Setting::ALL
        .iter()
        .map(|&s| {
            let r = report.get(s);
            Series {
                label: format!("{}: AP {:.4}", s.name(), r.ap),
                points: r
                    .pr_curve
                    .iter()
                    .filter(|p| p.proposals > 0.0)
                    .map(|p| (p.recall, p.precision))
                    .collect(),
            }
        })
        .collect();
    plot_chart(
        &Chart {
            title: title.to_string(),
            x_label: "Recall".into(),
            y_label: "Precision".into(),
            x_range: (0.0, 1.0),
            y_range: (0.0, 1.0),
            series,
            legend: LegendCorner::LowerLeft,
            x_percent: false,
        },
        path,
    )
}

/// The CED of one or more landmark evaluations (x: NME up to `max_nme`, y: fraction of
/// faces), each labelled with its mean NME and failure rate.
pub fn plot_ced(
    reports: &[(&str, &LandmarkReport)],
    max_nme: f64,
    title: &str,
    path: &Path,
) -> Result<(), PlotError> {
    let max_nme = if max_nme.is_finite() && max_nme > 0.0 {
        max_nme
    } else {
        0.1
    };
    let series = reports
        .iter()
        .map(|(name, r)| {
            let mean = r
                .mean_nme
                .map_or_else(|| "n/a".to_string(), |m| format!("{:.2}%", m * 100.0));
            Series {
                label: format!(
                    "{name}: mean NME {mean}, failures {:.2}% ({} faces)",
                    r.failure_rate * 100.0,
                    r.faces
                ),
                points: r.ced(max_nme, 400),
            }
        })
        .collect();
    plot_chart(
        &Chart {
            title: title.to_string(),
            x_label: "NME (normalised by √(w·h) of the face box)".into(),
            y_label: "Fraction of faces with NME ≤ x".into(),
            x_range: (0.0, max_nme),
            y_range: (0.0, 1.0),
            series,
            legend: LegendCorner::UpperLeft,
            x_percent: true,
        },
        path,
    )
}

/// Draws any [`Chart`] to `path` (`.png` or `.svg`).
pub fn plot_chart(chart: &Chart, path: &Path) -> Result<(), PlotError> {
    ensure_font()?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let draw_err = |reason: String| PlotError::Draw {
        path: path.to_path_buf(),
        reason,
    };
    let io = |source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let (w, h) = FIGURE_SIZE;
    match ext.as_deref() {
        Some("svg") => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, FIGURE_SIZE).into_drawing_area();
                draw(&root, chart).map_err(draw_err)?;
                root.present().map_err(|e| draw_err(e.to_string()))?;
            }
            std::fs::write(path, svg).map_err(io)
        }
        Some("png") => {
            let mut buf = vec![0u8; (w * h * 3) as usize];
            {
                let root = BitMapBackend::with_buffer(&mut buf, FIGURE_SIZE).into_drawing_area();
                draw(&root, chart).map_err(draw_err)?;
                root.present().map_err(|e| draw_err(e.to_string()))?;
            }
            let img = image::RgbImage::from_raw(w, h, buf).ok_or_else(|| PlotError::Encode {
                path: path.to_path_buf(),
                reason: "buffer size".into(),
            })?;
            img.save_with_format(path, image::ImageFormat::Png)
                .map_err(|e| match e {
                    image::ImageError::IoError(source) => io(source),
                    other => PlotError::Encode {
                        path: path.to_path_buf(),
                        reason: other.to_string(),
                    },
                })
        }
        _ => Err(PlotError::UnsupportedExtension(path.to_path_buf())),
    }
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &Chart) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (x0, x1) = chart.x_range;
    let (y0, y1) = chart.y_range;
    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, (FONT, 38).into_font().style(FontStyle::Bold))
        .margin(30)
        .x_label_area_size(90)
        .y_label_area_size(100)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
    let x_fmt = |v: &f64| {
        if chart.x_percent {
            format!("{:.0}%", v * 100.0)
        } else {
            format!("{v:.1}")
        }
    };
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .axis_desc_style((FONT, 30))
        .label_style((FONT, 24))
        .x_labels(11)
        .y_labels(11)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|v: &f64| format!("{v:.1}"))
        .bold_line_style(RGBColor(210, 210, 210).stroke_width(1))
        .light_line_style(RGBColor(240, 240, 240).stroke_width(1))
        .axis_style(BLACK.stroke_width(2))
        .draw()
        .map_err(e)?;
    for (i, s) in chart.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        ctx.draw_series(LineSeries::new(
            s.points.iter().copied(),
            color.stroke_width(4),
        ))
        .map_err(e)?
        .label(s.label.as_str())
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 40, y)], color.stroke_width(4)));
    }
    let position = match chart.legend {
        LegendCorner::LowerLeft => SeriesLabelPosition::LowerLeft,
        LegendCorner::UpperLeft => SeriesLabelPosition::UpperLeft,
    };
    ctx.configure_series_labels()
        .position(position)
        .margin(25)
        .legend_area_size(50)
        .label_font((FONT, 28))
        .background_style(WHITE.mix(0.92))
        .border_style(RGBColor(120, 120, 120))
        .draw()
        .map_err(e)?;
    Ok(())
}
