//! Drawing a [`Figure`] with plotters, identically on any backend (SVG, PNG): the title, the
//! panels side by side, the legend in its own strip to their right. Every size (fonts,
//! markers, strokes, margins) is multiplied by `scale`, so a 300-DPI PNG looks like the SVG.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Axis, Figure, LegendEntry, Look, Marker, Panel, Series, Spread, Ticks};

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

fn color(look: Look) -> RGBColor {
    match look.color {
        Some(i) => {
            let (r, g, b) = TAB10[i % TAB10.len()];
            RGBColor(r, g, b)
        }
        None => RGBColor(90, 90, 90),
    }
}

type DrawResult = Result<(), String>;

fn px(v: f64, scale: f64) -> i32 {
    (v * scale).round() as i32
}

fn font(size: f64, scale: f64) -> TextStyle<'static> {
    TextStyle::from(("sans-serif", size * scale).into_font())
}

/// Draws `figure` on `area`.
pub(super) fn figure<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    figure: &Figure,
    scale: f64,
) -> DrawResult {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("drawing {}: {e:?}", figure.title);
    area.fill(&WHITE).map_err(err)?;
    let body = area.titled(&figure.title, font(19.0, scale)).map_err(err)?;
    let (width, _) = body.dim_in_pixel();
    // The legend's strip: as wide as its longest line needs, at most 40 % of the figure.
    let legend_font = font(13.0, scale);
    let text_width = figure
        .legend
        .iter()
        .filter_map(|e| body.estimate_text_size(&e.text, &legend_font).ok())
        .map(|(w, _)| w)
        .max()
        .unwrap_or(0);
    let strip = if figure.legend.is_empty() {
        0
    } else {
        (text_width + px(64.0, scale) as u32).min(width * 2 / 5)
    };
    let (plots, legend) = body.split_horizontally(width - strip);
    let columns = figure.panels.len().max(1);
    for (cell, panel) in plots.split_evenly((1, columns)).iter().zip(&figure.panels) {
        draw_panel(cell, panel, scale).map_err(|e| format!("{}: {e}", figure.title))?;
    }
    if !figure.legend.is_empty() {
        draw_legend(&legend, &figure.legend, scale).map_err(err)?;
    }
    area.present().map_err(err)
}

/// The padded range of an axis over the points (their spread included).
fn data_range(axis: &Axis, values: impl Iterator<Item = (f64, f64)>, pad: f64) -> (f64, f64) {
    if let Some((a, b)) = axis
        .range
        .filter(|(a, b)| a.is_finite() && b.is_finite() && a < b)
    {
        return (a, b);
    }
    let (lo, hi) = values
        .filter(|(v, e)| v.is_finite() && e.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (v, e)| {
            (a.min(v - e), b.max(v + e))
        });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    // Halved before subtracting so that the width itself cannot overflow.
    let half = hi / 2.0 - lo / 2.0;
    if half <= 5e-13 {
        // One value (a sweep at a single ε): 0 to twice it, the point in the middle.
        return if lo > 0.0 {
            (0.0, 2.0 * lo)
        } else {
            (lo - 1.0, lo + 1.0)
        };
    }
    // A margin on both sides, as matplotlib's: a point at ε = 0 sits off the axis line.
    let (a, b) = (lo - 2.0 * pad * half, hi + 2.0 * pad * half);
    if a.is_finite() && b.is_finite() {
        (a, b)
    } else {
        (lo, hi)
    }
}

/// A tick's text.
fn tick(ticks: Ticks, v: f64, span: f64) -> String {
    let plain = |v: f64| {
        let decimals = if span >= 20.0 {
            0
        } else if span >= 2.0 {
            1
        } else if span >= 0.2 {
            2
        } else {
            3
        };
        let text = format!("{v:.decimals$}");
        let text = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            text
        };
        if text == "-0" { "0".to_owned() } else { text }
    };
    match ticks {
        Ticks::Plain => plain(v),
        Ticks::Integers => {
            if (v - v.round()).abs() < 1e-9 {
                format!("{}", v.round() as i64)
            } else {
                String::new()
            }
        }
        Ticks::Per255 => {
            if v.abs() < 1e-9 {
                "0".to_owned()
            } else {
                format!("{}/255", plain(v))
            }
        }
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    scale: f64,
) -> DrawResult {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("{}: {e:?}", panel.title);
    let points = || panel.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = data_range(&panel.x, points().map(|p| (p.x, p.x_err)), 0.05);
    let (y0, y1) = data_range(&panel.y, points().map(|p| (p.y, p.y_err)), 0.06);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, font(15.0, scale))
        .margin(px(12.0, scale))
        .x_label_area_size(px(44.0, scale))
        .y_label_area_size(px(52.0, scale))
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    let x_labels = match panel.x.ticks {
        Ticks::Integers => ((x1 - x0).floor() as usize + 1).clamp(2, 10),
        _ => 6,
    };
    let x_format = |v: &f64| tick(panel.x.ticks, *v, x1 - x0);
    let y_format = |v: &f64| tick(panel.y.ticks, *v, y1 - y0);
    chart
        .configure_mesh()
        .x_desc(panel.x.label.as_str())
        .y_desc(panel.y.label.as_str())
        .x_labels(x_labels)
        .y_labels(6)
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .label_style(font(12.0, scale))
        .axis_desc_style(font(13.0, scale))
        .bold_line_style(BLACK.mix(0.08))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for series in &panel.series {
        draw_series(&mut chart, series, scale).map_err(err)?;
    }
    Ok(())
}

type Chart<'a, DB> = ChartContext<
    'a,
    DB,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

fn draw_series<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    series: &Series,
    scale: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let c = color(series.look);
    let pts = &series.points;
    let spread = pts.iter().any(|p| p.y_err > 0.0 || p.x_err > 0.0);
    if spread && series.spread == Spread::Band && pts.len() > 1 {
        let mut outline: Vec<(f64, f64)> = pts.iter().map(|p| (p.x, p.y + p.y_err)).collect();
        outline.extend(pts.iter().rev().map(|p| (p.x, p.y - p.y_err)));
        chart.draw_series(std::iter::once(Polygon::new(outline, c.mix(0.18).filled())))?;
    }
    if series.line && pts.len() > 1 {
        chart.draw_series(LineSeries::new(
            pts.iter().map(|p| (p.x, p.y)),
            c.stroke_width(px(2.0, scale).max(1) as u32),
        ))?;
    }
    if spread && (series.spread == Spread::Bars || pts.len() == 1) {
        let stroke = c.stroke_width(px(1.5, scale).max(1) as u32);
        let cap = px(4.0, scale);
        for p in pts {
            if p.y_err > 0.0 {
                let (lo, hi) = ((p.x, p.y - p.y_err), (p.x, p.y + p.y_err));
                chart.draw_series(std::iter::once(PathElement::new(vec![lo, hi], stroke)))?;
                for end in [lo, hi] {
                    chart.draw_series(std::iter::once(
                        EmptyElement::at(end) + PathElement::new(vec![(-cap, 0), (cap, 0)], stroke),
                    ))?;
                }
            }
            if p.x_err > 0.0 {
                let (lo, hi) = ((p.x - p.x_err, p.y), (p.x + p.x_err, p.y));
                chart.draw_series(std::iter::once(PathElement::new(vec![lo, hi], stroke)))?;
                for end in [lo, hi] {
                    chart.draw_series(std::iter::once(
                        EmptyElement::at(end) + PathElement::new(vec![(0, -cap), (0, cap)], stroke),
                    ))?;
                }
            }
        }
    }
    let size = px(if series.line { 4.0 } else { 5.5 }, scale);
    for p in pts {
        draw_marker(chart, (p.x, p.y), series.look, size, scale)?;
    }
    Ok(())
}

fn draw_marker<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    at: (f64, f64),
    look: Look,
    r: i32,
    scale: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let fill = color(look).filled();
    let stroke = color(look).stroke_width(px(2.0, scale).max(1) as u32);
    let area = chart.plotting_area();
    match look.marker {
        Marker::Circle => area.draw(&(EmptyElement::at(at) + Circle::new((0, 0), r, fill))),
        Marker::Square => {
            let s = r * 9 / 10;
            area.draw(&(EmptyElement::at(at) + Rectangle::new([(-s, -s), (s, s)], fill)))
        }
        Marker::Triangle => area.draw(
            &(EmptyElement::at(at)
                + Polygon::new(vec![(0, -r - 1), (r + 1, r), (-r - 1, r)], fill)),
        ),
        Marker::Diamond => area.draw(
            &(EmptyElement::at(at)
                + Polygon::new(vec![(0, -r - 1), (r + 1, 0), (0, r + 1), (-r - 1, 0)], fill)),
        ),
        Marker::Cross => {
            area.draw(&(EmptyElement::at(at) + PathElement::new(vec![(-r, -r), (r, r)], stroke)))?;
            area.draw(&(EmptyElement::at(at) + PathElement::new(vec![(-r, r), (r, -r)], stroke)))
        }
        Marker::Plus => {
            let r = r + 1;
            area.draw(&(EmptyElement::at(at) + PathElement::new(vec![(-r, 0), (r, 0)], stroke)))?;
            area.draw(&(EmptyElement::at(at) + PathElement::new(vec![(0, -r), (0, r)], stroke)))
        }
    }
}

/// The legend: one line per entry, a line sample and the marker, then the text.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
    scale: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let text_style = font(13.0, scale).pos(Pos::new(HPos::Left, VPos::Center));
    let line_height = px(22.0, scale);
    let top = px(56.0, scale);
    let x = px(10.0, scale);
    for (i, e) in entries.iter().enumerate() {
        let y = top + i as i32 * line_height;
        let c = color(e.look);
        if e.line {
            area.draw(&PathElement::new(
                vec![(x, y), (x + px(28.0, scale), y)],
                c.stroke_width(px(2.0, scale).max(1) as u32),
            ))?;
        }
        let r = px(4.5, scale);
        let centre = (x + px(14.0, scale), y);
        let fill = c.filled();
        let stroke = c.stroke_width(px(2.0, scale).max(1) as u32);
        match e.look.marker {
            Marker::Circle => area.draw(&Circle::new(centre, r, fill))?,
            Marker::Square => area.draw(&Rectangle::new(
                [(centre.0 - r, centre.1 - r), (centre.0 + r, centre.1 + r)],
                fill,
            ))?,
            Marker::Triangle => area.draw(&Polygon::new(
                vec![
                    (centre.0, centre.1 - r - 1),
                    (centre.0 + r + 1, centre.1 + r),
                    (centre.0 - r - 1, centre.1 + r),
                ],
                fill,
            ))?,
            Marker::Diamond => area.draw(&Polygon::new(
                vec![
                    (centre.0, centre.1 - r - 1),
                    (centre.0 + r + 1, centre.1),
                    (centre.0, centre.1 + r + 1),
                    (centre.0 - r - 1, centre.1),
                ],
                fill,
            ))?,
            Marker::Cross => {
                area.draw(&PathElement::new(
                    vec![(centre.0 - r, centre.1 - r), (centre.0 + r, centre.1 + r)],
                    stroke,
                ))?;
                area.draw(&PathElement::new(
                    vec![(centre.0 - r, centre.1 + r), (centre.0 + r, centre.1 - r)],
                    stroke,
                ))?
            }
            Marker::Plus => {
                area.draw(&PathElement::new(
                    vec![(centre.0 - r - 1, centre.1), (centre.0 + r + 1, centre.1)],
                    stroke,
                ))?;
                area.draw(&PathElement::new(
                    vec![(centre.0, centre.1 - r - 1), (centre.0, centre.1 + r + 1)],
                    stroke,
                ))?
            }
        }
        area.draw(&Text::new(
            e.text.clone(),
            (x + px(36.0, scale), y),
            text_style.clone(),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_read_as_a_paper_writes_them() {
        assert_eq!(tick(Ticks::Per255, 8.0, 9.0), "8/255");
        assert_eq!(tick(Ticks::Per255, 0.0, 9.0), "0");
        assert_eq!(tick(Ticks::Per255, 0.5, 1.0), "0.5/255");
        assert_eq!(tick(Ticks::Plain, 100.0, 100.0), "100");
        assert_eq!(tick(Ticks::Plain, 20.0, 100.0), "20");
        assert_eq!(tick(Ticks::Plain, 0.25, 1.0), "0.25");
        assert_eq!(tick(Ticks::Integers, 3.0, 8.0), "3");
        assert_eq!(tick(Ticks::Integers, 2.5, 8.0), "");
    }

    #[test]
    fn ranges_hold_the_spread_with_a_margin() {
        let axis = Axis {
            label: String::new(),
            ticks: Ticks::Plain,
            range: None,
        };
        let (a, b) = data_range(&axis, [(1.0, 0.5), (3.0, 1.0)].into_iter(), 0.05);
        assert!(a <= 0.5 && a >= 0.0 && b >= 4.0, "{a} {b}");
        assert_eq!(
            data_range(&axis, [(8.0, 0.0)].into_iter(), 0.05),
            (0.0, 16.0)
        );
        assert_eq!(
            data_range(&axis, [(f64::NAN, 0.0)].into_iter(), 0.05),
            (0.0, 1.0)
        );
    }
}
