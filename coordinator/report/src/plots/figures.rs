//! The figures of a sweep, as data ([`Figure`]): which points, with which spread, in which
//! panel, coloured and marked how. Drawing is [`super::draw`]'s.
//!
//! Conventions: every point is the mean over the seeds of a setting, its error the sample
//! standard deviation (0 with one seed); ε axes are per norm (an attack's norm comes from its
//! resolved spec, or for a report without one from its name: `…l2` is ℓ2), in k/255 for
//! pixel ℓ∞ budgets; colours are per model/defense in the figures that compare defenses and
//! per attack in a single defense's figure; markers are per attack (per budget in the
//! robust-vs-clean scatter).

use std::collections::BTreeMap;

use advsweep_core::{EpsilonSpace, Norm, ShownState};

use super::{Axis, Figure, LegendEntry, Look, Marker, Panel, Point, Series, Spread, Ticks};
use crate::epsilon;
use crate::pivot::mean_std;
use crate::records::{CellRecord, RunRecord, SweepReport};

/// The norm of a cell's attack (`None` for a clean cell).
pub(super) fn norm_of(c: &CellRecord) -> Option<Norm> {
    if c.attack == "none" {
        return None;
    }
    match &c.attack_spec {
        Some(a) => a.norm(),
        None if c.attack.ends_with("l2") => Some(Norm::L2),
        None => Some(Norm::Linf),
    }
}

/// How ε is put on an axis for `norm` in `space`: the value, the ticks and the axis label.
fn epsilon_axis(norm: Norm, space: EpsilonSpace) -> (fn(f64) -> f64, Axis) {
    let per255 = |e: f64| e * 255.0;
    let same = |e: f64| e;
    match (norm, space) {
        (Norm::Linf, EpsilonSpace::Pixel) => (
            per255,
            Axis {
                label: "ℓ∞ budget ε (pixels in [0, 1])".into(),
                ticks: Ticks::Per255,
                range: None,
            },
        ),
        (Norm::L2, EpsilonSpace::Pixel) => (
            same,
            Axis {
                label: "ℓ2 budget ε (pixels in [0, 1])".into(),
                ticks: Ticks::Plain,
                range: None,
            },
        ),
        (norm, EpsilonSpace::Normalized) => (
            same,
            Axis {
                label: format!(
                    "{} budget ε (normalized inputs, units of σ)",
                    norm_symbol(norm)
                ),
                ticks: Ticks::Plain,
                range: None,
            },
        ),
    }
}

fn norm_symbol(norm: Norm) -> &'static str {
    match norm {
        Norm::Linf => "ℓ∞",
        Norm::L2 => "ℓ2",
    }
}

fn accuracy_axis(label: &str) -> Axis {
    Axis {
        label: label.into(),
        ticks: Ticks::Plain,
        range: Some((0.0, 100.0)),
    }
}

/// Mean and standard deviation of `values` as a point's coordinate and error.
pub(super) fn spread(values: &[f64]) -> (f64, f64) {
    let (mean, std) = mean_std(values);
    (mean, if std.is_finite() { std } else { 0.0 })
}

/// Items in the order first seen.
pub(super) fn first_seen<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// The sweep's model/defense pairs (colours) and attacks (markers), in file order.
pub(super) struct Palette {
    groups: Vec<(String, String)>,
    attacks: Vec<String>,
}

impl Palette {
    pub(super) fn of(r: &SweepReport) -> Palette {
        Palette {
            groups: first_seen(
                // Cells first: a run shared by several defenses is labelled by one of them.
                r.cells
                    .iter()
                    .map(|c| (c.model.clone(), c.defense.clone()))
                    .chain(r.runs.iter().map(|x| (x.model.clone(), x.defense.clone()))),
            ),
            attacks: first_seen(
                r.cells
                    .iter()
                    .filter(|c| c.attack != "none")
                    .map(|c| c.attack.clone()),
            ),
        }
    }

    pub(super) fn group(&self, model: &str, defense: &str) -> usize {
        self.groups
            .iter()
            .position(|(m, d)| m == model && d == defense)
            .unwrap_or(0)
    }

    fn attack(&self, attack: &str) -> usize {
        self.attacks.iter().position(|a| a == attack).unwrap_or(0)
    }
}

/// 100 × the accuracy of each finished cell among `cells`, grouped by ε (in ε order).
fn accuracy_by_epsilon<'a>(cells: impl Iterator<Item = &'a CellRecord>) -> Vec<(f64, Vec<f64>)> {
    let mut by: BTreeMap<u64, (f64, Vec<f64>)> = BTreeMap::new();
    for c in cells {
        if let Some(res) = &c.result {
            by.entry(c.epsilon.to_bits())
                .or_insert((c.epsilon, Vec::new()))
                .1
                .push(100.0 * res.accuracy);
        }
    }
    let mut out: Vec<(f64, Vec<f64>)> = by.into_values().collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

fn points(by_eps: &[(f64, Vec<f64>)], x: fn(f64) -> f64) -> Vec<Point> {
    by_eps
        .iter()
        .map(|(eps, ys)| {
            let (y, y_err) = spread(ys);
            Point {
                x: x(*eps),
                y,
                x_err: 0.0,
                y_err,
            }
        })
        .collect()
}

fn done<'a>(r: &'a SweepReport, model: &str, defense: &str) -> Vec<&'a CellRecord> {
    r.cells
        .iter()
        .filter(|c| c.model == model && c.defense == defense && c.state == ShownState::Done)
        .collect()
}

/// The clean accuracy at ε = 0 of a model/defense trained without a budget (mean, std), if
/// its clean cells are all at ε = 0.
fn clean_at_zero(cells: &[&CellRecord]) -> Option<(f64, f64)> {
    let clean: Vec<&&CellRecord> = cells.iter().filter(|c| c.attack == "none").collect();
    if clean.is_empty() || clean.iter().any(|c| c.epsilon != 0.0) {
        return None;
    }
    let values: Vec<f64> = clean
        .iter()
        .filter_map(|c| c.result.as_ref().map(|x| 100.0 * x.accuracy))
        .collect();
    (!values.is_empty()).then(|| spread(&values))
}

fn with_clean(mut pts: Vec<Point>, clean: Option<(f64, f64)>) -> Vec<Point> {
    if let Some((y, y_err)) = clean {
        pts.insert(
            0,
            Point {
                x: 0.0,
                y,
                x_err: 0.0,
                y_err,
            },
        );
    }
    pts
}

const NORMS: [Norm; 2] = [Norm::Linf, Norm::L2];

/// Figure 1: accuracy (%) vs ε for each model/defense, one panel per norm, one line per
/// attack (colour and marker per attack), starting from the clean accuracy at ε = 0. A
/// defense trained at each ε (tied) has its clean accuracy as a grey line over ε instead.
pub fn accuracy_vs_epsilon(r: &SweepReport) -> Vec<((String, String), Figure)> {
    let palette = Palette::of(r);
    let space = r
        .runs
        .first()
        .map_or(EpsilonSpace::Pixel, |x| x.epsilon_space);
    let mut figures = Vec::new();
    for (model, defense) in &palette.groups {
        let cells = done(r, model, defense);
        let clean0 = clean_at_zero(&cells);
        let tied_clean = if clean0.is_none() {
            accuracy_by_epsilon(cells.iter().copied().filter(|c| c.attack == "none"))
        } else {
            Vec::new()
        };
        let mut panels = Vec::new();
        let mut legend: Vec<LegendEntry> = Vec::new();
        let norms: Vec<Norm> = NORMS
            .into_iter()
            .filter(|n| cells.iter().any(|c| norm_of(c) == Some(*n)))
            .collect();
        let norms = if norms.is_empty() && tied_clean.len() > 1 {
            vec![Norm::Linf]
        } else {
            norms
        };
        for norm in &norms {
            let (x, x_axis) = epsilon_axis(*norm, space);
            let mut series = Vec::new();
            if tied_clean.len() > 1 {
                series.push(Series {
                    name: "clean".into(),
                    look: Look {
                        color: None,
                        marker: Marker::Circle,
                    },
                    points: points(&tied_clean, x),
                    line: true,
                    spread: Spread::Bars,
                });
            }
            let attacks = first_seen(
                cells
                    .iter()
                    .filter(|c| norm_of(c) == Some(*norm))
                    .map(|c| c.attack.clone()),
            );
            for attack in attacks {
                let i = palette.attack(&attack);
                let by = accuracy_by_epsilon(cells.iter().copied().filter(|c| c.attack == attack));
                series.push(Series {
                    name: attack,
                    look: Look {
                        color: Some(i),
                        marker: Marker::nth(i),
                    },
                    points: with_clean(points(&by, x), clean0),
                    line: true,
                    spread: Spread::Bars,
                });
            }
            for s in &series {
                if !legend.iter().any(|e| e.text == s.name) {
                    legend.push(LegendEntry {
                        text: s.name.clone(),
                        look: s.look,
                        line: true,
                    });
                }
            }
            panels.push(Panel {
                title: if norms.len() > 1 {
                    format!("{} attacks", norm_symbol(*norm))
                } else {
                    String::new()
                },
                x: x_axis,
                y: accuracy_axis("accuracy (%)"),
                series,
            });
        }
        if panels.iter().all(|p| p.series.is_empty()) {
            continue;
        }
        figures.push((
            (model.clone(), defense.clone()),
            Figure {
                title: format!("{model} / {defense}: accuracy vs ε"),
                panels,
                legend,
            },
        ));
    }
    figures
}

/// Accuracy (%) vs ε of one attack across every model/defense (colour per model/defense, the
/// attack's marker), when the sweep has more than one.
pub fn attack_across_defenses(r: &SweepReport) -> Vec<(String, Figure)> {
    let palette = Palette::of(r);
    if palette.groups.len() < 2 {
        return Vec::new();
    }
    let space = r
        .runs
        .first()
        .map_or(EpsilonSpace::Pixel, |x| x.epsilon_space);
    let mut figures = Vec::new();
    for attack in &palette.attacks {
        let Some(norm) = r
            .cells
            .iter()
            .find(|c| &c.attack == attack)
            .and_then(norm_of)
        else {
            continue;
        };
        let (x, x_axis) = epsilon_axis(norm, space);
        let marker = Marker::nth(palette.attack(attack));
        let mut series = Vec::new();
        for (model, defense) in &palette.groups {
            let cells = done(r, model, defense);
            let by = accuracy_by_epsilon(cells.iter().copied().filter(|c| &c.attack == attack));
            if by.is_empty() {
                continue;
            }
            series.push(Series {
                name: format!("{model}/{defense}"),
                look: Look {
                    color: Some(palette.group(model, defense)),
                    marker,
                },
                points: with_clean(points(&by, x), clean_at_zero(&cells)),
                line: true,
                spread: Spread::Bars,
            });
        }
        if series.is_empty() {
            continue;
        }
        let legend = series
            .iter()
            .map(|s| LegendEntry {
                text: s.name.clone(),
                look: s.look,
                line: true,
            })
            .collect();
        figures.push((
            attack.clone(),
            Figure {
                title: format!("{attack}: accuracy vs ε across defenses"),
                panels: vec![Panel {
                    title: String::new(),
                    x: x_axis,
                    y: accuracy_axis("accuracy under attack (%)"),
                    series,
                }],
                legend,
            },
        ));
    }
    figures
}

/// A run's setting without its seed: model/defense and the ε it was trained at.
pub(super) fn setting(run: &RunRecord) -> String {
    let mut s = format!("{}/{}", run.model, run.defense);
    if let Some(e) = run.defense_epsilon {
        s.push_str(&format!(" ε={}", epsilon::label_in(e, run.epsilon_space)));
    }
    s
}

pub(super) fn seeds_note(n: usize) -> String {
    match n {
        1 => String::new(),
        n => format!(" ({n} seeds)"),
    }
}

/// Figures 5–7: clean test accuracy and training loss per epoch, one line per setting (the
/// mean over its seeds, with a band of ± one standard deviation).
pub fn learning_curves(r: &SweepReport) -> Vec<(&'static str, Figure)> {
    let runs: Vec<&RunRecord> = r.runs.iter().filter(|x| !x.epochs.is_empty()).collect();
    if runs.is_empty() {
        return Vec::new();
    }
    let settings = first_seen(runs.iter().map(|run| setting(run)));
    let curve = |f: &dyn Fn(&advsweep_core::EpochMetrics) -> f64| -> Vec<Series> {
        settings
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let of: Vec<&&RunRecord> = runs.iter().filter(|x| &setting(x) == name).collect();
                let mut by: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
                for run in &of {
                    for e in &run.epochs {
                        if f(e).is_finite() {
                            by.entry(e.epoch).or_default().push(f(e));
                        }
                    }
                }
                Series {
                    name: format!("{name}{}", seeds_note(of.len())),
                    look: Look {
                        color: Some(i),
                        marker: Marker::Circle,
                    },
                    points: by
                        .into_iter()
                        .map(|(epoch, ys)| {
                            let (y, y_err) = spread(&ys);
                            Point {
                                x: f64::from(epoch),
                                y,
                                x_err: 0.0,
                                y_err,
                            }
                        })
                        .collect(),
                    line: true,
                    spread: Spread::Band,
                }
            })
            .collect()
    };
    let figure = |title: &str, y: Axis, series: Vec<Series>| Figure {
        title: title.into(),
        legend: series
            .iter()
            .map(|s| LegendEntry {
                text: s.name.clone(),
                look: s.look,
                line: true,
            })
            .collect(),
        panels: vec![Panel {
            title: String::new(),
            x: Axis {
                label: "epoch".into(),
                ticks: Ticks::Integers,
                range: None,
            },
            y,
            series,
        }],
    };
    vec![
        (
            "learning_curves_test_accuracy",
            figure(
                "clean test accuracy per epoch",
                accuracy_axis("test accuracy (%)"),
                curve(&|e| 100.0 * e.test_accuracy),
            ),
        ),
        (
            "learning_curves_train_loss",
            figure(
                "training loss per epoch",
                Axis {
                    label: "training loss".into(),
                    ticks: Ticks::Plain,
                    range: None,
                },
                curve(&|e| e.train_loss),
            ),
        ),
    ]
}
