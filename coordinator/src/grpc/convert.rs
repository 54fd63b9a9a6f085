//! Store views → v1 messages. States travel as their one spelling (`as_str`): the v1 wire
//! keeps its `string state` fields.

use advsweep_core::wire;
use advsweep_proto::v1 as pb;

use crate::store::{CellStatus, CheckpointInfo, RunStatus, StateCounts, SweepDetail, SweepSummary};

pub fn checkpoint(c: &CheckpointInfo) -> pb::CheckpointRef {
    pb::CheckpointRef {
        checkpoint_id: c.checkpoint_id.clone(),
        epoch: c.epoch,
        sha256: c.sha256.clone(),
        bytes: c.bytes,
    }
}

pub fn counts(c: &StateCounts) -> pb::StateCounts {
    pb::StateCounts {
        pending: c.pending,
        running: c.running,
        done: c.done,
        failed: c.failed,
        cancelled: c.cancelled,
    }
}

pub fn summary(s: &SweepSummary) -> pb::SweepSummary {
    pb::SweepSummary {
        sweep_id: s.sweep_id.to_string(),
        name: s.name.clone(),
        state: s.state.as_str().to_owned(),
        runs: Some(counts(&s.runs)),
        cells: Some(counts(&s.cells)),
        created_unix_ms: s.created_ms,
    }
}

pub fn run(r: &RunStatus) -> pb::RunStatus {
    pb::RunStatus {
        run_id: r.run_id.to_string(),
        model: r.model.clone(),
        defense_name: r.defense_name.clone(),
        defense_epsilon: r.defense_epsilon.unwrap_or(0.0),
        seed: r.seed,
        state: r.state.as_str().to_owned(),
        attempt: r.attempt,
        worker_id: r.worker_id.clone().unwrap_or_default(),
        error: r.error.clone().unwrap_or_default(),
        epochs: r.epochs.iter().map(wire::epoch_to_wire).collect(),
        warnings: r.warnings.clone(),
        epsilon_space: wire::epsilon_space_to_wire(r.epsilon_space),
        attempts: r
            .attempts
            .iter()
            .map(|a| pb::AttemptRecord {
                attempt: a.attempt,
                worker_id: a.worker_id.clone().unwrap_or_default(),
                outcome: a.outcome.as_str().to_owned(),
                reason: a.reason.clone().unwrap_or_default(),
                ended_unix_ms: a.ended_ms,
            })
            .collect(),
        max_attempts: r.max_attempts,
        spec: None,
        epochs_planned: r.epochs_planned,
        worker_name: r.worker_name.clone().unwrap_or_default(),
    }
}

fn cell(c: &CellStatus) -> pb::CellStatus {
    pb::CellStatus {
        cell_id: c.cell_id.to_string(),
        run_id: c.run_id.to_string(),
        attack_name: c.attack_name.clone(),
        epsilon: c.epsilon,
        state: c.state.as_str().to_owned(),
        result: c.result.as_ref().map(wire::cell_result_to_wire),
        error: c.error.clone().unwrap_or_default(),
        attack: c.attack.as_ref().map(wire::attack_to_wire),
        defense_name: c.defense_name.clone(),
        defense_epsilon: c.defense_epsilon.unwrap_or(0.0),
        inference_noise: c.inference.inference_noise.unwrap_or(0.0),
        denoiser: c.inference.denoiser.as_ref().map(wire::denoiser_to_wire),
    }
}

pub fn detail(d: &SweepDetail) -> pb::SweepDetail {
    pb::SweepDetail {
        summary: Some(summary(&d.summary)),
        // The detail carries each run's resolved spec (reports record it); live progress
        // (`run`) does not.
        runs: d
            .runs
            .iter()
            .map(|r| pb::RunStatus {
                spec: r
                    .spec
                    .as_ref()
                    .map(|s| wire::run_to_wire(s, &d.summary.sweep_id, &[])),
                ..run(r)
            })
            .collect(),
        cells: d.cells.iter().map(cell).collect(),
    }
}
