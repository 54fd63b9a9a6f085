//! A sharded cell's parts merged back into one cell ([`merge`]).
//!
//! `[evaluation] shards = N` makes N runs of each grid point that differ only in their data's
//! [`advsweep_core::DataShard`]; their cells are leased, retried and stored apart. Reports show
//! one run and one cell per grid point: counts are summed (never percentages averaged), so the
//! merged accuracy, success rate, norms and cascade stages are the unsharded evaluation's. A
//! merged cell is done only when every part is; otherwise it shows the least finished part's
//! state (a failed part's error, labelled with its slice).

use std::collections::HashMap;

use advsweep_core::results::count_of;
use advsweep_core::{CellResult, RunSpec, ShownState, StageAccuracy};

use crate::records::{CellRecord, RunRecord, SweepReport};
use crate::sanity::EvaluatedCell;

/// The report with every sharded grid point's runs and cells merged into one each (in the
/// order of their first part); unsharded runs and cells pass through unchanged.
pub fn merge(report: SweepReport) -> SweepReport {
    let SweepReport {
        sweep_id,
        name,
        state,
        runs,
        cells,
    } = report;
    // Each run's group: runs equal but for their slice share one.
    let mut group_of_key: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<RunRecord>> = Vec::new();
    let mut group_of_run: HashMap<String, usize> = HashMap::new();
    for run in runs {
        let group = match unsharded_key(run.spec.as_ref()) {
            Some(key) => *group_of_key.entry(key).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            }),
            None => {
                groups.push(Vec::new());
                groups.len() - 1
            }
        };
        group_of_run.insert(run.run_id.clone(), group);
        groups[group].push(run);
    }
    for parts in &mut groups {
        parts.sort_by_key(|r| shard_index(r));
    }
    let representative: Vec<String> = groups.iter().map(|g| g[0].run_id.clone()).collect();
    let shard_of: HashMap<String, String> = groups
        .iter()
        .flatten()
        .filter_map(|r| Some((r.run_id.clone(), shard_label(r.spec.as_ref()?)?)))
        .collect();

    // Cells: one group per (merged run, defense, attack, ε), in the order of their first part.
    let mut cell_group_of: HashMap<(usize, String, String, u64), usize> = HashMap::new();
    let mut cell_groups: Vec<Vec<CellRecord>> = Vec::new();
    for cell in cells {
        let key = group_of_run.get(&cell.run_id).map(|&g| {
            (
                g,
                cell.defense.clone(),
                cell.attack.clone(),
                cell.epsilon.to_bits(),
            )
        });
        let index = match key {
            Some(key) => *cell_group_of.entry(key).or_insert_with(|| {
                cell_groups.push(Vec::new());
                cell_groups.len() - 1
            }),
            None => {
                cell_groups.push(Vec::new());
                cell_groups.len() - 1
            }
        };
        cell_groups[index].push(cell);
    }
    let cells: Vec<CellRecord> = cell_groups
        .into_iter()
        .map(|parts| {
            let group = group_of_run.get(&parts[0].run_id).copied();
            merge_cells(parts, group.map(|g| representative[g].as_str()), &shard_of)
        })
        .collect();
    let runs = groups
        .into_iter()
        .map(|parts| {
            let mut run = merge_runs(parts, &shard_of);
            if run.shards > 1 {
                run.warnings = merged_warnings(&run, &cells);
            }
            run
        })
        .collect();
    SweepReport {
        sweep_id,
        name,
        state,
        runs,
        cells,
    }
}

/// The run's spec without its id and slice, as text: equal for a grid point's shards. `None`
/// for a run that is not sharded (or whose spec the report lacks): it merges with nothing.
fn unsharded_key(spec: Option<&RunSpec>) -> Option<String> {
    let spec = spec?;
    spec.data.shard?;
    let mut whole = spec.clone();
    whole.data.shard = None;
    let mut value = serde_json::to_value(&whole).ok()?;
    if let Some(object) = value.as_object_mut() {
        object.remove("id");
    }
    Some(value.to_string())
}

fn shard_index(run: &RunRecord) -> u32 {
    run.spec
        .as_ref()
        .and_then(|s| s.data.shard)
        .map_or(0, |s| s.index)
}

fn shard_label(spec: &RunSpec) -> Option<String> {
    spec.data.shard.map(|s| format!("shard {}", s.label()))
}

/// The least finished of the parts' states: failed, then running, pending, cancelled; done
/// only when every part is.
fn least_finished(states: impl Iterator<Item = ShownState>) -> ShownState {
    let rank = |s: ShownState| match s {
        ShownState::Failed => 0,
        ShownState::Running => 1,
        ShownState::Pending => 2,
        ShownState::Cancelled => 3,
        ShownState::Done => 4,
    };
    states
        .min_by_key(|&s| rank(s))
        .unwrap_or(ShownState::Pending)
}

/// The first part's error, labelled with its slice.
fn first_error<'a>(
    parts: impl Iterator<Item = (&'a str, Option<&'a String>)>,
    shard_of: &HashMap<String, String>,
) -> Option<String> {
    parts
        .filter_map(|(run_id, error)| {
            let error = error?;
            Some(match shard_of.get(run_id) {
                Some(label) => format!("{label}: {error}"),
                None => error.clone(),
            })
        })
        .next()
}

fn union(lists: impl Iterator<Item = Vec<String>>) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for item in lists.flatten() {
        if !all.contains(&item) {
            all.push(item);
        }
    }
    all
}

/// A merged run's sanity warnings: those of its merged cells once they are all done (the
/// parts' own were judged on a slice each), else what the parts said, labelled.
fn merged_warnings(run: &RunRecord, cells: &[CellRecord]) -> Vec<String> {
    let mine: Vec<&CellRecord> = cells.iter().filter(|c| c.run_id == run.run_id).collect();
    let (Some(spec), true) = (
        run.spec.as_ref(),
        mine.iter().all(|c| c.state == ShownState::Done),
    ) else {
        return run.warnings.clone();
    };
    let mut whole = spec.clone();
    whole.data.shard = None;
    let evaluated: Vec<EvaluatedCell> = mine
        .iter()
        .filter_map(|c| {
            let result = c.result.as_ref()?;
            Some(EvaluatedCell {
                attack_name: c.attack.clone(),
                attack: c.attack_spec.clone()?,
                epsilon: c.epsilon,
                accuracy: result.accuracy,
                stages: result.stages.clone(),
                warnings: result.warnings.clone(),
                defense_name: c.defense.clone(),
                inference: c.inference.clone(),
            })
        })
        .collect();
    crate::sanity::warnings(&whole, &evaluated)
}

fn merge_runs(mut parts: Vec<RunRecord>, shard_of: &HashMap<String, String>) -> RunRecord {
    if parts.len() == 1 {
        return parts.remove(0);
    }
    let state = least_finished(parts.iter().map(|r| r.state));
    let attempt = parts.iter().map(|r| r.attempt).max().unwrap_or(0);
    let error = first_error(
        parts.iter().map(|r| (r.run_id.as_str(), r.error.as_ref())),
        shard_of,
    );
    let warnings = union(parts.iter().map(|r| {
        let label = shard_of.get(&r.run_id).cloned().unwrap_or_default();
        r.warnings.iter().map(|w| format!("{label}: {w}")).collect()
    }));
    let shards = u32::try_from(parts.len()).unwrap_or(u32::MAX);
    let mut merged = parts.remove(0);
    merged.state = state;
    merged.attempt = attempt;
    merged.error = error;
    merged.warnings = warnings;
    merged.shards = shards;
    merged
}

fn merge_cells(
    mut parts: Vec<CellRecord>,
    run_id: Option<&str>,
    shard_of: &HashMap<String, String>,
) -> CellRecord {
    if parts.len() == 1 {
        return parts.remove(0);
    }
    let state = least_finished(parts.iter().map(|c| c.state));
    let error = first_error(
        parts.iter().map(|c| (c.run_id.as_str(), c.error.as_ref())),
        shard_of,
    );
    let results: Option<Vec<&CellResult>> = parts.iter().map(|c| c.result.as_ref()).collect();
    let result = match (state, results) {
        (ShownState::Done, Some(results)) => Some(merge_results(&results)),
        _ => None,
    };
    let shards = u32::try_from(parts.len()).unwrap_or(u32::MAX);
    let mut merged = parts.remove(0);
    if let Some(run_id) = run_id {
        merged.run_id = run_id.to_owned();
    }
    merged.state = state;
    merged.error = error;
    merged.result = result;
    merged.shards = shards;
    merged
}

/// The result of the whole cell from its parts' results: counts summed, rates recomputed
/// from them; seconds summed (compute time, not wall time), images/s over that.
pub fn merge_results(parts: &[&CellResult]) -> CellResult {
    let examples: u64 = parts.iter().map(|r| u64::from(r.examples)).sum();
    let sum = |count: &dyn Fn(&CellResult) -> u32| -> u64 {
        parts.iter().map(|r| u64::from(count(r))).sum()
    };
    let correct = sum(&|r| r.correct());
    let clean_correct = sum(&|r| r.clean_correct);
    let flipped = sum(&|r| r.flipped);
    let n = examples.max(1) as f64;
    let seconds: f64 = parts.iter().map(|r| r.seconds).sum();
    let mean = |of: &dyn Fn(&CellResult) -> f64| -> f64 {
        parts
            .iter()
            .map(|r| of(r) * f64::from(r.examples))
            .sum::<f64>()
            / n
    };
    let stage_count = parts.iter().map(|r| r.stages.len()).max().unwrap_or(0);
    let stages = (0..stage_count)
        .filter_map(|i| {
            let name = parts.iter().find_map(|r| r.stages.get(i))?.name.clone();
            let robust: u64 = parts
                .iter()
                .map(|r| {
                    r.stages
                        .get(i)
                        .map_or(0, |s| u64::from(count_of(s.accuracy, r.examples)))
                })
                .sum();
            Some(StageAccuracy {
                name,
                accuracy: robust as f64 / n,
            })
        })
        .collect();
    let as_u32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    CellResult {
        accuracy: correct as f64 / n,
        attack_success_rate: if clean_correct > 0 {
            flipped as f64 / clean_correct as f64
        } else {
            0.0
        },
        mean_linf: mean(&|r| r.mean_linf),
        mean_l2: mean(&|r| r.mean_l2),
        images_per_second: examples as f64 / seconds.max(1e-9),
        seconds,
        examples: as_u32(examples),
        stages,
        warnings: union(parts.iter().map(|r| r.warnings.clone())),
        clean_correct: as_u32(clean_correct),
        flipped: as_u32(flipped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part's result from its counts: `correct` of `examples` under attack, `clean` correct
    /// without it, `flipped` of those made wrong, and the robust count after each stage.
    fn part(examples: u32, correct: u32, clean: u32, flipped: u32, stages: &[u32]) -> CellResult {
        let n = f64::from(examples);
        CellResult {
            accuracy: f64::from(correct) / n,
            attack_success_rate: f64::from(flipped) / f64::from(clean),
            mean_linf: 0.03,
            mean_l2: 0.5 + f64::from(examples) / 1000.0,
            images_per_second: 10.0,
            seconds: n / 10.0,
            examples,
            stages: stages
                .iter()
                .zip(["apgd-ce", "square"])
                .map(|(&r, name)| StageAccuracy {
                    name: name.into(),
                    accuracy: f64::from(r) / n,
                })
                .collect(),
            warnings: vec![format!("seen on {examples}")],
            clean_correct: clean,
            flipped,
        }
    }

    #[test]
    fn merged_counts_are_the_sums_and_rates_follow_from_them() {
        let parts = [
            part(100, 37, 80, 43, &[40, 37]),
            part(100, 41, 90, 49, &[45, 41]),
            part(40, 3, 33, 30, &[4, 3]),
        ];
        let merged = merge_results(&parts.iter().collect::<Vec<_>>());
        let whole = part(240, 81, 203, 122, &[89, 81]);
        assert_eq!(merged.examples, 240);
        assert_eq!(merged.accuracy, whole.accuracy);
        assert_eq!(merged.attack_success_rate, whole.attack_success_rate);
        assert_eq!((merged.clean_correct, merged.flipped), (203, 122));
        assert_eq!(merged.stages, whole.stages);
        // Norms are means weighted by each part's images, not a mean of means.
        let l2 = (100.0 * 0.6 + 100.0 * 0.6 + 40.0 * 0.54) / 240.0;
        assert!((merged.mean_l2 - l2).abs() < 1e-12, "{}", merged.mean_l2);
        assert_eq!(merged.seconds, 24.0);
        assert_eq!(merged.warnings.len(), 2, "repeated warnings once");
    }

    #[test]
    fn a_cell_is_done_only_when_every_part_is() {
        use ShownState::*;
        assert_eq!(least_finished([Done, Done].into_iter()), Done);
        assert_eq!(
            least_finished([Done, Pending, Running].into_iter()),
            Running
        );
        assert_eq!(least_finished([Done, Cancelled].into_iter()), Cancelled);
        assert_eq!(least_finished([Running, Failed, Done].into_iter()), Failed);
    }

    #[test]
    fn a_failed_part_names_its_slice() {
        let shard_of = HashMap::from([("r-b".to_owned(), "shard 2/3".to_owned())]);
        let error = "out of memory".to_owned();
        let found = first_error(
            [("r-a", None), ("r-b", Some(&error))].into_iter(),
            &shard_of,
        );
        assert_eq!(found.as_deref(), Some("shard 2/3: out of memory"));
    }
}
