//! Pivot tables of cell metrics: any dimensions as rows and columns (default: the seed's
//! Figure 4 layout, rows attack × ε, columns model/defense), values as mean ± sample standard
//! deviation over the seeds. Missing cells are marked, never dropped.
//!
//! Only seeds are ever averaged: a layout that would pool cells differing in anything else
//! (two ε, two attacks, a defense trained at two ε) into one entry gets those dimensions added
//! to its rows ([`Pivot::added`] says which), so a "78.9 ± 18.4" is never a spread over
//! budgets presented as one over seeds.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use advsweep_core::ShownState;

use super::epsilon;
use super::records::CellRecord;

/// A dimension a cell can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Attack,
    Epsilon,
    Model,
    Defense,
    /// The ε a defense was trained at ("—" for none).
    DefenseEpsilon,
    Seed,
}

impl Dim {
    pub fn parse(name: &str) -> Result<Dim, String> {
        Ok(match name.trim() {
            "attack" => Dim::Attack,
            "epsilon" | "eps" | "ε" => Dim::Epsilon,
            "model" => Dim::Model,
            "defense" => Dim::Defense,
            "defense_epsilon" | "defense_eps" => Dim::DefenseEpsilon,
            "seed" => Dim::Seed,
            other => {
                return Err(format!(
                    "unknown dimension `{other}`{} (known: attack, epsilon, model, defense, defense_epsilon, seed)",
                    advsweep_core::suggest::hint(
                        other,
                        [
                            "attack",
                            "epsilon",
                            "model",
                            "defense",
                            "defense_epsilon",
                            "seed"
                        ]
                    )
                ));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Dim::Attack => "attack",
            Dim::Epsilon => "ε",
            Dim::Model => "model",
            Dim::Defense => "defense",
            Dim::DefenseEpsilon => "defense ε",
            Dim::Seed => "seed",
        }
    }

    /// The dimensions a table may not pool, in the order they are added to the rows.
    const POOLED_NEVER: [Dim; 5] = [
        Dim::Attack,
        Dim::Epsilon,
        Dim::Model,
        Dim::Defense,
        Dim::DefenseEpsilon,
    ];

    /// (label, numeric sort key if the dimension is numeric).
    fn of(self, c: &CellRecord) -> (String, Option<f64>) {
        match self {
            Dim::Attack => (c.attack.clone(), None),
            Dim::Epsilon => (
                epsilon::label_in(c.epsilon, c.epsilon_space),
                Some(c.epsilon),
            ),
            Dim::Model => (c.model.clone(), None),
            Dim::Defense => (c.defense.clone(), None),
            Dim::DefenseEpsilon => match c.defense_epsilon {
                Some(e) => (epsilon::label_in(e, c.epsilon_space), Some(e)),
                None => ("—".to_owned(), Some(-1.0)),
            },
            Dim::Seed => (c.seed.to_string(), Some(c.seed as f64)),
        }
    }
}

/// The value shown in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Accuracy,
    AttackSuccessRate,
    MeanLinf,
    MeanL2,
    Seconds,
    ImagesPerSecond,
}

impl Metric {
    pub fn parse(name: &str) -> Result<Metric, String> {
        Ok(match name.trim() {
            "accuracy" => Metric::Accuracy,
            "attack_success_rate" | "success_rate" => Metric::AttackSuccessRate,
            "mean_linf" => Metric::MeanLinf,
            "mean_l2" => Metric::MeanL2,
            "seconds" => Metric::Seconds,
            "images_per_second" => Metric::ImagesPerSecond,
            other => {
                return Err(format!(
                    "unknown metric `{other}`{} (known: accuracy, attack_success_rate, mean_linf, mean_l2, seconds, images_per_second)",
                    advsweep_core::suggest::hint(
                        other,
                        [
                            "accuracy",
                            "attack_success_rate",
                            "mean_linf",
                            "mean_l2",
                            "seconds",
                            "images_per_second"
                        ]
                    )
                ));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::AttackSuccessRate => "attack_success_rate",
            Metric::MeanLinf => "mean_linf",
            Metric::MeanL2 => "mean_l2",
            Metric::Seconds => "seconds",
            Metric::ImagesPerSecond => "images_per_second",
        }
    }

    fn value(self, c: &CellRecord) -> Option<f64> {
        let r = c.result.as_ref()?;
        // A clean cell attacks nothing: its "success rate" would only measure how often two
        // noise draws of a randomized model disagree. Shown as "—".
        if self == Metric::AttackSuccessRate && c.is_clean() {
            return None;
        }
        Some(match self {
            Metric::Accuracy => r.accuracy,
            Metric::AttackSuccessRate => r.attack_success_rate,
            Metric::MeanLinf => r.mean_linf,
            Metric::MeanL2 => r.mean_l2,
            Metric::Seconds => r.seconds,
            Metric::ImagesPerSecond => r.images_per_second,
        })
    }

    /// The unit the tables show the metric in: `" (%)"` for rates, `""` otherwise.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::Accuracy | Metric::AttackSuccessRate => " (%)",
            Metric::MeanLinf | Metric::MeanL2 => " (pixel units, [0, 1] images)",
            Metric::Seconds => " (s)",
            Metric::ImagesPerSecond => " (images/s)",
        }
    }

    /// The value in the tables' unit (rates in percent).
    fn scaled(self, v: f64) -> f64 {
        match self {
            Metric::Accuracy | Metric::AttackSuccessRate => 100.0 * v,
            _ => v,
        }
    }

    /// Rates print in percent, the rest as they are.
    fn format(self, v: f64) -> String {
        match self {
            Metric::Accuracy | Metric::AttackSuccessRate => format!("{:.1}", 100.0 * v),
            Metric::MeanLinf | Metric::MeanL2 => format!("{v:.4}"),
            Metric::Seconds => format!("{v:.2}"),
            Metric::ImagesPerSecond => format!("{v:.0}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub rows: Vec<Dim>,
    pub columns: Vec<Dim>,
    pub metric: Metric,
}

impl Layout {
    /// A layout from its comma-separated dimension lists and metric name (as `advsweep report
    /// --rows --cols --metric` and the dashboard's query parameters spell them); the error
    /// names what is wrong: an unknown name, an empty axis, a dimension on both.
    pub fn parse(rows: &str, cols: &str, metric: &str) -> Result<Layout, String> {
        let dims = |list: &str| -> Result<Vec<Dim>, String> {
            list.split(',')
                .filter(|s| !s.trim().is_empty())
                .map(Dim::parse)
                .collect()
        };
        let layout = Layout {
            rows: dims(rows)?,
            columns: dims(cols)?,
            metric: Metric::parse(metric)?,
        };
        if layout.rows.is_empty() || layout.columns.is_empty() {
            return Err("rows and cols each need at least one dimension".into());
        }
        if layout.rows.iter().any(|d| layout.columns.contains(d)) {
            return Err("a dimension cannot be on both rows and cols".into());
        }
        Ok(layout)
    }
}

impl Default for Layout {
    /// The seed's Figure 4: rows attack × ε, columns model/defense, accuracy.
    fn default() -> Self {
        Layout {
            rows: vec![Dim::Attack, Dim::Epsilon],
            columns: vec![Dim::Model, Dim::Defense],
            metric: Metric::Accuracy,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Values(Vec<f64>),
    /// Expected but without a result yet: the cells' state.
    Missing(ShownState),
}

/// A key along one axis: labels, and the order it sorts in.
#[derive(Debug, Clone, PartialEq)]
struct Key {
    labels: Vec<String>,
    order: Vec<f64>,
}

fn key(dims: &[Dim], c: &CellRecord, first_seen: &mut Vec<(usize, String)>) -> Key {
    let mut labels = Vec::new();
    let mut order = Vec::new();
    for (i, d) in dims.iter().enumerate() {
        let (label, numeric) = d.of(c);
        let rank = match numeric {
            Some(v) => v,
            None => match first_seen
                .iter()
                .position(|(dim, l)| *dim == i && *l == label)
            {
                Some(p) => p as f64,
                None => {
                    first_seen.push((i, label.clone()));
                    (first_seen.len() - 1) as f64
                }
            },
        };
        labels.push(label);
        order.push(rank);
    }
    Key { labels, order }
}

fn index_of(keys: &mut Vec<Key>, k: Key) -> usize {
    match keys.iter().position(|x| x.labels == k.labels) {
        Some(i) => i,
        None => {
            keys.push(k);
            keys.len() - 1
        }
    }
}

pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The dimensions (other than the seed) that vary among cells `layout` would pool into one
/// entry, in [`Dim::POOLED_NEVER`] order.
fn pooled(cells: &[CellRecord], layout: &Layout) -> Vec<Dim> {
    Dim::POOLED_NEVER
        .into_iter()
        .filter(|d| !layout.rows.contains(d) && !layout.columns.contains(d))
        .filter(|&d| {
            let mut seen: BTreeMap<(Vec<String>, Vec<String>), String> = BTreeMap::new();
            cells.iter().any(|c| {
                let at = (
                    layout.rows.iter().map(|r| r.of(c).0).collect(),
                    layout.columns.iter().map(|r| r.of(c).0).collect(),
                );
                let label = d.of(c).0;
                match seen.get(&at) {
                    Some(first) => *first != label,
                    None => {
                        seen.insert(at, label);
                        false
                    }
                }
            })
        })
        .collect()
}

/// A pivot of one metric over cells.
#[derive(Debug, Clone)]
pub struct Pivot {
    layout: Layout,
    /// Dimensions added to the rows because cells differing in them would have been pooled.
    added: Vec<Dim>,
    rows: Vec<Key>,
    columns: Vec<Key>,
    entries: BTreeMap<(usize, usize), Entry>,
}

impl Pivot {
    /// The pivot of `cells` in `layout`, its rows extended by any dimension the layout would
    /// have pooled (see the module docs).
    pub fn new(cells: &[CellRecord], mut layout: Layout) -> Pivot {
        let added = pooled(cells, &layout);
        layout.rows.extend(added.iter().copied());
        let mut seen_rows = Vec::new();
        let mut seen_cols = Vec::new();
        let mut rows = Vec::new();
        let mut columns = Vec::new();
        let mut entries: BTreeMap<(usize, usize), Entry> = BTreeMap::new();
        for c in cells {
            let r = index_of(&mut rows, key(&layout.rows, c, &mut seen_rows));
            let col = index_of(&mut columns, key(&layout.columns, c, &mut seen_cols));
            let entry = entries
                .entry((r, col))
                .or_insert_with(|| Entry::Values(Vec::new()));
            match (layout.metric.value(c), &mut *entry) {
                (Some(v), Entry::Values(vs)) if c.state == ShownState::Done => vs.push(v),
                (Some(v), Entry::Missing(_)) if c.state == ShownState::Done => {
                    *entry = Entry::Values(vec![v])
                }
                (_, Entry::Values(vs)) if vs.is_empty() && c.state != ShownState::Done => {
                    *entry = Entry::Missing(c.state)
                }
                _ => {}
            }
        }
        // Sort both axes by their order keys; remap entries.
        let sort = |keys: &mut Vec<Key>| -> Vec<usize> {
            let mut idx: Vec<usize> = (0..keys.len()).collect();
            idx.sort_by(|&a, &b| {
                keys[a]
                    .order
                    .iter()
                    .zip(&keys[b].order)
                    .map(|(x, y)| x.total_cmp(y))
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            let mut new_of = vec![0; keys.len()];
            for (new, &old) in idx.iter().enumerate() {
                new_of[old] = new;
            }
            *keys = idx.iter().map(|&i| keys[i].clone()).collect();
            new_of
        };
        let row_map = sort(&mut rows);
        let col_map = sort(&mut columns);
        let entries = entries
            .into_iter()
            .map(|((r, c), e)| ((row_map[r], col_map[c]), e))
            .collect();
        Pivot {
            layout,
            added,
            rows,
            columns,
            entries,
        }
    }

    /// The dimensions added to the rows (empty when the layout pooled seeds only).
    pub fn added(&self) -> &[Dim] {
        &self.added
    }

    /// The most seeds behind one entry (what a ± is computed over).
    pub fn seeds(&self) -> usize {
        self.entries
            .values()
            .map(|e| match e {
                Entry::Values(v) => v.len(),
                Entry::Missing(_) => 0,
            })
            .max()
            .unwrap_or(0)
    }

    /// What the table's numbers are, for a line under it: the metric and its unit, what ± is,
    /// and the dimensions added to the rows.
    pub fn legend(&self) -> String {
        let m = self.layout.metric;
        let mut text = format!("{}{}", m.name(), m.unit());
        if self.seeds() > 1 {
            text.push_str(&format!(
                "; mean ± standard deviation over seeds (up to {} per entry)",
                self.seeds()
            ));
        }
        if !self.added.is_empty() {
            let names: Vec<&str> = self.added.iter().map(|d| d.name()).collect();
            text.push_str(&format!(
                "; {} added to the rows: the cells differ in {} and only seeds are averaged",
                names.join(", "),
                if names.len() > 1 { "them" } else { "it" }
            ));
        }
        text
    }

    /// The Markdown table and, under it, its [`legend`](Pivot::legend): what the terminal
    /// shows.
    pub fn shown(&self) -> String {
        format!("{}{}\n", self.markdown(), self.legend())
    }

    /// Mean of the metric at the given row and column labels.
    pub fn value(&self, row: &[&str], column: &[&str]) -> Option<f64> {
        let r = self.rows.iter().position(|k| k.labels == row)?;
        let c = self.columns.iter().position(|k| k.labels == column)?;
        match self.entries.get(&(r, c))? {
            Entry::Values(v) if !v.is_empty() => Some(mean_std(v).0),
            _ => None,
        }
    }

    fn text(&self, r: usize, c: usize) -> String {
        match self.entries.get(&(r, c)) {
            None => String::new(),
            Some(Entry::Missing(state)) => state.as_str().to_owned(),
            Some(Entry::Values(v)) if v.is_empty() => "—".into(),
            Some(Entry::Values(v)) => {
                let (mean, std) = mean_std(v);
                let m = self.layout.metric;
                if v.len() > 1 {
                    format!("{} ± {}", m.format(mean), m.format(std))
                } else {
                    m.format(mean)
                }
            }
        }
    }

    /// The names of the row dimensions: the first cells of every export's header.
    fn row_names(&self) -> Vec<String> {
        self.layout
            .rows
            .iter()
            .map(|d| d.name().to_owned())
            .collect()
    }

    /// A Markdown table with aligned columns (also what the terminal shows).
    pub fn markdown(&self) -> String {
        let mut header = self.row_names();
        header.extend(self.columns.iter().map(|k| k.labels.join("/")));
        let mut lines = vec![header];
        for (r, row) in self.rows.iter().enumerate() {
            let mut line = row.labels.clone();
            line.extend((0..self.columns.len()).map(|c| self.text(r, c)));
            lines.push(line);
        }
        let widths: Vec<usize> = (0..lines[0].len())
            .map(|i| {
                lines
                    .iter()
                    .map(|l| l[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let label_cols = self.layout.rows.len();
        let mut out = String::new();
        for (n, line) in lines.iter().enumerate() {
            let cells: Vec<String> = line
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (text, w))| {
                    let pad = " ".repeat(w - text.chars().count());
                    if i < label_cols {
                        format!("{text}{pad}")
                    } else {
                        format!("{pad}{text}")
                    }
                })
                .collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
            if n == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
            }
        }
        out
    }

    /// CSV: the row labels, then for each column `<label> mean`, `<label> std` and
    /// `<label> n` (the seeds averaged), in the unit `table.md` shows (rates in percent, the
    /// unit in the header: `clean/none mean (%)`), rounded to six decimals; an empty mean
    /// with n = 0 marks a missing cell (its state is in `cells.csv`).
    pub fn csv(&self) -> String {
        let mut out = String::new();
        let mut header = self.row_names();
        let unit = self.layout.metric.unit();
        for k in &self.columns {
            let label = k.labels.join("/");
            header.push(format!("{label} mean{unit}"));
            header.push(format!("{label} std{unit}"));
            header.push(format!("{label} n"));
        }
        let _ = writeln!(
            out,
            "{}",
            header
                .iter()
                .map(|h| csv_field(h))
                .collect::<Vec<_>>()
                .join(",")
        );
        for (r, row) in self.rows.iter().enumerate() {
            let mut fields: Vec<String> = row.labels.iter().map(|l| csv_field(l)).collect();
            for c in 0..self.columns.len() {
                match self.entries.get(&(r, c)) {
                    Some(Entry::Values(v)) if !v.is_empty() => {
                        let (mean, std) = mean_std(v);
                        let m = self.layout.metric;
                        fields.push(tidy(m.scaled(mean), 6));
                        fields.push(tidy(m.scaled(std), 6));
                        fields.push(v.len().to_string());
                    }
                    // Missing (pending, failed, …) or absent: no value, n = 0; cells.csv says why.
                    _ => fields.extend([String::new(), String::new(), "0".into()]),
                }
            }
            let _ = writeln!(out, "{}", fields.join(","));
        }
        out
    }
}

/// A number for a CSV file: at most `decimals` decimals, no float noise (`95.1`, not
/// `95.10000000000001`); NaN and infinities as `nan`, `inf`, `-inf`.
pub fn tidy(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return format!("{v}").to_lowercase();
    }
    let text = format!("{v:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

/// Quotes a CSV field when needed (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
