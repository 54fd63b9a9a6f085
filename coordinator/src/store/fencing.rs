//! Fencing and the end of unsuccessful attempts, shared by leasing, reports and recovery.
//!
//! Every report a worker makes carries its [`LeaseRef`]; a report whose lease id or attempt no
//! longer matches is rejected ([`check_lease`]), so a worker that lost its lease can never
//! overwrite or duplicate a result. An attempt that ends without success (a reported failure,
//! an expired lease) goes through [`end_failed_attempt`], which decides between a retry after
//! a back-off and failing the run for good.

use advsweep_core::{AttemptOutcome, CellState, RunState};
use rusqlite::{Connection, OptionalExtension, params};

use super::settings::LeaseSettings;
use super::{StoreError, state};

/// What a worker quotes back on every call about a leased run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRef {
    pub worker_id: String,
    pub run_id: String,
    pub lease_id: String,
    pub attempt: u32,
}

/// Fails the check unless `lease` is the live lease of its run.
pub(super) fn check_lease(conn: &Connection, lease: &LeaseRef, now: i64) -> Result<(), StoreError> {
    let row: Option<(RunState, Option<String>, u32, Option<i64>)> = conn
        .prepare_cached(
            "SELECT state, lease_id, attempt, lease_expires_ms FROM runs WHERE run_id = ?1",
        )?
        .query_row([&lease.run_id], |r| {
            Ok((state(r, 0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let lost = |why: String| StoreError::LeaseLost {
        run_id: lease.run_id.clone(),
        lease_id: lease.lease_id.clone(),
        attempt: lease.attempt,
        why,
    };
    let Some((state, lease_id, attempt, expires)) = row else {
        return Err(lost("no such run".into()));
    };
    if attempt != lease.attempt || lease_id.as_deref() != Some(lease.lease_id.as_str()) {
        return Err(lost(format!("the run is now on attempt {attempt}")));
    }
    if state != RunState::Leased {
        return Err(lost(format!("the run is {state}")));
    }
    if expires.is_some_and(|e| e < now) {
        return Err(lost("the lease expired".into()));
    }
    Ok(())
}

/// An attempt that ended without success.
pub(super) struct FailedAttempt<'a> {
    pub run_id: &'a str,
    pub attempt: u32,
    pub worker_id: Option<&'a str>,
    /// `Failed` (reported by the worker) or `Expired` (no heartbeat).
    pub outcome: AttemptOutcome,
    pub reason: &'a str,
    pub retryable: bool,
}

/// Records the end of an attempt that did not succeed and decides what happens next: back to
/// `pending` after a back-off, or `failed` (with its pending cells) once attempts run out or
/// the error cannot succeed on retry.
pub(super) fn end_failed_attempt(
    tx: &Connection,
    settings: &LeaseSettings,
    failed: FailedAttempt<'_>,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    let FailedAttempt {
        run_id,
        attempt,
        worker_id,
        outcome,
        reason,
        retryable,
    } = failed;
    tx.execute(
        "INSERT OR REPLACE INTO attempts (run_id, attempt, worker_id, outcome, reason, ended_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![run_id, attempt, worker_id, outcome.as_str(), reason, now],
    )?;
    let failures: u32 = tx.query_row(
        "UPDATE runs SET failures = failures + 1 WHERE run_id = ?1 RETURNING failures",
        [run_id],
        |r| r.get(0),
    )?;
    let error = format!("attempt {attempt} {outcome}: {reason}");
    let max_attempts: u32 = tx.query_row(
        "SELECT max_attempts FROM runs WHERE run_id = ?1",
        [run_id],
        |r| r.get(0),
    )?;
    if retryable && failures < max_attempts {
        let at = now + settings.backoff_ms(failures);
        tx.execute(
            sql!(
                "UPDATE runs SET state = '{}', lease_id = NULL, worker_id = NULL,
                 lease_expires_ms = NULL, not_before_ms = ?2, error = ?3, updated_ms = ?4
             WHERE run_id = ?1",
                RunState::Pending
            ),
            params![run_id, at, error, now],
        )?;
        Ok(Some(at))
    } else {
        let error = if retryable {
            format!("{error} (gave up after {failures} failed attempts)")
        } else {
            format!("{error} (not retryable)")
        };
        tx.execute(
            sql!(
                "UPDATE runs SET state = '{}', lease_id = NULL, lease_expires_ms = NULL,
                 error = ?2, updated_ms = ?3
             WHERE run_id = ?1",
                RunState::Failed
            ),
            params![run_id, error, now],
        )?;
        tx.execute(
            sql!(
                "UPDATE cells SET state = '{}', error = ?2, updated_ms = ?3
             WHERE run_id = ?1 AND state = '{}'",
                CellState::Failed,
                CellState::Pending
            ),
            params![run_id, error, now],
        )?;
        Ok(None)
    }
}
