//! What workers report under a lease, in SQL: epoch metrics, cell results, run completion,
//! failure. Each reads the records the scheduler's rules need (`crate::scheduler::completion`,
//! `fencing`, `retry`), applies them and writes the outcome in one transaction.

use advsweep_core::{
    AttemptOutcome, CellChunk, CellId, CellResult, CellState, EpochMetrics, RunId, RunState,
};
use rusqlite::{Connection, OptionalExtension, params};

use super::attempts::{Ending, check_lease, end_failed_attempt, lease_record, record_attempt};
use super::{id, state};
use crate::report::sanity::EvaluatedCell;
use crate::scheduler::completion::{self, CellReport, RunReport};
use crate::scheduler::policy::LeaseSettings;
use crate::store::error::StoreError;
use crate::store::ids::now_ms;
use crate::store::records::{CellRecord, FailOutcome, LeaseRef};

/// The run's finished cells, as the sanity rules read them.
fn evaluated_cells(tx: &Connection, run_id: &RunId) -> Result<Vec<EvaluatedCell>, StoreError> {
    let mut stmt = tx.prepare_cached(sql!(
        "SELECT spec_json, result_json FROM cells WHERE run_id = ?1 AND state = '{}'",
        CellState::Done
    ))?;
    let rows = stmt.query_map([run_id.as_str()], |r| {
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
            stages: result.stages,
            warnings: result.warnings,
            defense_name: cell.defense_name,
            inference: cell.inference,
        });
    }
    Ok(cells)
}

/// The run's sanity warnings, from its stored spec and finished cells.
fn sanity_warnings(tx: &Connection, run_id: &RunId) -> Result<Vec<String>, StoreError> {
    let spec: String = tx
        .prepare_cached("SELECT spec_json FROM runs WHERE run_id = ?1")?
        .query_row([run_id.as_str()], |r| r.get(0))?;
    let run: advsweep_core::RunSpec = serde_json::from_str(&spec)?;
    Ok(completion::warnings(&run, &evaluated_cells(tx, run_id)?))
}

pub(super) fn report_epochs(
    conn: &Connection,
    lease: &LeaseRef,
    epochs: &[EpochMetrics],
) -> Result<(), StoreError> {
    let now = now_ms();
    check_lease(conn, lease, now)?;
    let run_epochs: u32 = conn
        .prepare_cached(
            "SELECT json_extract(spec_json, '$.training.epochs') FROM runs WHERE run_id = ?1",
        )?
        .query_row([lease.run_id.as_str()], |r| r.get(0))?;
    let reported: Vec<u32> = epochs.iter().map(|m| m.epoch).collect();
    completion::check_epochs(run_epochs, &reported)?;
    let mut upsert = conn.prepare_cached(
        "INSERT OR REPLACE INTO epochs (run_id, epoch, attempt, train_loss, train_accuracy,
             test_accuracy, seconds, images_per_second)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for m in epochs {
        upsert.execute(params![
            lease.run_id.as_str(),
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

/// The stored cell a report names (`None`: no such cell).
fn cell_record(conn: &Connection, cell_id: &CellId) -> Result<Option<CellRecord>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT run_id, state, attempt FROM cells WHERE cell_id = ?1")?
        .query_row([cell_id.as_str()], |r| {
            Ok(CellRecord {
                run_id: id(r, 0)?,
                state: state(r, 1)?,
                attempt: r.get(2)?,
            })
        })
        .optional()?)
}

/// Stores a chunk of a cell's evaluation that continues its stored ones; `Ok(false)` when it
/// was stored already (or the cell is done).
pub(super) fn report_cell_chunk(
    conn: &Connection,
    lease: &LeaseRef,
    cell_id: &CellId,
    chunk: &CellChunk,
) -> Result<bool, StoreError> {
    let now = now_ms();
    let cell = cell_record(conn, cell_id)?;
    let live = lease_record(conn, &lease.run_id)?;
    let stored_end: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(MAX(start + images), 0) FROM cell_chunks WHERE cell_id = ?1",
        )?
        .query_row([cell_id.as_str()], |r| r.get(0))?;
    let report = completion::chunk_report(
        cell_id,
        cell.as_ref(),
        live.as_ref(),
        lease,
        now,
        u64::try_from(stored_end).unwrap_or(0),
        chunk.start,
    )?;
    if report == CellReport::AlreadyStored {
        return Ok(false);
    }
    conn.prepare_cached(
        "INSERT INTO cell_chunks (cell_id, start, images, attempt, chunk_json)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        cell_id.as_str(),
        chunk.start,
        chunk.images,
        lease.attempt,
        serde_json::to_string(chunk)?
    ])?;
    Ok(true)
}

fn complete_cell(
    conn: &Connection,
    lease: &LeaseRef,
    cell_id: &CellId,
    result: &CellResult,
    now: i64,
) -> Result<bool, StoreError> {
    let cell = cell_record(conn, cell_id)?;
    let live = lease_record(conn, &lease.run_id)?;
    match completion::cell_report(cell_id, cell.as_ref(), live.as_ref(), lease, now)? {
        CellReport::AlreadyStored => Ok(false),
        CellReport::Store => {
            conn.prepare_cached(sql!(
                "UPDATE cells SET state = '{}', result_json = ?2, attempt = ?3, error = NULL,
                     updated_ms = ?4
                 WHERE cell_id = ?1",
                CellState::Done
            ))?
            .execute(params![
                cell_id.as_str(),
                serde_json::to_string(result)?,
                lease.attempt,
                now
            ])?;
            conn.prepare_cached("DELETE FROM cell_chunks WHERE cell_id = ?1")?
                .execute([cell_id.as_str()])?;
            Ok(true)
        }
    }
}

/// One writer job, so one savepoint: the first refused cell rolls back the ones before it.
pub(super) fn complete_cells(
    conn: &Connection,
    lease: &LeaseRef,
    cells: &[(CellId, CellResult)],
) -> Result<usize, StoreError> {
    let now = now_ms();
    let mut stored = 0;
    for (cell_id, result) in cells {
        if complete_cell(conn, lease, cell_id, result, now)? {
            stored += 1;
        }
    }
    Ok(stored)
}

pub(super) fn complete_run(conn: &Connection, lease: &LeaseRef) -> Result<(), StoreError> {
    let now = now_ms();
    let live = lease_record(conn, &lease.run_id)?;
    if completion::run_report(live.as_ref(), lease, now)? == RunReport::AlreadyComplete {
        return Ok(());
    }
    let reason = completion::unreported_cell_error(&lease.worker_id, lease.attempt);
    conn.prepare_cached(sql!(
        "UPDATE cells SET state = '{}', error = ?2, updated_ms = ?3
         WHERE run_id = ?1 AND state = '{}'",
        CellState::Failed,
        CellState::Pending
    ))?
    .execute(params![lease.run_id.as_str(), reason, now])?;
    let warnings = sanity_warnings(conn, &lease.run_id)?;
    conn.prepare_cached(sql!(
        "UPDATE runs SET state = '{}', lease_id = NULL, lease_expires_ms = NULL,
             error = NULL, updated_ms = ?2, warnings = ?3
         WHERE run_id = ?1",
        RunState::Done
    ))?
    .execute(params![
        lease.run_id.as_str(),
        now,
        serde_json::to_string(&warnings)?
    ])?;
    for w in &warnings {
        tracing::warn!(run_id = lease.run_id.as_str(), warning = %w, "unsound-looking evaluation");
    }
    record_attempt(
        conn,
        &lease.run_id,
        lease.attempt,
        Some(&lease.worker_id),
        AttemptOutcome::Done,
        None,
        now,
    )
}

pub(super) fn fail_run(
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
        Ending {
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
