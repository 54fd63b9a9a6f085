//! What keeps long sweeps alive, in SQL: preempted runs handed back without penalty, user
//! retries of failed work, and checkpoints any worker can resume from.

use std::path::PathBuf;

use advsweep_core::{AttemptOutcome, CellId, CellState, RunId, RunState, SweepId};
use rusqlite::{Connection, OptionalExtension, params};

use super::attempts::{check_lease, record_attempt};
use super::submit::reopen_runs;
use super::{id, state};
use crate::store::error::StoreError;
use crate::store::ids::{now_ms, random_id};
use crate::store::records::{
    CheckpointInfo, LeaseRef, NewCheckpoint, RecordedCheckpoint, RetryOutcome,
};

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(super) fn release_run(
    conn: &Connection,
    lease: &LeaseRef,
    reason: &str,
) -> Result<(), StoreError> {
    let now = now_ms();
    check_lease(conn, lease, now)?;
    record_attempt(
        conn,
        &lease.run_id,
        lease.attempt,
        Some(&lease.worker_id),
        AttemptOutcome::Preempted,
        Some(reason),
        now,
    )?;
    conn.execute(
        sql!(
            "UPDATE runs SET state = '{}', lease_id = NULL, worker_id = NULL,
                 lease_expires_ms = NULL, not_before_ms = 0, updated_ms = ?2
             WHERE run_id = ?1",
            RunState::Pending
        ),
        params![lease.run_id.as_str(), now],
    )?;
    Ok(())
}

pub(super) fn retry(
    conn: &Connection,
    sweep_id: &SweepId,
    cell_ids: &[CellId],
    include_cancelled: bool,
) -> Result<RetryOutcome, StoreError> {
    let now = now_ms();
    let exists = conn
        .query_row(
            "SELECT 1 FROM sweeps WHERE sweep_id = ?1",
            [sweep_id.as_str()],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !exists {
        return Err(StoreError::SweepNotFound(sweep_id.clone()));
    }
    let mut cells = 0usize;
    if cell_ids.is_empty() {
        cells += conn.execute(
            sql!(
                "UPDATE cells SET state = '{}', error = NULL, updated_ms = ?2
                 WHERE (state = '{}' OR (?3 AND state = '{}'))
                   AND cell_id IN (SELECT cell_id FROM sweep_cells WHERE sweep_id = ?1)",
                CellState::Pending,
                CellState::Failed,
                CellState::Cancelled
            ),
            params![sweep_id.as_str(), now, include_cancelled],
        )?;
    } else {
        for id in cell_ids {
            let cell: Option<CellState> = conn
                .query_row(
                    "SELECT c.state FROM cells c JOIN sweep_cells sc ON sc.cell_id = c.cell_id
                         WHERE sc.sweep_id = ?1 AND c.cell_id = ?2",
                    params![sweep_id.as_str(), id.as_str()],
                    |r| state(r, 0),
                )
                .optional()?;
            match cell {
                None => {
                    return Err(StoreError::Invalid(format!(
                        "cell `{id}` is not part of sweep `{sweep_id}`"
                    )));
                }
                Some(CellState::Failed | CellState::Cancelled) => {
                    cells += conn.execute(
                        sql!(
                            "UPDATE cells SET state = '{}', error = NULL, updated_ms = ?2
                             WHERE cell_id = ?1",
                            CellState::Pending
                        ),
                        params![id.as_str(), now],
                    )?;
                }
                Some(other) => {
                    return Err(StoreError::Invalid(format!(
                        "cell `{id}` is {other}; only failed or cancelled cells can be retried"
                    )));
                }
            }
        }
    }
    // Nothing re-queued changes nothing: a cancelled sweep stays cancelled.
    if cells == 0 {
        return Ok(RetryOutcome::default());
    }
    conn.execute(
        "UPDATE sweeps SET cancelled = 0 WHERE sweep_id = ?1",
        [sweep_id.as_str()],
    )?;
    let runs = reopen_runs(conn, sweep_id, now)?;
    Ok(RetryOutcome {
        cells: count(cells),
        runs: count(runs),
    })
}

/// Records `checkpoint` under a live lease and forgets the run's checkpoints beyond the newest
/// `keep`; returns the new id and the files of those forgotten (to delete once committed).
pub(super) fn record_checkpoint(
    conn: &Connection,
    lease: &LeaseRef,
    checkpoint: &NewCheckpoint,
    keep: usize,
) -> Result<RecordedCheckpoint, StoreError> {
    let now = now_ms();
    let checkpoint_id = random_id("k-");
    check_lease(conn, lease, now)?;
    conn.execute(
        "INSERT INTO checkpoints (checkpoint_id, run_id, attempt, epoch, sha256, bytes, path, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            checkpoint_id,
            lease.run_id.as_str(),
            lease.attempt,
            checkpoint.epoch,
            checkpoint.sha256,
            i64::try_from(checkpoint.bytes).unwrap_or(i64::MAX),
            checkpoint.path.display().to_string(),
            now
        ],
    )?;
    let stale: Vec<(String, String)> = {
        let mut stmt = conn.prepare_cached(
            "SELECT checkpoint_id, path FROM checkpoints WHERE run_id = ?1
                 ORDER BY epoch DESC, created_ms DESC LIMIT -1 OFFSET ?2",
        )?;
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![lease.run_id.as_str(), keep], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, _) in &stale {
        conn.execute("DELETE FROM checkpoints WHERE checkpoint_id = ?1", [id])?;
    }
    Ok(RecordedCheckpoint {
        checkpoint_id,
        stale_files: stale
            .into_iter()
            .map(|(_, file)| PathBuf::from(file))
            .collect(),
    })
}

/// Forgets a checkpoint.
pub(super) fn drop_checkpoint(conn: &Connection, checkpoint_id: &str) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM checkpoints WHERE checkpoint_id = ?1",
        [checkpoint_id],
    )?;
    Ok(())
}

/// A checkpoint of `run_id` by id.
pub(super) fn checkpoint(
    conn: &Connection,
    run_id: &RunId,
    checkpoint_id: &str,
) -> Result<Option<CheckpointInfo>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT checkpoint_id, run_id, epoch, sha256, bytes, path FROM checkpoints
             WHERE run_id = ?1 AND checkpoint_id = ?2",
            params![run_id.as_str(), checkpoint_id],
            checkpoint_row,
        )
        .optional()?)
}

/// The client certificate `worker_id` registered with: `None` when no such worker is
/// registered, `Some(None)` when it registered without one.
pub(super) fn worker_cert(
    conn: &Connection,
    worker_id: &str,
) -> Result<Option<Option<String>>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT cert_sha256 FROM workers WHERE worker_id = ?1")?
        .query_row([worker_id], |r| r.get(0))
        .optional()?)
}

fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CheckpointInfo> {
    Ok(CheckpointInfo {
        checkpoint_id: r.get(0)?,
        run_id: id(r, 1)?,
        epoch: r.get(2)?,
        sha256: r.get(3)?,
        bytes: u64::try_from(r.get::<_, i64>(4)?).unwrap_or_default(),
        path: PathBuf::from(r.get::<_, String>(5)?),
    })
}

/// The run's most advanced checkpoint, if any.
pub(super) fn latest_checkpoint(
    conn: &Connection,
    run_id: &RunId,
) -> Result<Option<CheckpointInfo>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT checkpoint_id, run_id, epoch, sha256, bytes, path FROM checkpoints
             WHERE run_id = ?1 ORDER BY epoch DESC, created_ms DESC LIMIT 1",
        )?
        .query_row([run_id.as_str()], checkpoint_row)
        .optional()?)
}
