//! The views (`crate::store::views`) in SQL, read through the read pool.

use std::collections::HashMap;

use advsweep_core::{
    CellSpec, CellState, EpochMetrics, EpsilonSpace, InferenceDefense, RunId, RunState,
    StateCounts, SweepId,
};
use rusqlite::{Connection, OptionalExtension, params};

use super::{id, state};
use crate::store::error::StoreError;
use crate::store::views::{
    AttemptRecord, CellStatus, Gauges, RunStatus, SweepDetail, SweepSummary,
};

/// A run's ε space from its stored spec (`json_extract` of `epsilon_space`); specs from before
/// the field existed are pixel-space.
fn space(stored: Option<String>) -> EpsilonSpace {
    match stored.as_deref() {
        Some("normalized") => EpsilonSpace::Normalized,
        _ => EpsilonSpace::Pixel,
    }
}

fn nan_if_null(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

pub(super) fn summary(conn: &Connection, sweep_id: &SweepId) -> Result<SweepSummary, StoreError> {
    let head: Option<(String, String, bool, i64)> = conn
        .prepare_cached(
            "SELECT name, description, cancelled, created_ms FROM sweeps WHERE sweep_id = ?1",
        )?
        .query_row([sweep_id.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((name, description, cancelled, created_ms)) = head else {
        return Err(StoreError::SweepNotFound(sweep_id.clone()));
    };
    let mut runs = StateCounts::default();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT r.state, COUNT(*) FROM sweep_runs sr JOIN runs r ON r.run_id = sr.run_id
             WHERE sr.sweep_id = ?1 GROUP BY r.state",
        )?;
        let rows = stmt.query_map([sweep_id.as_str()], |r| {
            Ok((state::<RunState>(r, 0)?, r.get(1)?))
        })?;
        for row in rows {
            let (run, n) = row?;
            runs.add(run.shown(), n);
        }
    }
    let mut cells = StateCounts::default();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT c.state, r.state, COUNT(*)
             FROM sweep_cells sc
             JOIN cells c ON c.cell_id = sc.cell_id
             JOIN runs r ON r.run_id = c.run_id
             WHERE sc.sweep_id = ?1 GROUP BY c.state, r.state",
        )?;
        let rows = stmt.query_map([sweep_id.as_str()], |r| {
            Ok((
                state::<CellState>(r, 0)?,
                state::<RunState>(r, 1)?,
                r.get(2)?,
            ))
        })?;
        for row in rows {
            let (cell, run, n) = row?;
            cells.add(cell.shown(run), n);
        }
    }
    let state = cells.sweep_state(cancelled);
    Ok(SweepSummary {
        sweep_id: sweep_id.clone(),
        name,
        description,
        state,
        runs,
        cells,
        created_ms,
    })
}

/// Counts by state over all sweeps, leases and workers (alive: seen at or after `alive_after`).
pub(super) fn gauges(conn: &Connection, alive_after: i64) -> Result<Gauges, StoreError> {
    fn by_state<T>(conn: &Connection, sql: &str) -> Result<Vec<(T, u64)>, StoreError>
    where
        T: std::str::FromStr<Err = advsweep_core::UnknownState>,
    {
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map([], |r| Ok((state::<T>(r, 0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (s, n) = row?;
            out.push((s, u64::try_from(n).unwrap_or_default()));
        }
        Ok(out)
    }
    let cells: Vec<(CellState, u64)> = by_state(
        conn,
        "SELECT state, COUNT(*) FROM cells GROUP BY state ORDER BY state",
    )?;
    let runs: Vec<(RunState, u64)> = by_state(
        conn,
        "SELECT state, COUNT(*) FROM runs GROUP BY state ORDER BY state",
    )?;
    let leases = runs
        .iter()
        .find(|(s, _)| *s == RunState::Leased)
        .map_or(0, |(_, n)| *n);
    let (workers, workers_alive): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(last_seen_ms >= ?1), 0) FROM workers",
        [alive_after],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(Gauges {
        cells,
        runs,
        leases,
        workers: u64::try_from(workers).unwrap_or_default(),
        workers_alive: u64::try_from(workers_alive).unwrap_or_default(),
    })
}

/// The sweep's leased runs with their latest epoch, for live progress.
pub(super) fn running_runs(
    conn: &Connection,
    sweep_id: &SweepId,
) -> Result<Vec<RunStatus>, StoreError> {
    let mut stmt = conn.prepare_cached(sql!(
        "SELECT r.run_id, r.model, r.defense_name, r.defense_epsilon, r.seed, r.attempt,
                    r.worker_id,
                    e.epoch, e.train_loss, e.train_accuracy, e.test_accuracy, e.seconds,
                    e.images_per_second, json_extract(r.spec_json, '$.epsilon_space'),
                    json_extract(r.spec_json, '$.training.epochs'), w.name, r.max_attempts
             FROM sweep_runs sr JOIN runs r ON r.run_id = sr.run_id
             LEFT JOIN workers w ON w.worker_id = r.worker_id
             LEFT JOIN epochs e ON e.run_id = r.run_id
                 AND e.epoch = (SELECT MAX(epoch) FROM epochs WHERE run_id = r.run_id)
             WHERE sr.sweep_id = ?1 AND r.state = '{}' ORDER BY r.seq",
        RunState::Leased
    ))?;
    let rows = stmt.query_map([sweep_id.as_str()], |r| {
        let epoch: Option<u32> = r.get(7)?;
        Ok(RunStatus {
            run_id: id(r, 0)?,
            model: r.get(1)?,
            defense_name: r.get(2)?,
            defense_epsilon: r.get(3)?,
            seed: u64::try_from(r.get::<_, i64>(4)?).unwrap_or_default(),
            state: RunState::Leased.shown(),
            attempt: r.get(5)?,
            worker_id: r.get(6)?,
            error: None,
            epochs: match epoch {
                Some(epoch) => vec![EpochMetrics {
                    epoch,
                    train_loss: nan_if_null(r.get(8)?),
                    train_accuracy: nan_if_null(r.get(9)?),
                    test_accuracy: nan_if_null(r.get(10)?),
                    seconds: nan_if_null(r.get(11)?),
                    images_per_second: nan_if_null(r.get(12)?),
                }],
                None => Vec::new(),
            },
            warnings: Vec::new(),
            attempts: Vec::new(),
            max_attempts: r.get(16)?,
            epsilon_space: space(r.get(13)?),
            spec: None,
            epochs_planned: r.get::<_, Option<u32>>(14)?.unwrap_or_default(),
            worker_name: r.get(15)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every sweep, oldest first.
pub(super) fn list_sweeps(conn: &Connection) -> Result<Vec<SweepSummary>, StoreError> {
    let ids: Vec<SweepId> = conn
        .prepare_cached("SELECT sweep_id FROM sweeps ORDER BY created_ms, sweep_id")?
        .query_map([], |r| id(r, 0))?
        .collect::<Result<_, _>>()?;
    ids.iter().map(|id| summary(conn, id)).collect()
}

/// A sweep with every run (and its epoch metrics) and every cell, in file order.
pub(super) fn sweep_detail(
    conn: &Connection,
    sweep_id: &SweepId,
) -> Result<SweepDetail, StoreError> {
    let summary = summary(conn, sweep_id)?;
    let mut epochs: HashMap<RunId, Vec<EpochMetrics>> = HashMap::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT e.run_id, e.epoch, e.train_loss, e.train_accuracy, e.test_accuracy,
                        e.seconds, e.images_per_second
                 FROM sweep_runs sr JOIN epochs e ON e.run_id = sr.run_id
                 WHERE sr.sweep_id = ?1 ORDER BY e.run_id, e.epoch",
        )?;
        let rows = stmt.query_map([sweep_id.as_str()], |r| {
            Ok((
                id::<RunId>(r, 0)?,
                EpochMetrics {
                    epoch: r.get(1)?,
                    train_loss: nan_if_null(r.get(2)?),
                    train_accuracy: nan_if_null(r.get(3)?),
                    test_accuracy: nan_if_null(r.get(4)?),
                    seconds: nan_if_null(r.get(5)?),
                    images_per_second: nan_if_null(r.get(6)?),
                },
            ))
        })?;
        for row in rows {
            let (run_id, m) = row?;
            epochs.entry(run_id).or_default().push(m);
        }
    }
    let runs = {
        let mut stmt = conn.prepare_cached(
            "SELECT r.run_id, r.model, r.defense_name, r.defense_epsilon, r.seed, r.state,
                        r.attempt, r.worker_id, r.error, r.warnings, r.max_attempts,
                        json_extract(r.spec_json, '$.epsilon_space'), r.spec_json,
                        json_extract(r.spec_json, '$.training.epochs'), w.name
                 FROM sweep_runs sr JOIN runs r ON r.run_id = sr.run_id
                 LEFT JOIN workers w ON w.worker_id = r.worker_id
                 WHERE sr.sweep_id = ?1 ORDER BY r.seq",
        )?;
        let rows = stmt.query_map([sweep_id.as_str()], |r| {
            Ok(RunStatus {
                run_id: id(r, 0)?,
                model: r.get(1)?,
                defense_name: r.get(2)?,
                defense_epsilon: r.get(3)?,
                seed: u64::try_from(r.get::<_, i64>(4)?).unwrap_or_default(),
                state: state::<RunState>(r, 5)?.shown(),
                attempt: r.get(6)?,
                worker_id: r.get(7)?,
                error: r.get(8)?,
                epochs: Vec::new(),
                warnings: r
                    .get::<_, Option<String>>(9)?
                    .and_then(|w| serde_json::from_str(&w).ok())
                    .unwrap_or_default(),
                attempts: Vec::new(),
                max_attempts: r.get(10)?,
                epsilon_space: space(r.get(11)?),
                spec: spec(r.get(12)?),
                epochs_planned: r.get::<_, Option<u32>>(13)?.unwrap_or_default(),
                worker_name: r.get(14)?,
            })
        })?;
        let mut runs = Vec::new();
        for row in rows {
            let mut run = row?;
            run.epochs = epochs.remove(&run.run_id).unwrap_or_default();
            runs.push(run);
        }
        runs
    };
    let mut runs = runs;
    {
        let mut stmt = conn.prepare_cached(
            "SELECT attempt, worker_id, outcome, reason, ended_ms FROM attempts
                 WHERE run_id = ?1 ORDER BY attempt",
        )?;
        for run in &mut runs {
            let rows = stmt.query_map([run.run_id.as_str()], |r| {
                Ok(AttemptRecord {
                    attempt: r.get(0)?,
                    worker_id: r.get(1)?,
                    outcome: state(r, 2)?,
                    reason: r.get(3)?,
                    ended_ms: r.get(4)?,
                })
            })?;
            run.attempts = rows.collect::<Result<_, _>>()?;
        }
    }
    let cells = {
        let mut stmt = conn.prepare_cached(
            "SELECT c.cell_id, c.run_id, c.attack_name, c.epsilon, c.state, r.state,
                        c.result_json, c.error, c.spec_json, r.defense_name, r.defense_epsilon
                 FROM sweep_cells sc
                 JOIN cells c ON c.cell_id = sc.cell_id
                 JOIN runs r ON r.run_id = c.run_id
                 WHERE sc.sweep_id = ?1 ORDER BY sc.ord",
        )?;
        let rows = stmt.query_map(params![sweep_id.as_str()], |r| {
            let spec = spec::<CellSpec>(r.get(8)?);
            let run_defense: String = r.get(9)?;
            let run_epsilon: Option<f64> = r.get(10)?;
            let (defense_name, inference) = match &spec {
                Some(c) if !c.defense_name.is_empty() => {
                    (c.defense_name.clone(), c.inference.clone())
                }
                _ => (run_defense, InferenceDefense::default()),
            };
            // The ε the cell's defense is built for: its run's training ε, else its denoiser's.
            let defense_epsilon = run_epsilon
                .filter(|e| *e > 0.0)
                .or_else(|| inference.denoiser.as_ref().map(|d| d.epsilon));
            Ok((
                CellStatus {
                    cell_id: id(r, 0)?,
                    run_id: id(r, 1)?,
                    attack_name: r.get(2)?,
                    epsilon: r.get(3)?,
                    state: state::<CellState>(r, 4)?.shown(state(r, 5)?),
                    result: None,
                    error: r.get(7)?,
                    attack: spec.map(|c| c.attack),
                    defense_name,
                    defense_epsilon,
                    inference,
                },
                r.get::<_, Option<String>>(6)?,
            ))
        })?;
        let mut cells = Vec::new();
        for row in rows {
            let (mut cell, result) = row?;
            if let Some(json) = result {
                cell.result = Some(serde_json::from_str(&json)?);
            }
            cells.push(cell);
        }
        cells
    };
    Ok(SweepDetail {
        summary,
        runs,
        cells,
    })
}

/// A stored spec (`spec_json`) read back; `None` if it does not parse (a row written by a
/// future version), so a report still shows everything else.
fn spec<T: serde::de::DeserializeOwned>(json: String) -> Option<T> {
    serde_json::from_str(&json).ok()
}

/// Whether any run of an active sweep still has work to do (pending or leased).
pub(super) fn has_work(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            sql!(
                "SELECT 1 FROM runs WHERE state IN ('{}', '{}') LIMIT 1",
                RunState::Pending,
                RunState::Leased
            ),
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}
