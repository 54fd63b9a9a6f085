//! v1 sweep details → report records: the one conversion every report goes through (the CLI's
//! `status`/`report`, online or offline, and the coordinator's web dashboard), so the page and
//! the files never disagree. States arrive as their spelling (the v1 wire keeps
//! `string state`) and are read back through `advsweep_core`'s `parse` here.

use std::collections::HashMap;

use advsweep_core::{EpsilonSpace, ShownState, StateCounts, SweepState, wire};
use advsweep_proto::v1 as pb;

use advsweep_report::{CellRecord, RunRecord, SweepReport};

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// Counts by state from the wire (none: all zero).
pub fn counts(c: Option<&pb::StateCounts>) -> StateCounts {
    let c = c.copied().unwrap_or_default();
    StateCounts {
        pending: c.pending,
        running: c.running,
        done: c.done,
        failed: c.failed,
        cancelled: c.cancelled,
    }
}

pub fn sweep_report(detail: &pb::SweepDetail) -> anyhow::Result<SweepReport> {
    let summary = detail.summary.clone().unwrap_or_default();
    let runs: Vec<RunRecord> = detail
        .runs
        .iter()
        .map(|r| {
            Ok(RunRecord {
                run_id: r.run_id.clone(),
                model: r.model.clone(),
                defense: r.defense_name.clone(),
                defense_epsilon: (r.defense_epsilon > 0.0).then_some(r.defense_epsilon),
                seed: r.seed,
                epsilon_space: wire::epsilon_space_from_wire(r.epsilon_space),
                state: ShownState::parse(&r.state)?,
                attempt: r.attempt,
                error: non_empty(&r.error),
                warnings: r.warnings.clone(),
                epochs: r.epochs.iter().map(wire::epoch_from_wire).collect(),
                spec: r
                    .spec
                    .as_ref()
                    .and_then(|s| wire::run_from_wire(s).ok())
                    .map(|(spec, _)| spec),
                shards: 1,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let by_id: HashMap<&str, &RunRecord> = runs.iter().map(|r| (r.run_id.as_str(), r)).collect();
    let cells = detail
        .cells
        .iter()
        .map(|c| {
            let run = by_id.get(c.run_id.as_str());
            Ok(CellRecord {
                cell_id: c.cell_id.clone(),
                run_id: c.run_id.clone(),
                model: run.map(|r| r.model.clone()).unwrap_or_default(),
                // The cell's own defense; a coordinator from before cells had one sends the
                // run's.
                defense: non_empty(&c.defense_name)
                    .or_else(|| run.map(|r| r.defense.clone()))
                    .unwrap_or_default(),
                defense_epsilon: if c.defense_name.is_empty() {
                    run.and_then(|r| r.defense_epsilon)
                } else {
                    (c.defense_epsilon > 0.0).then_some(c.defense_epsilon)
                },
                inference: wire::inference_from_status(c),
                seed: run.map(|r| r.seed).unwrap_or_default(),
                attack: c.attack_name.clone(),
                attack_spec: c
                    .attack
                    .as_ref()
                    .and_then(|a| wire::attack_from_wire(a).ok()),
                epsilon: c.epsilon,
                epsilon_space: run.map(|r| r.epsilon_space).unwrap_or(EpsilonSpace::Pixel),
                state: ShownState::parse(&c.state)?,
                result: c
                    .result
                    .as_ref()
                    .and_then(|r| wire::cell_result_from_wire(r).ok()),
                error: non_empty(&c.error),
                shards: 1,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    // A sharded cell's parts are one cell in every report.
    Ok(advsweep_report::shards::merge(SweepReport {
        state: SweepState::parse(&summary.state)?,
        sweep_id: summary.sweep_id,
        name: summary.name,
        runs,
        cells,
    }))
}
