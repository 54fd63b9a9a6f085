//! The seed's figures from stored results, as SVG and PNG (plotters): accuracy vs ε per attack
//! for each model/defense (Figure 1), learning curves of every run (Figures 5–7), and robust vs
//! clean accuracy (the trade-off the seed discusses).
//!
//! Text needs a TrueType font: `ADVSWEEP_FONT`, else DejaVu Sans / Liberation Sans from the
//! usual system paths. Without one, plots are skipped with a message; tables are unaffected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use advsweep_core::ShownState;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::epsilon;
use super::pivot::mean_std;
use super::records::SweepReport;

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
];

/// Registers a font with plotters once; the error says what was tried.
fn ensure_font() -> Result<(), String> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
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
                    return Ok(());
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

/// A named line of (x, y) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Text drawn next to each point (scatter plots), or empty.
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corner {
    UpperRight,
    LowerRight,
    LowerLeft,
}

/// Matplotlib's "tab10": distinct, readable on white, familiar from papers.
const TAB10: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

fn color(i: usize) -> RGBAColor {
    let (r, g, b) = TAB10[i % TAB10.len()];
    RGBColor(r, g, b).to_rgba()
}

/// A line chart, drawn identically to SVG and PNG.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Draw markers only (a scatter), no lines.
    pub scatter: bool,
    /// Where the legend goes: the corner the data is least likely to use.
    pub legend: Corner,
    pub y_range: Option<(f64, f64)>,
}

type DrawResult = Result<(), String>;

fn draw<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, chart: &Chart) -> DrawResult {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("drawing {}: {e:?}", chart.title);
    area.fill(&WHITE).map_err(err)?;
    let xs = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1));
    let pad = if chart.scatter { 0.15 } else { 0.04 };
    // One x value (a sweep at a single ε): the axis spans 0 to twice it, the point in the
    // middle, instead of a unit-wide axis that squeezes 8/255 against the left edge.
    let (x0, x1) = axis_range(xs, pad, |x| {
        if x > 0.0 && x.is_finite() {
            (0.0, 2.0 * x)
        } else {
            (x - 1.0, x + 1.0)
        }
    });
    let (y0, y1) = chart
        .y_range
        .filter(|(a, b)| a.is_finite() && b.is_finite() && a < b)
        .unwrap_or_else(|| axis_range(ys, 0.05, |_| (0.0, 1.0)));
    let mut c = ChartBuilder::on(area)
        .caption(&chart.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for (i, s) in chart.series.iter().enumerate() {
        let color = color(i);
        if !chart.scatter {
            c.draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(err)?;
        }
        c.draw_series(s.points.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(err)?
            .label(s.name.as_str())
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
        c.draw_series(s.points.iter().zip(&s.labels).map(|(p, l)| {
            Text::new(
                l.clone(),
                (p.0, p.1),
                ("sans-serif", 12).into_font().color(&BLACK.mix(0.7)),
            )
        }))
        .map_err(err)?;
    }
    if !chart.series.is_empty() {
        c.configure_series_labels()
            .position(match chart.legend {
                Corner::UpperRight => SeriesLabelPosition::UpperRight,
                Corner::LowerRight => SeriesLabelPosition::LowerRight,
                Corner::LowerLeft => SeriesLabelPosition::LowerLeft,
            })
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(err)?;
    }
    area.present().map_err(err)
}

/// Writes `<stem>.svg` and `<stem>.png`; returns the paths written.
pub fn render(chart: &Chart, dir: &Path, stem: &str) -> Result<Vec<PathBuf>, String> {
    ensure_font()?;
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    {
        let area = SVGBackend::new(&svg, (900, 560)).into_drawing_area();
        draw(&area, chart)?;
    }
    {
        let area = BitMapBackend::new(&png, (900, 560)).into_drawing_area();
        draw(&area, chart)?;
    }
    Ok(vec![svg, png])
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

/// An axis range that plotters can draw: finite, non-empty, with `pad` of its width around
/// (`single` when all values are equal). Data may be anything (a diverged loss of 1e308, NaN);
/// non-finite values are left out and the range never overflows to ∞.
fn axis_range(
    values: impl Iterator<Item = f64>,
    pad: f64,
    single: impl Fn(f64) -> (f64, f64),
) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    // Halved before subtracting so that the width itself cannot overflow.
    let half = hi / 2.0 - lo / 2.0;
    if half <= 5e-13 {
        return single(lo);
    }
    let (a, b) = (lo - 2.0 * pad * half, hi + 2.0 * pad * half);
    if a.is_finite() && b.is_finite() {
        (a, b)
    } else {
        (lo, hi)
    }
}

fn mean_points(map: BTreeMap<u64, (f64, Vec<f64>)>) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = map
        .into_values()
        .map(|(x, ys)| (x, mean_std(&ys).0))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

/// Figure 1: accuracy (%) vs ε, one chart per model/defense, one line per attack (mean over
/// seeds). For an untied model the clean accuracy is each line's point at ε = 0.
pub fn accuracy_vs_epsilon(r: &SweepReport) -> Vec<((String, String), Chart)> {
    let mut groups: Vec<(String, String)> = Vec::new();
    for c in &r.cells {
        let g = (c.model.clone(), c.defense.clone());
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    let mut charts = Vec::new();
    for (model, defense) in groups {
        let cells: Vec<_> = r
            .cells
            .iter()
            .filter(|c| c.model == model && c.defense == defense && c.state == ShownState::Done)
            .collect();
        let clean_at_zero: Vec<f64> = cells
            .iter()
            .filter(|c| c.attack == "none" && c.epsilon == 0.0)
            .filter_map(|c| c.result.as_ref().map(|x| 100.0 * x.accuracy))
            .collect();
        let mut attacks: Vec<String> = Vec::new();
        for c in &cells {
            if !attacks.contains(&c.attack) {
                attacks.push(c.attack.clone());
            }
        }
        let mut series = Vec::new();
        for attack in attacks {
            let mut by_eps: BTreeMap<u64, (f64, Vec<f64>)> = BTreeMap::new();
            for c in cells.iter().filter(|c| c.attack == attack) {
                if let Some(res) = &c.result {
                    by_eps
                        .entry(c.epsilon.to_bits())
                        .or_insert((c.epsilon, Vec::new()))
                        .1
                        .push(100.0 * res.accuracy);
                }
            }
            if attack == "none" && by_eps.len() <= 1 {
                continue; // drawn as the ε = 0 point of every attack
            }
            let mut points = mean_points(by_eps);
            if attack != "none" && !clean_at_zero.is_empty() {
                points.insert(0, (0.0, mean_std(&clean_at_zero).0));
            }
            series.push(Series {
                name: if attack == "none" {
                    "clean".into()
                } else {
                    attack
                },
                points,
                labels: Vec::new(),
            });
        }
        if series.is_empty() {
            continue;
        }
        charts.push((
            (model.clone(), defense.clone()),
            Chart {
                title: format!("{model} / {defense}: accuracy vs ε"),
                x_label: match cells.first().map(|c| c.epsilon_space) {
                    Some(advsweep_core::EpsilonSpace::Normalized) => {
                        "ε (normalized inputs, units of σ)".into()
                    }
                    _ => "ε (pixels in [0, 1])".into(),
                },
                y_label: "accuracy (%)".into(),
                series,
                scatter: false,
                // Accuracy falls with ε: the lower left corner stays empty.
                legend: Corner::LowerLeft,
                y_range: Some((0.0, 100.0)),
            },
        ));
    }
    charts
}

fn run_label(run: &super::records::RunRecord) -> String {
    let mut s = format!("{}/{}", run.model, run.defense);
    if let Some(e) = run.defense_epsilon {
        s.push_str(&format!(" ε={}", epsilon::label_in(e, run.epsilon_space)));
    }
    s.push_str(&format!(" s{}", run.seed));
    s
}

/// Figures 5–7: test accuracy and training loss per epoch, one line per run.
pub fn learning_curves(r: &SweepReport) -> Vec<(&'static str, Chart)> {
    let runs: Vec<_> = r.runs.iter().filter(|x| !x.epochs.is_empty()).collect();
    if runs.is_empty() {
        return Vec::new();
    }
    let series = |f: &dyn Fn(&advsweep_core::EpochMetrics) -> f64| -> Vec<Series> {
        runs.iter()
            .map(|run| Series {
                name: run_label(run),
                labels: Vec::new(),
                points: run
                    .epochs
                    .iter()
                    .filter(|e| f(e).is_finite())
                    .map(|e| (f64::from(e.epoch), f(e)))
                    .collect(),
            })
            .collect()
    };
    vec![
        (
            "learning_curves_test_accuracy",
            Chart {
                title: "clean test accuracy per epoch".into(),
                x_label: "epoch".into(),
                y_label: "test accuracy (%)".into(),
                series: series(&|e| 100.0 * e.test_accuracy),
                scatter: false,
                legend: Corner::LowerRight,
                y_range: Some((0.0, 100.0)),
            },
        ),
        (
            "learning_curves_train_loss",
            Chart {
                title: "training loss per epoch".into(),
                x_label: "epoch".into(),
                y_label: "training loss".into(),
                series: series(&|e| e.train_loss),
                scatter: false,
                legend: Corner::UpperRight,
                y_range: None,
            },
        ),
    ]
}

/// Robust vs clean accuracy: per run and ε, the worst accuracy over the attacks run at that ε
/// against the run's clean accuracy; one series per ε.
pub fn robust_vs_clean(r: &SweepReport) -> Option<Chart> {
    // Every run of a sweep shares the sweep file's ε space.
    let space = r
        .runs
        .first()
        .map_or(advsweep_core::EpsilonSpace::Pixel, |run| run.epsilon_space);
    // ε bits -> (ε, points, point labels)
    type Scatter = (f64, Vec<(f64, f64)>, Vec<String>);
    let mut by_eps: BTreeMap<u64, Scatter> = BTreeMap::new();
    for run in &r.runs {
        let cells: Vec<_> = r
            .cells
            .iter()
            .filter(|c| c.run_id == run.run_id && c.state == ShownState::Done)
            .collect();
        let Some(clean) = cells
            .iter()
            .find(|c| c.attack == "none")
            .and_then(|c| c.result.as_ref().map(|x| x.accuracy))
        else {
            continue;
        };
        let mut worst: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for c in cells
            .iter()
            .filter(|c| c.attack != "none" && c.epsilon > 0.0)
        {
            if let Some(res) = &c.result {
                let e = worst
                    .entry(c.epsilon.to_bits())
                    .or_insert((c.epsilon, f64::INFINITY));
                e.1 = e.1.min(res.accuracy);
            }
        }
        for (bits, (eps, acc)) in worst {
            let entry = by_eps.entry(bits).or_insert((eps, Vec::new(), Vec::new()));
            entry.1.push((100.0 * clean, 100.0 * acc));
            entry.2.push(format!("  {}/{}", run.model, run.defense));
        }
    }
    if by_eps.is_empty() {
        return None;
    }
    Some(Chart {
        title: "robust vs clean accuracy (worst attack per ε)".into(),
        x_label: "clean accuracy (%)".into(),
        y_label: "robust accuracy (%)".into(),
        series: by_eps
            .into_values()
            .map(|(eps, points, labels)| Series {
                name: format!("ε={}", epsilon::label_in(eps, space)),
                points,
                labels,
            })
            .collect(),
        scatter: true,
        legend: Corner::LowerLeft,
        y_range: Some((0.0, 100.0)),
    })
}
