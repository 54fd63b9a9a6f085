//! What keeps long sweeps alive: preempted runs handed back without penalty, user retries of
//! failed work, and checkpoints any worker can resume from.

use std::path::{Path, PathBuf};

use advsweep_core::{AttemptOutcome, CellState, RunState};
use rusqlite::{Connection, OptionalExtension, params};

use crate::artifacts::Artifacts;

use super::fencing::{LeaseRef, check_lease};
use super::submit::reopen_runs;
use super::{Store, StoreError, now_ms, random_id, state};

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub checkpoint_id: String,
    pub run_id: String,
    pub epoch: u32,
    pub sha256: String,
    pub bytes: u64,
    pub path: PathBuf,
}

/// Checkpoints kept per run (older ones are deleted when a new one is stored).
pub const CHECKPOINTS_KEPT: usize = 2;

/// What a retry re-queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOutcome {
    pub cells: u32,
    pub runs: u32,
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Store {
    /// The checkpoint files of this state directory.
    pub fn artifacts(&self) -> Artifacts {
        Artifacts::new(self.path.parent().unwrap_or_else(|| Path::new(".")))
    }

    /// Where checkpoint files of `run_id` live.
    pub fn artifacts_dir(&self, run_id: &str) -> PathBuf {
        self.artifacts().run_dir(run_id)
    }

    /// Fails unless `lease` is the live lease of its run; writes nothing. Lets a checkpoint
    /// upload be refused before any byte of it reaches the disk.
    pub fn verify_lease(&self, lease: &LeaseRef) -> Result<(), StoreError> {
        check_lease(&*self.reader()?, lease, now_ms())
    }

    /// Hands a leased run back (preemption): re-queued now, not counted as a failure.
    pub async fn release_run(&self, lease: LeaseRef, reason: String) -> Result<(), StoreError> {
        self.write_async(move |c| release_run(c, &lease, &reason))
            .await
    }

    /// Re-queues the sweep's failed cells (or the named failed/cancelled ones) and their runs
    /// with a fresh attempt budget.
    pub fn retry(&self, sweep_id: &str, cell_ids: &[String]) -> Result<RetryOutcome, StoreError> {
        let (sweep_id, cell_ids) = (sweep_id.to_owned(), cell_ids.to_vec());
        self.write(move |c| retry(c, &sweep_id, &cell_ids))
    }

    /// Records a checkpoint file already written (and verified) at `path`, under a live lease.
    /// Older checkpoints beyond [`CHECKPOINTS_KEPT`] are forgotten and their files deleted.
    pub fn record_checkpoint(
        &self,
        lease: &LeaseRef,
        epoch: u32,
        sha256: &str,
        bytes: u64,
        path: &Path,
    ) -> Result<String, StoreError> {
        let (lease, sha256, path) = (lease.clone(), sha256.to_owned(), path.to_owned());
        let (checkpoint_id, stale) =
            self.write(move |c| record_checkpoint(c, &lease, epoch, &sha256, bytes, &path))?;
        for file in stale {
            let _ = std::fs::remove_file(file);
        }
        Ok(checkpoint_id)
    }

    /// The run's most advanced checkpoint, if any.
    pub fn latest_checkpoint(&self, run_id: &str) -> Result<Option<CheckpointInfo>, StoreError> {
        latest_checkpoint(&*self.reader()?, run_id)
    }

    /// A checkpoint by id, for a registered worker.
    pub fn checkpoint(
        &self,
        worker_id: &str,
        run_id: &str,
        checkpoint_id: &str,
    ) -> Result<Option<CheckpointInfo>, StoreError> {
        let conn = self.reader()?;
        let known = conn
            .query_row(
                "SELECT 1 FROM workers WHERE worker_id = ?1",
                [worker_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !known {
            return Err(StoreError::UnknownWorker(worker_id.to_owned()));
        }
        Ok(conn
            .query_row(
                "SELECT checkpoint_id, run_id, epoch, sha256, bytes, path FROM checkpoints
                 WHERE run_id = ?1 AND checkpoint_id = ?2",
                params![run_id, checkpoint_id],
                checkpoint_row,
            )
            .optional()?)
    }

    /// Forgets a checkpoint whose file turned out corrupt, so the next lease resumes from the
    /// previous one (or from scratch).
    pub fn drop_checkpoint(&self, checkpoint_id: &str) -> Result<(), StoreError> {
        let checkpoint_id = checkpoint_id.to_owned();
        self.write(move |c| {
            c.execute(
                "DELETE FROM checkpoints WHERE checkpoint_id = ?1",
                [checkpoint_id],
            )?;
            Ok(())
        })
    }
}

fn release_run(conn: &Connection, lease: &LeaseRef, reason: &str) -> Result<(), StoreError> {
    let now = now_ms();
    check_lease(conn, lease, now)?;
    conn.execute(
        "INSERT OR REPLACE INTO attempts (run_id, attempt, worker_id, outcome, reason, ended_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            lease.run_id,
            lease.attempt,
            lease.worker_id,
            AttemptOutcome::Preempted.as_str(),
            reason,
            now
        ],
    )?;
    conn.execute(
        sql!(
            "UPDATE runs SET state = '{}', lease_id = NULL, worker_id = NULL,
                 lease_expires_ms = NULL, not_before_ms = 0, updated_ms = ?2
             WHERE run_id = ?1",
            RunState::Pending
        ),
        params![lease.run_id, now],
    )?;
    Ok(())
}

fn retry(
    conn: &Connection,
    sweep_id: &str,
    cell_ids: &[String],
) -> Result<RetryOutcome, StoreError> {
    let now = now_ms();
    let exists = conn
        .query_row(
            "SELECT 1 FROM sweeps WHERE sweep_id = ?1",
            [sweep_id],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !exists {
        return Err(StoreError::SweepNotFound(sweep_id.to_owned()));
    }
    conn.execute(
        "UPDATE sweeps SET cancelled = 0 WHERE sweep_id = ?1",
        [sweep_id],
    )?;
    let mut cells = 0usize;
    if cell_ids.is_empty() {
        cells += conn.execute(
            sql!(
                "UPDATE cells SET state = '{}', error = NULL, updated_ms = ?2
                 WHERE state = '{}'
                   AND cell_id IN (SELECT cell_id FROM sweep_cells WHERE sweep_id = ?1)",
                CellState::Pending,
                CellState::Failed
            ),
            params![sweep_id, now],
        )?;
    } else {
        for id in cell_ids {
            let cell: Option<CellState> = conn
                .query_row(
                    "SELECT c.state FROM cells c JOIN sweep_cells sc ON sc.cell_id = c.cell_id
                         WHERE sc.sweep_id = ?1 AND c.cell_id = ?2",
                    params![sweep_id, id],
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
                        params![id, now],
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
    let runs = reopen_runs(conn, sweep_id, now)?;
    Ok(RetryOutcome {
        cells: count(cells),
        runs: count(runs),
    })
}

/// Returns the new checkpoint's id and the files of the checkpoints it made stale (to delete
/// once committed).
fn record_checkpoint(
    conn: &Connection,
    lease: &LeaseRef,
    epoch: u32,
    sha256: &str,
    bytes: u64,
    path: &Path,
) -> Result<(String, Vec<String>), StoreError> {
    let now = now_ms();
    let checkpoint_id = random_id("k-");
    check_lease(conn, lease, now)?;
    conn.execute(
            "INSERT INTO checkpoints (checkpoint_id, run_id, attempt, epoch, sha256, bytes, path, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                checkpoint_id,
                lease.run_id,
                lease.attempt,
                epoch,
                sha256,
                i64::try_from(bytes).unwrap_or(i64::MAX),
                path.display().to_string(),
                now
            ],
        )?;
    let stale: Vec<(String, String)> = {
        let mut stmt = conn.prepare_cached(
            "SELECT checkpoint_id, path FROM checkpoints WHERE run_id = ?1
                 ORDER BY epoch DESC, created_ms DESC LIMIT -1 OFFSET ?2",
        )?;
        let rows = stmt.query_map(params![lease.run_id, CHECKPOINTS_KEPT as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, _) in &stale {
        conn.execute("DELETE FROM checkpoints WHERE checkpoint_id = ?1", [id])?;
    }
    Ok((
        checkpoint_id,
        stale.into_iter().map(|(_, file)| file).collect(),
    ))
}

fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CheckpointInfo> {
    Ok(CheckpointInfo {
        checkpoint_id: r.get(0)?,
        run_id: r.get(1)?,
        epoch: r.get(2)?,
        sha256: r.get(3)?,
        bytes: u64::try_from(r.get::<_, i64>(4)?).unwrap_or_default(),
        path: PathBuf::from(r.get::<_, String>(5)?),
    })
}

/// The run's most advanced checkpoint, if any.
pub(super) fn latest_checkpoint(
    conn: &Connection,
    run_id: &str,
) -> Result<Option<CheckpointInfo>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT checkpoint_id, run_id, epoch, sha256, bytes, path FROM checkpoints
             WHERE run_id = ?1 ORDER BY epoch DESC, created_ms DESC LIMIT 1",
        )?
        .query_row([run_id], checkpoint_row)
        .optional()?)
}
