//! Leases in SQL: who is working on which run, until when, and under which attempt number
//! (the rules are `crate::scheduler::leasing`).

use advsweep_core::{
    AttemptOutcome, CellChunk, CellId, CellSpec, CellState, LeaseId, RunId, RunSpec, RunState,
    SweepId,
};
use rusqlite::{Connection, OptionalExtension, params};

use super::attempts::{Ending, check_lease, end_failed_attempt, lease_record};
use super::id;
use super::recovery::latest_checkpoint;
use crate::scheduler::policy::LeaseSettings;
use crate::scheduler::{fencing, leasing};
use crate::store::error::StoreError;
use crate::store::ids::{now_ms, random_id};
use crate::store::records::{LeaseGrant, LeaseOutcome, LeaseRef, NewWorker};

pub(super) fn register_worker(conn: &Connection, worker: &NewWorker) -> Result<String, StoreError> {
    let worker_id = random_id("w-");
    let now = now_ms();
    conn.prepare_cached(
        "INSERT INTO workers (worker_id, name, hostname, device, slots, version,
             registered_ms, last_seen_ms, cert_sha256)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
    )?
    .execute(params![
        worker_id,
        worker.name,
        worker.hostname,
        worker.device,
        worker.slots,
        worker.version,
        now,
        worker.cert_sha256
    ])?;
    Ok(worker_id)
}

pub(super) fn lease(
    conn: &Connection,
    settings: &LeaseSettings,
    worker_id: &str,
    sweep_id: Option<&SweepId>,
) -> Result<LeaseOutcome, StoreError> {
    let now = now_ms();
    touch_worker(conn, worker_id, now)?;
    expire_leases(conn, settings, now)?;
    let candidate: Option<(RunId, String, u32)> = match sweep_id {
        None => conn
            .prepare_cached(sql!(
                "SELECT run_id, spec_json, attempt FROM runs
                 WHERE state = '{}' AND not_before_ms <= ?1
                 ORDER BY seq LIMIT 1",
                RunState::Pending
            ))?
            .query_row([now], |r| Ok((id(r, 0)?, r.get(1)?, r.get(2)?)))
            .optional()?,
        Some(sweep) => conn
            .prepare_cached(sql!(
                "SELECT r.run_id, r.spec_json, r.attempt
                 FROM sweep_runs sr JOIN runs r ON r.run_id = sr.run_id
                 WHERE sr.sweep_id = ?2 AND r.state = '{}' AND r.not_before_ms <= ?1
                 ORDER BY r.seq LIMIT 1",
                RunState::Pending
            ))?
            .query_row(params![now, sweep.as_str()], |r| {
                Ok((id(r, 0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?,
    };
    let Some((run_id, spec_json, attempt)) = candidate else {
        let next: Option<i64> = match sweep_id {
            None => conn
                .prepare_cached(
                    sql!(
                        "SELECT MIN(CASE WHEN state = '{pending}' THEN not_before_ms ELSE ?1 + 1000 END)
                     FROM runs WHERE state IN ('{pending}', '{leased}')",
                        pending = RunState::Pending,
                        leased = RunState::Leased
                    ),
                )?
                .query_row([now], |r| r.get(0))?,
            Some(sweep) => conn
                .prepare_cached(
                    sql!(
                        "SELECT MIN(CASE WHEN r.state = '{pending}' THEN r.not_before_ms
                                     ELSE ?1 + 1000 END)
                     FROM sweep_runs sr JOIN runs r ON r.run_id = sr.run_id
                     WHERE sr.sweep_id = ?2 AND r.state IN ('{pending}', '{leased}')",
                        pending = RunState::Pending,
                        leased = RunState::Leased
                    ),
                )?
                .query_row(params![now, sweep.as_str()], |r| r.get(0))?,
        };
        return Ok(leasing::nothing_ready(next, now));
    };
    let run: RunSpec = serde_json::from_str(&spec_json)?;
    let attempt = attempt + 1;
    let lease_id = LeaseId::new(random_id("l-"))?;
    let expires = leasing::expires_at(settings, now);
    conn.prepare_cached(sql!(
        "UPDATE runs SET state = '{}', attempt = ?2, lease_id = ?3, worker_id = ?4,
             lease_expires_ms = ?5, updated_ms = ?6
         WHERE run_id = ?1",
        RunState::Leased
    ))?
    .execute(params![
        run_id.as_str(),
        attempt,
        lease_id.as_str(),
        worker_id,
        expires,
        now
    ])?;
    let cells = {
        let mut stmt = conn.prepare_cached(sql!(
            "SELECT spec_json FROM cells WHERE run_id = ?1 AND state = '{}' ORDER BY seq",
            CellState::Pending
        ))?;
        let rows = stmt.query_map([run_id.as_str()], |r| r.get::<_, String>(0))?;
        let mut cells = Vec::new();
        for row in rows {
            cells.push(serde_json::from_str::<CellSpec>(&row?)?);
        }
        cells
    };
    let sweep_id: SweepId = conn
        .prepare_cached(
            "SELECT sr.sweep_id FROM sweep_runs sr JOIN sweeps s ON s.sweep_id = sr.sweep_id
             WHERE sr.run_id = ?1 ORDER BY s.cancelled, s.created_ms LIMIT 1",
        )?
        .query_row([run_id.as_str()], |r| id(r, 0))?;
    let resume_from = latest_checkpoint(conn, &run_id)?;
    let progress = cell_progress(conn, &cells)?;
    Ok(LeaseOutcome::Granted(Box::new(LeaseGrant {
        lease_id,
        attempt,
        sweep_id,
        run,
        cells,
        resume_from,
        progress,
    })))
}

/// The stored chunks of `cells`, in order, for the cells that have any.
fn cell_progress(
    conn: &Connection,
    cells: &[CellSpec],
) -> Result<Vec<(CellId, Vec<CellChunk>)>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT chunk_json FROM cell_chunks WHERE cell_id = ?1 ORDER BY start")?;
    let mut progress = Vec::new();
    for cell in cells {
        let rows = stmt.query_map([cell.id.as_str()], |r| r.get::<_, String>(0))?;
        let mut chunks = Vec::new();
        for row in rows {
            chunks.push(serde_json::from_str::<CellChunk>(&row?)?);
        }
        if !chunks.is_empty() {
            progress.push((cell.id.clone(), chunks));
        }
    }
    Ok(progress)
}

pub(super) fn heartbeat(
    conn: &Connection,
    settings: &LeaseSettings,
    lease: &LeaseRef,
) -> Result<bool, StoreError> {
    let now = now_ms();
    // Another worker's lease (an unregistered id's included) is refused before the caller is
    // looked up or anything renewed.
    fencing::check_holder(lease_record(conn, &lease.run_id)?.as_ref(), lease)?;
    touch_worker(conn, &lease.worker_id, now)?;
    expire_leases(conn, settings, now)?;
    match check_lease(conn, lease, now) {
        Ok(()) => {
            conn.prepare_cached("UPDATE runs SET lease_expires_ms = ?2 WHERE run_id = ?1")?
                .execute(params![
                    lease.run_id.as_str(),
                    leasing::expires_at(settings, now)
                ])?;
            Ok(true)
        }
        Err(StoreError::LeaseLost { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

fn touch_worker(conn: &Connection, worker_id: &str, now: i64) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached("UPDATE workers SET last_seen_ms = ?2 WHERE worker_id = ?1")?
        .execute(params![worker_id, now])?;
    if n == 0 {
        return Err(StoreError::UnknownWorker(worker_id.to_owned()));
    }
    Ok(())
}

pub(super) fn expire_leases(
    tx: &Connection,
    settings: &LeaseSettings,
    now: i64,
) -> Result<usize, StoreError> {
    let expired: Vec<(RunId, u32, Option<String>)> = {
        let mut stmt = tx.prepare_cached(sql!(
            "SELECT run_id, attempt, worker_id FROM runs
             WHERE state = '{}' AND lease_expires_ms < ?1",
            RunState::Leased
        ))?;
        let rows = stmt.query_map([now], |r| Ok((id(r, 0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (run_id, attempt, worker_id) in &expired {
        tracing::warn!(
            run_id = run_id.as_str(),
            attempt,
            worker_id,
            "lease expired without heartbeat; re-queueing"
        );
        end_failed_attempt(
            tx,
            settings,
            Ending {
                run_id,
                attempt: *attempt,
                worker_id: worker_id.as_deref(),
                outcome: AttemptOutcome::Expired,
                reason: leasing::EXPIRED_REASON,
                retryable: true,
            },
            now,
        )?;
    }
    Ok(expired.len())
}
