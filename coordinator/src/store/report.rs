//! What workers report under a lease: epoch metrics, cell results, run completion, failure.
//!
//! Every call is fenced by [`check_lease`]; repeating a call that already took effect for the
//! same attempt is a no-op success, so a worker may safely retry after a lost response.

use advsweep_core::{AttemptOutcome, CellResult, CellState, EpochMetrics, RunState};
use rusqlite::{Connection, OptionalExtension, params};

use crate::report::sanity::EvaluatedCell;

use super::fencing::{FailedAttempt, LeaseRef, check_lease, end_failed_attempt};
use super::settings::LeaseSettings;
use super::{Store, StoreError, now_ms, state};

/// The run's sanity warnings, from its stored spec and finished cells.
fn sanity_warnings(tx: &Connection, run_id: &str) -> Result<Vec<String>, StoreError> {
    let spec: String = tx
        .prepare_cached("SELECT spec_json FROM runs WHERE run_id = ?1")?
        .query_row([run_id], |r| r.get(0))?;
    let run: advsweep_core::RunSpec = serde_json::from_str(&spec)?;
    let mut stmt = tx.prepare_cached(sql!(
        "SELECT spec_json, result_json FROM cells WHERE run_id = ?1 AND state = '{}'",
        CellState::Done
    ))?;
    let rows = stmt.query_map([run_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut cells = Vec::new();
    for row in rows {
        let (spec, result) = row?;
        let cell: advsweep_core::CellSpec = serde_json::from_str(&spec)?;
        let result: CellResult = serde_json::from_str(&result)?;
        cells.push(EvaluatedCell {
            attack_name: cell.attack_name,
            attack: cell.attack,
            epsilon: cell.epsilon,
            accuracy: result.accuracy,
        });
    }
    Ok(crate::report::sanity::warnings(&run, &cells))
}

/// What became of a reported failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Re-queued; may start again at this time (ms since the epoch).
    RetryAt(i64),
    /// Failed for good: not retryable or out of attempts.
    Failed,
}

impl Store {
    /// Stores a run's epoch metrics (the latest attempt's value of each epoch stands).
    pub async fn report_epochs(
        &self,
        lease: LeaseRef,
        epochs: Vec<EpochMetrics>,
    ) -> Result<(), StoreError> {
        self.write_async(move |c| report_epochs(c, &lease, &epochs))
            .await
    }

    /// Stores a cell's result. Returns `false` when the result had already been stored (a
    /// retried call), `true` when this call stored it.
    pub async fn complete_cell(
        &self,
        lease: LeaseRef,
        cell_id: String,
        result: CellResult,
    ) -> Result<bool, StoreError> {
        self.write_async(move |c| complete_cell(c, &lease, &cell_id, &result))
            .await
    }

    /// Stores several cells' results in one transaction: all of them or, when one is refused
    /// (not a cell of the leased run, or the lease is gone), none. Returns how many this call
    /// stored; cells already done (a retried call, or an earlier attempt's result) count 0.
    pub async fn complete_cells(
        &self,
        lease: LeaseRef,
        cells: Vec<(String, CellResult)>,
    ) -> Result<usize, StoreError> {
        self.write_async(move |c| complete_cells(c, &lease, &cells))
            .await
    }

    /// Ends a run's lease successfully. Cells the worker did not report are failed, since the
    /// worker claims to be finished with them.
    pub async fn complete_run(&self, lease: LeaseRef) -> Result<(), StoreError> {
        self.write_async(move |c| complete_run(c, &lease)).await
    }

    /// Ends a run's lease with an error; retried with back-off when `retryable` and attempts
    /// remain.
    pub async fn fail_run(
        &self,
        lease: LeaseRef,
        reason: String,
        retryable: bool,
    ) -> Result<FailOutcome, StoreError> {
        let settings = self.settings.clone();
        self.write_async(move |c| fail_run(c, &settings, &lease, &reason, retryable))
            .await
    }
}

fn report_epochs(
    conn: &Connection,
    lease: &LeaseRef,
    epochs: &[EpochMetrics],
) -> Result<(), StoreError> {
    let now = now_ms();
    check_lease(conn, lease, now)?;
    let mut upsert = conn.prepare_cached(
        "INSERT OR REPLACE INTO epochs (run_id, epoch, attempt, train_loss, train_accuracy,
             test_accuracy, seconds, images_per_second)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for m in epochs {
        upsert.execute(params![
            lease.run_id,
            m.epoch,
            lease.attempt,
            m.train_loss,
            m.train_accuracy,
            m.test_accuracy,
            m.seconds,
            m.images_per_second
        ])?;
    }
    Ok(())
}

fn complete_cell(
    conn: &Connection,
    lease: &LeaseRef,
    cell_id: &str,
    result: &CellResult,
) -> Result<bool, StoreError> {
    let now = now_ms();
    let cell: Option<(String, CellState, Option<u32>)> = conn
        .prepare_cached("SELECT run_id, state, attempt FROM cells WHERE cell_id = ?1")?
        .query_row([cell_id], |r| Ok((r.get(0)?, state(r, 1)?, r.get(2)?)))
        .optional()?;
    let Some((run_id, cell_state, attempt)) = cell else {
        return Err(StoreError::NoSuchCell {
            run_id: lease.run_id.clone(),
            cell_id: cell_id.to_owned(),
        });
    };
    if run_id != lease.run_id {
        return Err(StoreError::NoSuchCell {
            run_id: lease.run_id.clone(),
            cell_id: cell_id.to_owned(),
        });
    }
    if cell_state == CellState::Done && attempt == Some(lease.attempt) {
        return Ok(false);
    }
    check_lease(conn, lease, now)?;
    if cell_state == CellState::Done {
        // Evaluated by an earlier attempt; the first result stands.
        return Ok(false);
    }
    conn.prepare_cached(sql!(
        "UPDATE cells SET state = '{}', result_json = ?2, attempt = ?3, error = NULL,
             updated_ms = ?4
         WHERE cell_id = ?1",
        CellState::Done
    ))?
    .execute(params![
        cell_id,
        serde_json::to_string(result)?,
        lease.attempt,
        now
    ])?;
    Ok(true)
}

/// One writer job, so one savepoint: the first refused cell rolls back the ones before it.
fn complete_cells(
    conn: &Connection,
    lease: &LeaseRef,
    cells: &[(String, CellResult)],
) -> Result<usize, StoreError> {
    let mut stored = 0;
    for (cell_id, result) in cells {
        if complete_cell(conn, lease, cell_id, result)? {
            stored += 1;
        }
    }
    Ok(stored)
}

fn complete_run(conn: &Connection, lease: &LeaseRef) -> Result<(), StoreError> {
    let now = now_ms();
    let finished: Option<(RunState, u32)> = conn
        .prepare_cached("SELECT state, attempt FROM runs WHERE run_id = ?1")?
        .query_row([&lease.run_id], |r| Ok((state(r, 0)?, r.get(1)?)))
        .optional()?;
    if finished == Some((RunState::Done, lease.attempt)) {
        return Ok(());
    }
    check_lease(conn, lease, now)?;
    let reason = format!(
        "worker {} finished attempt {} without a result for this cell",
        lease.worker_id, lease.attempt
    );
    conn.prepare_cached(sql!(
        "UPDATE cells SET state = '{}', error = ?2, updated_ms = ?3
         WHERE run_id = ?1 AND state = '{}'",
        CellState::Failed,
        CellState::Pending
    ))?
    .execute(params![lease.run_id, reason, now])?;
    let warnings = sanity_warnings(conn, &lease.run_id)?;
    conn.prepare_cached(sql!(
        "UPDATE runs SET state = '{}', lease_id = NULL, lease_expires_ms = NULL,
             error = NULL, updated_ms = ?2, warnings = ?3
         WHERE run_id = ?1",
        RunState::Done
    ))?
    .execute(params![
        lease.run_id,
        now,
        serde_json::to_string(&warnings)?
    ])?;
    for w in &warnings {
        tracing::warn!(run_id = lease.run_id, warning = %w, "unsound-looking evaluation");
    }
    conn.prepare_cached(sql!(
        "INSERT OR REPLACE INTO attempts (run_id, attempt, worker_id, outcome, reason, ended_ms)
         VALUES (?1, ?2, ?3, '{}', NULL, ?4)",
        AttemptOutcome::Done
    ))?
    .execute(params![lease.run_id, lease.attempt, lease.worker_id, now])?;
    Ok(())
}

fn fail_run(
    conn: &Connection,
    settings: &LeaseSettings,
    lease: &LeaseRef,
    reason: &str,
    retryable: bool,
) -> Result<FailOutcome, StoreError> {
    let now = now_ms();
    check_lease(conn, lease, now)?;
    let next = end_failed_attempt(
        conn,
        settings,
        FailedAttempt {
            run_id: &lease.run_id,
            attempt: lease.attempt,
            worker_id: Some(&lease.worker_id),
            outcome: AttemptOutcome::Failed,
            reason,
            retryable,
        },
        now,
    )?;
    Ok(match next {
        Some(at) => FailOutcome::RetryAt(at),
        None => FailOutcome::Failed,
    })
}
