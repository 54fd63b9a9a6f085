//! Figures a paper can use, from stored results, as SVG and PDF (vector) and PNG: accuracy vs ε per
//! model/defense with one panel per norm (the seed's Figure 1), accuracy vs ε per attack across
//! defenses, learning curves (Figures 5–7) and robust vs clean accuracy (the trade-off the seed
//! discusses).
//!
//! What a matplotlib user expects: every point is a mean over seeds with its spread (error
//! bars of ± one standard deviation, or a shaded band on learning curves) when there are
//! several; ℓ∞ and ℓ2 budgets never share an axis; a pixel ℓ∞ axis is ticked in k/255;
//! percentages tick as `20`, not `20.0`; epochs tick as integers; colour says the defense
//! (the model/defense) wherever defenses are compared and the marker says the attack; the
//! legend sits beside the panels, never on the data; nothing is written as text on the data.
//!
//! The split: [`figures`] turns a [`SweepReport`](super::SweepReport) into [`Figure`]s (pure
//! data, tested without drawing); [`draw`] renders a figure with plotters at any size and DPI
//! ([`Canvas`]).
//!
//! Text needs a TrueType font: `ADVSWEEP_FONT`, else DejaVu Sans / Liberation Sans from the
//! usual system paths. Without one, plots are skipped with a message; tables are unaffected.

mod draw;
pub mod figures;
mod pdf;
mod tradeoff;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

pub use figures::{accuracy_vs_epsilon, attack_across_defenses, learning_curves};
pub use tradeoff::robust_vs_clean;

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
];

/// Registers a font with plotters once; the error says what was tried.
/// The figure font's bytes, registered with plotters (once per process) as `sans-serif`.
fn ensure_font() -> Result<&'static [u8], String> {
    static FONT: OnceLock<Result<&'static [u8], String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os("ADVSWEEP_FONT") {
            candidates.push(PathBuf::from(p));
        }
        candidates.extend(FONT_CANDIDATES.iter().map(PathBuf::from));
        for path in &candidates {
            if let Ok(bytes) = std::fs::read(path) {
                // plotters keeps fonts for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(bytes);
                }
            }
        }
        Err(format!(
            "no TrueType font found (set ADVSWEEP_FONT, or install fonts-dejavu-core); tried {}",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
    .clone()
}

/// A point: the mean over seeds and, when there were several, the standard deviation along
/// each axis (0 for one seed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub x_err: f64,
    pub y_err: f64,
}

impl Point {
    pub fn at(x: f64, y: f64) -> Point {
        Point {
            x,
            y,
            x_err: 0.0,
            y_err: 0.0,
        }
    }
}

/// A marker shape; attacks (or budgets) are told apart by it, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Circle,
    Square,
    Triangle,
    Diamond,
    Cross,
    Plus,
}

impl Marker {
    const ALL: [Marker; 6] = [
        Marker::Circle,
        Marker::Square,
        Marker::Triangle,
        Marker::Diamond,
        Marker::Cross,
        Marker::Plus,
    ];

    /// The `i`-th marker (cycling).
    pub fn nth(i: usize) -> Marker {
        Marker::ALL[i % Marker::ALL.len()]
    }
}

/// How a series looks: a colour (an index into matplotlib's tab10; `None` for grey) and a
/// marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    pub color: Option<usize>,
    pub marker: Marker,
}

/// How the spread of a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// Error bars of ± one standard deviation at each point.
    Bars,
    /// A shaded band of ± one standard deviation around the line.
    Band,
}

/// A named set of points in a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub look: Look,
    pub points: Vec<Point>,
    /// Points joined by a line (false: a scatter).
    pub line: bool,
    pub spread: Spread,
}

/// How an axis is ticked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticks {
    /// Plain numbers, as few decimals as the range needs.
    Plain,
    /// Values are k of ε = k/255 (pixel ℓ∞ budgets): ticks read `2/255`, `8/255`.
    Per255,
    /// Whole numbers only (epochs).
    Integers,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub label: String,
    pub ticks: Ticks,
    /// A fixed range (accuracy: 0–100); otherwise the data's, padded.
    pub range: Option<(f64, f64)>,
}

/// One plot of a figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
}

/// A legend line.
#[derive(Debug, Clone, PartialEq)]
pub struct LegendEntry {
    pub text: String,
    pub look: Look,
    /// Show a line sample beside the marker.
    pub line: bool,
}

/// A figure: panels side by side, a title above, the legend to the right.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub title: String,
    pub panels: Vec<Panel>,
    pub legend: Vec<LegendEntry>,
}

impl Figure {
    /// Every series of every panel.
    pub fn series(&self) -> impl Iterator<Item = &Series> {
        self.panels.iter().flat_map(|p| p.series.iter())
    }
}

/// The size of the figures: inches and dots per inch (PNG pixels = inches × DPI; the SVG is
/// drawn at 100 units per inch, and scales without loss).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Canvas {
    pub width_in: f64,
    pub height_in: f64,
    pub dpi: u32,
}

impl Default for Canvas {
    /// 9 × 5 inches at 150 DPI (a 1350 × 750 PNG).
    fn default() -> Self {
        Canvas {
            width_in: 9.0,
            height_in: 5.0,
            dpi: 150,
        }
    }
}

impl Canvas {
    /// Parses `--figure-size` (`WxH` in inches, e.g. `6.5x4`) and `--dpi`; errors name the
    /// flag and the accepted range.
    pub fn parse(size: Option<&str>, dpi: Option<u32>) -> Result<Canvas, String> {
        let mut canvas = Canvas::default();
        if let Some(size) = size {
            let bad = || {
                format!(
                    "--figure-size `{size}`: expected WIDTHxHEIGHT in inches, e.g. 6.5x4 (each 2 to 40)"
                )
            };
            let (w, h) = size.split_once(['x', 'X', '×']).ok_or_else(bad)?;
            let (w, h): (f64, f64) = (
                w.trim().parse().map_err(|_| bad())?,
                h.trim().parse().map_err(|_| bad())?,
            );
            if !(2.0..=40.0).contains(&w) || !(2.0..=40.0).contains(&h) {
                return Err(bad());
            }
            canvas.width_in = w;
            canvas.height_in = h;
        }
        if let Some(dpi) = dpi {
            if !(50..=600).contains(&dpi) {
                return Err(format!("--dpi {dpi}: expected 50 to 600"));
            }
            canvas.dpi = dpi;
        }
        Ok(canvas)
    }

    fn pixels(&self, per_inch: f64) -> (u32, u32) {
        (
            (self.width_in * per_inch).round() as u32,
            (self.height_in * per_inch).round() as u32,
        )
    }
}

/// Writes `<stem>.svg`, `<stem>.pdf` (vector, for papers) and `<stem>.png`; returns the paths
/// written.
pub fn render(
    figure: &Figure,
    dir: &Path,
    stem: &str,
    canvas: Canvas,
) -> Result<Vec<PathBuf>, String> {
    let font = ensure_font()?;
    let svg = dir.join(format!("{stem}.svg"));
    let pdf = dir.join(format!("{stem}.pdf"));
    let png = dir.join(format!("{stem}.png"));
    {
        let size = canvas.pixels(100.0);
        let area = SVGBackend::new(&svg, size).into_drawing_area();
        draw::figure(&area, figure, 1.0)?;
    }
    {
        let size = canvas.pixels(100.0);
        let area = pdf::PdfBackend::new(&pdf, size, font)?.into_drawing_area();
        draw::figure(&area, figure, 1.0)?;
        area.present()
            .map_err(|e| format!("writing {}: {e}", pdf.display()))?;
    }
    {
        let dpi = f64::from(canvas.dpi);
        let size = canvas.pixels(dpi);
        let area = BitMapBackend::new(&png, size).into_drawing_area();
        draw::figure(&area, figure, dpi / 100.0)?;
    }
    Ok(vec![svg, pdf, png])
}

/// A file-name-safe version of a label: ASCII letters, digits, '-' and '.', everything else
/// '_'; never empty, and never starting with '.' (so never `.`, `..` or a hidden file), since a
/// slug of a sweep name is also a directory (`reports/<slug>/`).
pub fn slug(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with('.') {
        out.insert(0, '_');
    }
    out
}
