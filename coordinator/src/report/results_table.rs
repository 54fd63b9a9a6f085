//! The results table: rows attack × ε, columns model/defense, cells = accuracy (mean over
//! seeds, ± std when there are several). The layout of the seed's Figure 4.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::epsilon;

/// One cell of a sweep, flattened for reporting.
#[derive(Debug, Clone, PartialEq)]
pub struct CellRow {
    pub model: String,
    pub defense: String,
    pub attack: String,
    pub epsilon: f64,
    pub seed: u64,
    /// pending | running | done | failed | cancelled
    pub state: String,
    pub accuracy: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Values(Vec<f64>),
    Missing(String),
}

/// A pivot of cell accuracies.
#[derive(Debug, Clone)]
pub struct ResultsTable {
    columns: Vec<(String, String)>,
    rows: Vec<(String, f64)>,
    entries: BTreeMap<(usize, usize), Entry>,
}

fn position<T: PartialEq>(list: &mut Vec<T>, item: T) -> usize {
    match list.iter().position(|x| *x == item) {
        Some(i) => i,
        None => {
            list.push(item);
            list.len() - 1
        }
    }
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

impl ResultsTable {
    /// Columns appear in the order of `cells` (file order); rows are grouped by attack in file
    /// order with ε ascending.
    pub fn new(cells: &[CellRow]) -> Self {
        let mut columns = Vec::new();
        let mut rows = Vec::new();
        let mut entries: BTreeMap<(usize, usize), Entry> = BTreeMap::new();
        for c in cells {
            let col = position(&mut columns, (c.model.clone(), c.defense.clone()));
            let row = position(&mut rows, (c.attack.clone(), c.epsilon));
            let entry = entries
                .entry((row, col))
                .or_insert_with(|| Entry::Values(Vec::new()));
            match (c.accuracy, &mut *entry) {
                (Some(a), Entry::Values(v)) if c.state == "done" => v.push(a),
                (_, Entry::Values(v)) if v.is_empty() => *entry = Entry::Missing(c.state.clone()),
                _ => {}
            }
        }
        // Rows grouped by attack (in file order), ε ascending within an attack.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        let attack_rank = |i: usize| rows.iter().position(|(a, _)| *a == rows[i].0).unwrap_or(i);
        order.sort_by(|&a, &b| {
            attack_rank(a)
                .cmp(&attack_rank(b))
                .then(rows[a].1.total_cmp(&rows[b].1))
        });
        let mut new_index = vec![0; rows.len()];
        for (new, &old) in order.iter().enumerate() {
            new_index[old] = new;
        }
        let entries = entries
            .into_iter()
            .map(|((r, c), e)| ((new_index[r], c), e))
            .collect();
        let rows = order.iter().map(|&i| rows[i].clone()).collect();
        ResultsTable {
            columns,
            rows,
            entries,
        }
    }

    /// Mean accuracy at (attack, ε, model, defense), when measured.
    pub fn accuracy(&self, attack: &str, epsilon: f64, model: &str, defense: &str) -> Option<f64> {
        let row = self
            .rows
            .iter()
            .position(|(a, e)| a == attack && (e - epsilon).abs() < 1e-12)?;
        let col = self
            .columns
            .iter()
            .position(|(m, d)| m == model && d == defense)?;
        match self.entries.get(&(row, col))? {
            Entry::Values(v) if !v.is_empty() => Some(mean_std(v).0),
            _ => None,
        }
    }

    /// A plain-text table, columns aligned; accuracies in percent.
    pub fn render(&self) -> String {
        let mut header = vec!["attack".to_owned(), "ε".to_owned()];
        header.extend(self.columns.iter().map(|(m, d)| format!("{m}/{d}")));
        let mut lines = vec![header];
        for (r, (attack, eps)) in self.rows.iter().enumerate() {
            let mut line = vec![attack.clone(), epsilon::label(*eps)];
            for c in 0..self.columns.len() {
                line.push(match self.entries.get(&(r, c)) {
                    None => String::new(),
                    Some(Entry::Missing(state)) => state.clone(),
                    Some(Entry::Values(v)) if v.is_empty() => "—".into(),
                    Some(Entry::Values(v)) => {
                        let (mean, std) = mean_std(v);
                        if v.len() > 1 {
                            format!("{:.1} ± {:.1}", 100.0 * mean, 100.0 * std)
                        } else {
                            format!("{:.1}", 100.0 * mean)
                        }
                    }
                });
            }
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
        let mut out = String::new();
        for (n, line) in lines.iter().enumerate() {
            let cells: Vec<String> = line
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (text, w))| {
                    let pad = w - text.chars().count();
                    if i < 2 {
                        format!("{text}{}", " ".repeat(pad))
                    } else {
                        format!("{}{text}", " ".repeat(pad))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(defense: &str, attack: &str, eps: f64, seed: u64, acc: Option<f64>) -> CellRow {
        CellRow {
            model: "basic".into(),
            defense: defense.into(),
            attack: attack.into(),
            epsilon: eps,
            seed,
            state: if acc.is_some() { "done" } else { "failed" }.into(),
            accuracy: acc,
        }
    }

    #[test]
    fn pivots_and_averages_seeds() {
        let t = ResultsTable::new(&[
            cell("standard", "none", 0.0, 0, Some(0.8)),
            cell("standard", "none", 0.0, 1, Some(0.6)),
            cell("standard", "fgsm", 8.0 / 255.0, 0, Some(0.2)),
            cell("at", "fgsm", 8.0 / 255.0, 0, None),
            cell("at", "none", 8.0 / 255.0, 0, Some(0.9)),
        ]);
        assert!((t.accuracy("none", 0.0, "basic", "standard").unwrap_or(0.0) - 0.7).abs() < 1e-12);
        assert_eq!(t.accuracy("fgsm", 8.0 / 255.0, "basic", "at"), None);
        let text = t.render();
        assert!(
            text.contains("| attack | ε     | basic/standard | basic/at |"),
            "{text}"
        );
        assert!(text.contains("70.0 ± 14.1"), "{text}");
        assert!(
            text.contains("| fgsm   | 8/255 |           20.0 |   failed |"),
            "{text}"
        );
    }
}
