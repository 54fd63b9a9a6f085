//! What workers report under a lease: a cell's result, the end of a run, and the sanity
//! warnings a finished run stores.
//!
//! Every report is fenced ([`super::fencing`]); repeating one that already took effect for the
//! same attempt is a no-op success, so a worker may safely retry after a lost response. A
//! cell's first result stands: a later attempt's result for it is accepted and ignored.

use advsweep_core::{CellId, CellState, RunSpec, RunState};

use super::fencing;
use crate::report::sanity::{self, EvaluatedCell};
use crate::store::error::StoreError;
use crate::store::records::{CellRecord, LeaseRecord, LeaseRef};

/// Every reported epoch must be one the run trains: `1..=training.epochs` of its spec (a
/// worker reporting epoch 5000 of a 1-epoch run is confused or hostile). `INVALID_ARGUMENT`
/// naming the field.
pub fn check_epochs(run_epochs: u32, epochs: &[u32]) -> Result<(), StoreError> {
    match epochs.iter().find(|&&e| e == 0 || e > run_epochs) {
        Some(e) => Err(StoreError::Invalid(format!(
            "field `epochs.epoch` = {e} is outside the run's 1..={run_epochs} training epochs"
        ))),
        None => Ok(()),
    }
}

/// What to do with a reported cell result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellReport {
    /// Store it: the cell's first result.
    Store,
    /// Already stored (a retried call, or an earlier attempt's result): nothing to write.
    AlreadyStored,
}

/// Decides a cell result quoting `quote`, given the stored cell (`None`: no such cell) and its
/// run's lease.
pub fn cell_report(
    cell_id: &CellId,
    cell: Option<&CellRecord>,
    live: Option<&LeaseRecord>,
    quote: &LeaseRef,
    now: i64,
) -> Result<CellReport, StoreError> {
    fencing::check_holder(live, quote)?;
    let Some(cell) = cell.filter(|c| c.run_id == quote.run_id) else {
        return Err(StoreError::NoSuchCell {
            run_id: quote.run_id.clone(),
            cell_id: cell_id.clone(),
        });
    };
    if cell.state == CellState::Done && cell.attempt == Some(quote.attempt) {
        return Ok(CellReport::AlreadyStored);
    }
    fencing::check(live, quote, now)?;
    Ok(if cell.state == CellState::Done {
        CellReport::AlreadyStored
    } else {
        CellReport::Store
    })
}

/// Decides a chunk of a cell's evaluation quoting `quote`: fenced like a cell result, stored
/// when it continues the cell's stored chunks (`stored_end`: one past their last example),
/// `AlreadyStored` when it is one of them (a retried call) or the cell is done, refused when
/// it would leave a gap.
#[allow(clippy::too_many_arguments)] // the records the rule reads, each once
pub fn chunk_report(
    cell_id: &CellId,
    cell: Option<&CellRecord>,
    live: Option<&LeaseRecord>,
    quote: &LeaseRef,
    now: i64,
    stored_end: u64,
    chunk_start: u32,
) -> Result<CellReport, StoreError> {
    if cell_report(cell_id, cell, live, quote, now)? == CellReport::AlreadyStored {
        return Ok(CellReport::AlreadyStored);
    }
    match u64::from(chunk_start).cmp(&stored_end) {
        std::cmp::Ordering::Less => Ok(CellReport::AlreadyStored),
        std::cmp::Ordering::Equal => Ok(CellReport::Store),
        std::cmp::Ordering::Greater => Err(StoreError::Invalid(format!(
            "field `chunk.start` = {chunk_start} leaves a gap: cell {cell_id}'s stored chunks \
             end at example {stored_end}"
        ))),
    }
}

/// What to do with a run reported complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunReport {
    /// End the lease: unreported cells fail, warnings are stored, the run is done.
    Complete,
    /// This attempt already completed the run (a retried call).
    AlreadyComplete,
}

/// Decides a completion quoting `quote`, given its run's lease record.
pub fn run_report(
    live: Option<&LeaseRecord>,
    quote: &LeaseRef,
    now: i64,
) -> Result<RunReport, StoreError> {
    fencing::check_holder(live, quote)?;
    if live.is_some_and(|l| l.state == RunState::Done && l.attempt == quote.attempt) {
        return Ok(RunReport::AlreadyComplete);
    }
    fencing::check(live, quote, now)?;
    Ok(RunReport::Complete)
}

/// The error a completed run's unreported cells keep: the worker claims to be finished with
/// them.
pub fn unreported_cell_error(worker_id: &str, attempt: u32) -> String {
    format!("worker {worker_id} finished attempt {attempt} without a result for this cell")
}

/// Signs of an unsound evaluation in a finished run's results (`advsweep-report`'s sanity
/// rules), stored with the run when it completes.
pub fn warnings(run: &RunSpec, cells: &[EvaluatedCell]) -> Vec<String> {
    sanity::warnings(run, cells)
}
