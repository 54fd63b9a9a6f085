//! A run's lease record and the end of its attempts, shared by leasing, reports and recovery.
//!
//! [`check_lease`] reads the record fencing needs and applies the scheduler's rule
//! ([`fencing::check`]); [`end_failed_attempt`] records an attempt that ended without success
//! and applies the scheduler's decision ([`retry::after_failure`]): back to `pending` after a
//! back-off, or `failed` with its pending cells.

use advsweep_core::{AttemptOutcome, CellState, RunId, RunState};
use rusqlite::{Connection, OptionalExtension, params};

use super::{optional_id, state};
use crate::scheduler::fencing;
use crate::scheduler::policy::LeaseSettings;
use crate::scheduler::retry::{self, AfterFailure, ExpiredAttempt, FailedAttempt};
use crate::store::error::StoreError;
use crate::store::records::{LeaseRecord, LeaseRef};

/// The lease record of `run_id` (`None`: no such run).
pub(super) fn lease_record(
    conn: &Connection,
    run_id: &RunId,
) -> Result<Option<LeaseRecord>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT state, lease_id, attempt, lease_expires_ms, worker_id FROM runs
             WHERE run_id = ?1",
        )?
        .query_row([run_id.as_str()], |r| {
            Ok(LeaseRecord {
                state: state(r, 0)?,
                lease_id: optional_id(r, 1)?,
                attempt: r.get(2)?,
                expires_ms: r.get(3)?,
                worker_id: r.get(4)?,
            })
        })
        .optional()?)
}

/// Fails unless `lease` is the live lease of its run.
pub(super) fn check_lease(conn: &Connection, lease: &LeaseRef, now: i64) -> Result<(), StoreError> {
    fencing::check(lease_record(conn, &lease.run_id)?.as_ref(), lease, now)
}

/// Records the end of an attempt (any outcome).
pub(super) fn record_attempt(
    tx: &Connection,
    run_id: &RunId,
    attempt: u32,
    worker_id: Option<&str>,
    outcome: AttemptOutcome,
    reason: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO attempts (run_id, attempt, worker_id, outcome, reason, ended_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        run_id.as_str(),
        attempt,
        worker_id,
        outcome.as_str(),
        reason,
        now
    ])?;
    Ok(())
}

/// An attempt that ended without success, as the transition saw it.
pub(super) struct Ending<'a> {
    pub run_id: &'a RunId,
    pub attempt: u32,
    pub worker_id: Option<&'a str>,
    /// `Failed` (reported by the worker) or `Expired` (no heartbeat).
    pub outcome: AttemptOutcome,
    pub reason: &'a str,
    pub retryable: bool,
}

/// Records the end of an attempt that did not succeed, charges it to its budget (reported
/// errors and expired leases are counted apart) and applies what the scheduler decides;
/// returns when the run may start again (`None`: failed for good).
pub(super) fn end_failed_attempt(
    tx: &Connection,
    policy: &LeaseSettings,
    ending: Ending<'_>,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    let Ending {
        run_id,
        attempt,
        worker_id,
        outcome,
        reason,
        retryable,
    } = ending;
    record_attempt(tx, run_id, attempt, worker_id, outcome, Some(reason), now)?;
    let decision = if outcome == AttemptOutcome::Expired {
        let (expiries, since): (u32, u32) = tx
            .prepare_cached(
                "UPDATE runs SET expiries = expiries + 1 WHERE run_id = ?1
                 RETURNING expiries, budget_since",
            )?
            .query_row([run_id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let workers: u32 = tx
            .prepare_cached(sql!(
                "SELECT COUNT(DISTINCT worker_id) FROM attempts
                 WHERE run_id = ?1 AND outcome = '{}' AND attempt > ?2",
                AttemptOutcome::Expired
            ))?
            .query_row(params![run_id.as_str(), since], |r| r.get(0))?;
        retry::after_expiry(
            policy,
            ExpiredAttempt {
                attempt,
                expiries,
                workers,
            },
            reason,
            now,
        )
    } else {
        let (failures, max_attempts): (u32, u32) = tx
            .prepare_cached(
                "UPDATE runs SET failures = failures + 1 WHERE run_id = ?1
                 RETURNING failures, max_attempts",
            )?
            .query_row([run_id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
        retry::after_failure(
            policy,
            FailedAttempt {
                attempt,
                outcome,
                reason,
                retryable,
                failures,
                max_attempts,
            },
            now,
        )
    };
    match decision {
        AfterFailure::Retry { at, error } => {
            tx.execute(
                sql!(
                    "UPDATE runs SET state = '{}', lease_id = NULL, worker_id = NULL,
                     lease_expires_ms = NULL, not_before_ms = ?2, error = ?3, updated_ms = ?4
                 WHERE run_id = ?1",
                    RunState::Pending
                ),
                params![run_id.as_str(), at, error, now],
            )?;
            Ok(Some(at))
        }
        AfterFailure::Fail { error } => {
            tx.execute(
                sql!(
                    "UPDATE runs SET state = '{}', lease_id = NULL, lease_expires_ms = NULL,
                     error = ?2, updated_ms = ?3
                 WHERE run_id = ?1",
                    RunState::Failed
                ),
                params![run_id.as_str(), error, now],
            )?;
            tx.execute(
                sql!(
                    "UPDATE cells SET state = '{}', error = ?2, updated_ms = ?3
                 WHERE run_id = ?1 AND state = '{}'",
                    CellState::Failed,
                    CellState::Pending
                ),
                params![run_id.as_str(), error, now],
            )?;
            Ok(None)
        }
    }
}
