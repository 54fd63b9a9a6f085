//! Robust vs clean accuracy, the trade-off the seed discusses: one point per setting
//! (model/defense and its training ε) and budget, the mean over seeds with error bars both
//! ways; colour per model/defense, marker per budget, no text on the data.

use std::collections::BTreeMap;

use advsweep_core::{EpsilonSpace, Norm, ShownState};

use super::figures::{Palette, first_seen, norm_of, seeds_note, spread};
use super::{Axis, Figure, LegendEntry, Look, Marker, Panel, Point, Series, Spread, Ticks};
use crate::epsilon;
use crate::records::CellRecord;
use crate::records::SweepReport;

/// Robust vs clean accuracy: for each setting and budget, the worst accuracy over the
/// attacks run at that budget against the clean accuracy, both the mean over seeds with error
/// bars; colour per model/defense, marker per budget.
pub fn robust_vs_clean(r: &SweepReport) -> Option<Figure> {
    let palette = Palette::of(r);
    let space = r
        .runs
        .first()
        .map_or(EpsilonSpace::Pixel, |run| run.epsilon_space);
    // (setting, norm, ε bits) -> (model, defense, ε, clean values, robust values)
    type Key = (String, u8, u64);
    type Values = (String, String, f64, Vec<f64>, Vec<f64>);
    let mut by: BTreeMap<Key, Values> = BTreeMap::new();
    let mut order: Vec<Key> = Vec::new();
    // A run's cells may belong to several defenses sharing its classifier (`standard`,
    // `noise-injection`, `dncnn`): each is its own point.
    let groups = r.runs.iter().flat_map(|run| {
        let done: Vec<&CellRecord> = r
            .cells
            .iter()
            .filter(|c| c.run_id == run.run_id && c.state == ShownState::Done)
            .collect();
        let defenses = first_seen(
            done.iter()
                .map(|c| (c.defense.clone(), c.defense_epsilon.map(f64::to_bits))),
        );
        defenses.into_iter().map(move |(defense, eps)| {
            let cells: Vec<&CellRecord> = done
                .iter()
                .copied()
                .filter(|c| c.defense == defense && c.defense_epsilon.map(f64::to_bits) == eps)
                .collect();
            let mut label = format!("{}/{defense}", run.model);
            if let Some(e) = eps {
                label.push_str(&format!(
                    " ε={}",
                    epsilon::label_in(f64::from_bits(e), run.epsilon_space)
                ));
            }
            (run, defense, label, cells)
        })
    });
    for (run, defense, label, cells) in groups {
        let Some(clean) = cells
            .iter()
            .find(|c| c.attack == "none")
            .and_then(|c| c.result.as_ref().map(|x| 100.0 * x.accuracy))
        else {
            continue;
        };
        let mut worst: BTreeMap<(u8, u64), (f64, f64)> = BTreeMap::new();
        for c in cells.iter().filter(|c| c.epsilon > 0.0) {
            let (Some(norm), Some(res)) = (norm_of(c), &c.result) else {
                continue;
            };
            let e = worst
                .entry((norm as u8, c.epsilon.to_bits()))
                .or_insert((c.epsilon, f64::INFINITY));
            e.1 = e.1.min(100.0 * res.accuracy);
        }
        for ((norm, bits), (eps, acc)) in worst {
            let key = (label.clone(), norm, bits);
            if !order.contains(&key) {
                order.push(key.clone());
            }
            let v = by.entry(key).or_insert_with(|| {
                (
                    run.model.clone(),
                    defense.clone(),
                    eps,
                    Vec::new(),
                    Vec::new(),
                )
            });
            v.3.push(clean);
            v.4.push(acc);
        }
    }
    if by.is_empty() {
        return None;
    }
    let several_norms = first_seen(order.iter().map(|k| k.1)).len() > 1;
    let budget_label = |norm: u8, eps: f64| {
        let symbol = if norm == Norm::L2 as u8 {
            "ℓ2"
        } else {
            "ℓ∞"
        };
        if several_norms {
            format!("ε={} ({symbol})", epsilon::label_in(eps, space))
        } else {
            format!("ε={}", epsilon::label_in(eps, space))
        }
    };
    let mut budgets: Vec<(u8, u64)> = first_seen(order.iter().map(|k| (k.1, k.2)));
    budgets.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(f64::from_bits(a.1).total_cmp(&f64::from_bits(b.1)))
    });
    let mut series = Vec::new();
    let mut legend: Vec<LegendEntry> = Vec::new();
    for key in &order {
        let (model, defense, eps, clean, robust) = &by[key];
        let (x, x_err) = spread(clean);
        let (y, y_err) = spread(robust);
        let budget = budgets
            .iter()
            .position(|b| *b == (key.1, key.2))
            .unwrap_or(0);
        let look = Look {
            color: Some(palette.group(model, defense)),
            marker: Marker::nth(budget),
        };
        series.push(Series {
            name: format!(
                "{}, {}{}",
                key.0,
                budget_label(key.1, *eps),
                seeds_note(clean.len())
            ),
            look,
            points: vec![Point { x, y, x_err, y_err }],
            line: false,
            spread: Spread::Bars,
        });
        let text = format!("{model}/{defense}");
        if !legend.iter().any(|e| e.text == text) {
            legend.push(LegendEntry {
                text,
                look: Look {
                    color: look.color,
                    marker: Marker::Circle,
                },
                line: false,
            });
        }
    }
    for (i, (norm, bits)) in budgets.iter().enumerate() {
        legend.push(LegendEntry {
            text: budget_label(*norm, f64::from_bits(*bits)),
            look: Look {
                color: None,
                marker: Marker::nth(i),
            },
            line: false,
        });
    }
    Some(Figure {
        title: "robust vs clean accuracy (worst attack per budget)".into(),
        panels: vec![Panel {
            title: String::new(),
            x: Axis {
                label: "clean accuracy (%)".into(),
                ticks: Ticks::Plain,
                range: None,
            },
            y: Axis {
                label: "robust accuracy (%)".into(),
                ticks: Ticks::Plain,
                range: None,
            },
            series,
        }],
        legend,
    })
}
