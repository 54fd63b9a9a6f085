//! Submitting a plan, idempotent by content id, and cancelling a sweep.
//!
//! Re-submitting a sweep (or a second sweep sharing runs) inserts only what is new, keeps every
//! finished cell, and re-opens failed or cancelled cells so that only missing work runs.

use advsweep_core::{CellState, RunState, SweepId};
use rusqlite::{Connection, OptionalExtension, params};

use super::state;
use crate::store::error::StoreError;
use crate::store::ids::now_ms;
use crate::store::records::{CancelOutcome, SubmitOutcome};
use crate::sweep::Plan;

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(super) fn submit(
    tx: &Connection,
    plan: &Plan,
    sweep_toml: &str,
) -> Result<SubmitOutcome, StoreError> {
    let now = now_ms();
    let max_attempts = plan.max_attempts;
    let existed = tx
        .query_row(
            "SELECT 1 FROM sweeps WHERE sweep_id = ?1",
            [plan.sweep_id.as_str()],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if existed {
        tx.execute(
            "UPDATE sweeps SET cancelled = 0 WHERE sweep_id = ?1",
            [plan.sweep_id.as_str()],
        )?;
    } else {
        tx.execute(
            "INSERT INTO sweeps (sweep_id, name, description, sweep_toml, cancelled, created_ms)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5)",
            params![
                plan.sweep_id.as_str(),
                plan.name,
                plan.description,
                sweep_toml,
                now
            ],
        )?;
    }
    {
        let mut insert_run = tx.prepare_cached(sql!(
            "INSERT OR IGNORE INTO runs (run_id, spec_json, model, defense_name,
                     defense_epsilon, seed, state, max_attempts, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, '{}', ?7, ?8)",
            RunState::Pending
        ))?;
        let mut link_run = tx.prepare_cached(
            "INSERT OR IGNORE INTO sweep_runs (sweep_id, run_id) VALUES (?1, ?2)",
        )?;
        let mut set_budget = tx.prepare_cached(sql!(
            "UPDATE runs SET max_attempts = ?2 WHERE run_id = ?1 AND state != '{}'",
            RunState::Done
        ))?;
        for run in &plan.runs {
            insert_run.execute(params![
                run.id.as_str(),
                serde_json::to_string(run)?,
                run.model_name,
                run.defense_name,
                run.defense.epsilon(),
                i64::try_from(run.seed).unwrap_or(i64::MAX),
                max_attempts,
                now
            ])?;
            link_run.execute(params![plan.sweep_id.as_str(), run.id.as_str()])?;
            // The latest submission's retry budget applies to unfinished runs.
            set_budget.execute(params![run.id.as_str(), max_attempts])?;
        }
    }
    let mut already_done = 0usize;
    {
        let mut state_of = tx.prepare_cached("SELECT state FROM cells WHERE cell_id = ?1")?;
        let mut insert_cell = tx.prepare_cached(sql!(
            "INSERT INTO cells (cell_id, run_id, attack_name, spec_json, epsilon, state, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, '{}', ?6)",
            CellState::Pending
        ))?;
        let mut reopen_cell = tx.prepare_cached(sql!(
            "UPDATE cells SET state = '{}', error = NULL, updated_ms = ?2 WHERE cell_id = ?1",
            CellState::Pending
        ))?;
        let mut link_cell = tx.prepare_cached(
            "INSERT OR IGNORE INTO sweep_cells (sweep_id, cell_id, ord) VALUES (?1, ?2, ?3)",
        )?;
        for (ord, cell) in plan.cells.iter().enumerate() {
            let stored: Option<CellState> = state_of
                .query_row([cell.id.as_str()], |r| state(r, 0))
                .optional()?;
            match stored {
                None => {
                    insert_cell.execute(params![
                        cell.id.as_str(),
                        cell.run_id.as_str(),
                        cell.attack_name,
                        serde_json::to_string(cell)?,
                        cell.epsilon,
                        now
                    ])?;
                }
                Some(CellState::Done) => already_done += 1,
                Some(CellState::Failed | CellState::Cancelled) => {
                    reopen_cell.execute(params![cell.id.as_str(), now])?;
                }
                Some(CellState::Pending) => {}
            }
            link_cell.execute(params![
                plan.sweep_id.as_str(),
                cell.id.as_str(),
                ord as i64
            ])?;
        }
    }
    reopen_runs(tx, &plan.sweep_id, now)?;
    Ok(SubmitOutcome {
        sweep_id: plan.sweep_id.clone(),
        name: plan.name.clone(),
        runs: count(plan.runs.len()),
        cells: count(plan.cells.len()),
        cells_already_done: count(already_done),
        new_sweep: !existed,
    })
}

/// Re-queues the sweep's finished, failed or cancelled runs that have pending cells again, with
/// a fresh attempt budget (after a submission or a retry re-opened cells). Returns how many.
pub(super) fn reopen_runs(
    tx: &Connection,
    sweep_id: &SweepId,
    now: i64,
) -> Result<usize, StoreError> {
    Ok(tx.execute(
        sql!(
            "UPDATE runs SET state = '{pending}', failures = 0, expiries = 0, budget_since = attempt,
                 error = NULL, not_before_ms = 0,
                 warnings = NULL, lease_id = NULL, worker_id = NULL, lease_expires_ms = NULL,
                 updated_ms = ?2
             WHERE run_id IN (SELECT run_id FROM sweep_runs WHERE sweep_id = ?1)
               AND state IN ('{done}', '{failed}', '{cancelled}')
               AND EXISTS (SELECT 1 FROM cells c WHERE c.run_id = runs.run_id AND c.state = '{cell_pending}')",
            pending = RunState::Pending,
            done = RunState::Done,
            failed = RunState::Failed,
            cancelled = RunState::Cancelled,
            cell_pending = CellState::Pending
        ),
        params![sweep_id.as_str(), now],
    )?)
}

pub(super) fn cancel(tx: &Connection, sweep_id: &SweepId) -> Result<CancelOutcome, StoreError> {
    let now = now_ms();
    let changed = tx.execute(
        "UPDATE sweeps SET cancelled = 1 WHERE sweep_id = ?1",
        [sweep_id.as_str()],
    )?;
    if changed == 0 {
        return Err(StoreError::SweepNotFound(sweep_id.clone()));
    }
    let cells = tx.execute(
        sql!(
            "UPDATE cells SET state = '{}', updated_ms = ?2
             WHERE state = '{}'
               AND cell_id IN (SELECT cell_id FROM sweep_cells WHERE sweep_id = ?1)
               AND NOT EXISTS (
                   SELECT 1 FROM sweep_cells sc JOIN sweeps s ON s.sweep_id = sc.sweep_id
                   WHERE sc.cell_id = cells.cell_id AND s.cancelled = 0)",
            CellState::Cancelled,
            CellState::Pending
        ),
        params![sweep_id.as_str(), now],
    )?;
    tx.execute(
        sql!(
            "UPDATE runs SET state = '{cancelled}', lease_id = NULL, lease_expires_ms = NULL,
                 updated_ms = ?2
             WHERE run_id IN (SELECT run_id FROM sweep_runs WHERE sweep_id = ?1)
               AND state IN ('{pending}', '{leased}')
               AND NOT EXISTS (SELECT 1 FROM cells c WHERE c.run_id = runs.run_id AND c.state = '{cell_pending}')",
            cancelled = RunState::Cancelled,
            pending = RunState::Pending,
            leased = RunState::Leased,
            cell_pending = CellState::Pending
        ),
        params![sweep_id.as_str(), now],
    )?;
    // What is still unfinished is another active sweep's too.
    let shared: i64 = tx.query_row(
        sql!(
            "SELECT COUNT(*) FROM cells
             WHERE state = '{}' AND cell_id IN (SELECT cell_id FROM sweep_cells WHERE sweep_id = ?1)",
            CellState::Pending
        ),
        [sweep_id.as_str()],
        |r| r.get(0),
    )?;
    Ok(CancelOutcome {
        cells: count(cells),
        shared: u32::try_from(shared).unwrap_or(u32::MAX),
    })
}
