//! One leased run, from the lease to its last report: decode the run, fetch the checkpoint it
//! resumes from, start the job on a blocking thread, renew the lease with heartbeats, forward
//! the job's progress as reports, and end with `CompleteRun`, `ReleaseRun` or `FailRun`.
//!
//! The lease loop ([`super::run`]) only asks for leases and hands each to [`execute_lease`];
//! everything that quotes a lease lives here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use advsweep_core::wire::{
    cell_chunk_from_wire, cell_chunk_to_wire, cell_result_to_wire, epoch_to_wire, run_from_wire,
};
use advsweep_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tonic::{Code, Status};
use tracing::{Instrument as _, Span, debug, error, info, info_span, warn};

use super::retry::{Client, call, lease_gone, rpc};
use super::transfer::{DownloadError, download_checkpoint, ensure_model_file, upload_checkpoint};
use crate::error::{is_cancelled, is_retryable};
use crate::job::{CellProgress, Executor, Progress};
use crate::report_batch::{MAX_CELLS_PER_CALL, Report, coalesce};

/// What `Register` gave us, which every lease quotes.
#[derive(Debug, Clone)]
pub(super) struct Session {
    pub(super) worker_id: String,
    pub(super) heartbeat_interval: Duration,
}

/// Shared state of one executing lease.
struct LeaseState {
    client: Client,
    lease: pb::LeaseRef,
    /// Tells the job to stop at the next batch.
    cancel: Arc<AtomicBool>,
    /// The coordinator took the lease away: send nothing more about it.
    lost: AtomicBool,
    /// The coordinator predates `ReportCellChunk`: send no more chunks.
    chunks_unsupported: AtomicBool,
}

impl LeaseState {
    fn mark_lost(&self, why: &str) {
        if !self.lost.swap(true, Ordering::SeqCst) {
            warn!(why, "lease lost; abandoning the run");
        }
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// The coordinator no longer wants the run from this worker (its sweep was cancelled, or
    /// the lease expired and was fenced off): the protocol working, so info, not a warning.
    fn mark_stopped(&self, why: &str) {
        if !self.lost.swap(true, Ordering::SeqCst) {
            info!(
                why,
                "sweep cancelled or lease lost: the coordinator no longer needs this run here; stopping it"
            );
        }
        self.cancel.store(true, Ordering::SeqCst);
    }

    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Handles an RPC result for the lease; returns whether it succeeded.
    fn check<T>(&self, rpc: &'static str, result: Result<T, Status>) -> bool {
        match result {
            Ok(_) => true,
            Err(status) if lease_gone(&status) => {
                self.mark_lost(&format!("{rpc}: {}", status.message()));
                false
            }
            Err(status) => {
                error!(rpc, code = ?status.code(), message = status.message(), "RPC failed");
                false
            }
        }
    }

    async fn report(&self, report: Report) {
        if self.is_lost() {
            debug!("lease lost; not reporting {report:?}");
            return;
        }
        match report {
            Report::Epochs(epochs) => {
                let request = pb::ReportMetricsRequest {
                    lease: Some(self.lease.clone()),
                    epochs: epochs.iter().map(epoch_to_wire).collect(),
                };
                let result = call("ReportMetrics", || {
                    rpc!(self.client, report_metrics, request)
                })
                .await;
                self.check("ReportMetrics", result);
            }
            Report::Checkpoint { epoch, bytes } => {
                // Best effort: a lost checkpoint only costs recomputation after a failure.
                match upload_checkpoint(&self.client, &self.lease, epoch, bytes).await {
                    Ok(ack) => debug!(
                        epoch,
                        bytes = ack.bytes,
                        checkpoint_id = ack.checkpoint_id,
                        "checkpoint stored"
                    ),
                    Err(status) if lease_gone(&status) => self.mark_lost(status.message()),
                    Err(status) => {
                        warn!(epoch, code = ?status.code(), message = status.message(), "checkpoint upload failed; continuing")
                    }
                }
            }
            Report::Chunk { cell_id, chunk } => {
                if self.chunks_unsupported.load(Ordering::Relaxed) {
                    return;
                }
                let request = pb::ReportCellChunkRequest {
                    lease: Some(self.lease.clone()),
                    cell_id: cell_id.clone(),
                    chunk: Some(cell_chunk_to_wire(&chunk)),
                };
                let result = call("ReportCellChunk", || {
                    rpc!(self.client, report_cell_chunk, request)
                })
                .await;
                match result {
                    Err(status) if status.code() == Code::Unimplemented => {
                        // A coordinator older than chunks: the cell is reported whole at its
                        // end, as before, and restarts from its beginning if this lease is lost.
                        info!(
                            "the coordinator does not store cell chunks; reporting whole cells only"
                        );
                        self.chunks_unsupported.store(true, Ordering::Relaxed);
                    }
                    result => {
                        if self.check("ReportCellChunk", result) {
                            debug!(cell_id, images_done = chunk.end(), "cell chunk stored");
                        }
                    }
                }
            }
            Report::Cells(cells) => {
                let request = pb::CompleteCellsRequest {
                    lease: Some(self.lease.clone()),
                    cells: cells
                        .iter()
                        .map(|(cell_id, result)| pb::CellReport {
                            cell_id: cell_id.clone(),
                            result: Some(cell_result_to_wire(result)),
                        })
                        .collect(),
                };
                let result = call("CompleteCells", || {
                    rpc!(self.client, complete_cells, request)
                })
                .await;
                match result {
                    Err(status) if status.code() == Code::Unimplemented => {
                        // A coordinator older than CompleteCells: one call per cell.
                        debug!("CompleteCells not served; reporting cells one by one");
                        for (cell_id, result) in cells {
                            self.complete_one_cell(cell_id, result).await;
                        }
                    }
                    result => {
                        if self.check("CompleteCells", result) {
                            for (cell_id, _) in &cells {
                                debug!(cell_id, "cell reported");
                            }
                        }
                    }
                }
            }
        }
    }

    async fn complete_one_cell(&self, cell_id: String, result: advsweep_core::CellResult) {
        if self.is_lost() {
            return;
        }
        let request = pb::CompleteCellRequest {
            lease: Some(self.lease.clone()),
            cell_id: cell_id.clone(),
            result: Some(cell_result_to_wire(&result)),
        };
        let result = call("CompleteCell", || rpc!(self.client, complete_cell, request)).await;
        if self.check("CompleteCell", result) {
            debug!(cell_id, "cell reported");
        }
    }

    async fn complete(&self) {
        let request = pb::CompleteRunRequest {
            lease: Some(self.lease.clone()),
        };
        let result = call("CompleteRun", || rpc!(self.client, complete_run, request)).await;
        if self.check("CompleteRun", result) {
            info!("run completed");
        }
    }

    async fn release(&self, reason: String) {
        let request = pb::ReleaseRunRequest {
            lease: Some(self.lease.clone()),
            reason,
        };
        let result = call("ReleaseRun", || rpc!(self.client, release_run, request)).await;
        if self.check("ReleaseRun", result) {
            info!("run handed back to the coordinator (preempted)");
        }
    }

    async fn fail(&self, reason: String, retryable: bool) {
        let request = pb::FailRunRequest {
            lease: Some(self.lease.clone()),
            reason,
            retryable,
        };
        let result = call("FailRun", || rpc!(self.client, fail_run, request)).await;
        if self.check("FailRun", result) {
            info!(retryable, "run failure reported");
        }
    }

    /// Renews the lease until aborted or the coordinator says stop.
    async fn heartbeat(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate; the lease is fresh
        loop {
            ticker.tick().await;
            if self.is_lost() {
                return;
            }
            let request = pb::HeartbeatRequest {
                lease: Some(self.lease.clone()),
            };
            match call("Heartbeat", || rpc!(self.client, heartbeat, request)).await {
                Ok(r) if r.keep_going => debug!("heartbeat ok"),
                Ok(_) => {
                    self.mark_stopped(
                        "the coordinator answered keep_going = false: the sweep was cancelled, or \
                         the lease expired and went to another worker",
                    );
                    return;
                }
                Err(status) if lease_gone(&status) => {
                    self.mark_lost(&format!("Heartbeat: {}", status.message()));
                    return;
                }
                Err(status) => {
                    warn!(code = ?status.code(), message = status.message(), "Heartbeat failed");
                }
            }
        }
    }
}

/// Executes one lease end to end; never fails (every outcome is reported or logged).
pub(super) async fn execute_lease(
    client: &Client,
    executor: &Arc<Executor>,
    session: &Session,
    lease: pb::Lease,
    shutdown: watch::Receiver<bool>,
) -> RunOutcome {
    let run_id = lease
        .run
        .as_ref()
        .map(|r| r.run_id.clone())
        .unwrap_or_default();
    let sweep_id = lease
        .run
        .as_ref()
        .map(|r| r.sweep_id.clone())
        .unwrap_or_default();
    let span = info_span!(
        "run",
        sweep_id = %sweep_id,
        run_id = %run_id,
        worker_id = %session.worker_id,
        attempt = lease.attempt,
        lease_id = %lease.lease_id
    );
    let state = Arc::new(LeaseState {
        client: client.clone(),
        lease: pb::LeaseRef {
            worker_id: session.worker_id.clone(),
            run_id,
            lease_id: lease.lease_id.clone(),
            attempt: lease.attempt,
        },
        cancel: Arc::new(AtomicBool::new(false)),
        lost: AtomicBool::new(false),
        chunks_unsupported: AtomicBool::new(false),
    });
    execute_lease_inner(
        state,
        executor.clone(),
        session.heartbeat_interval,
        lease,
        shutdown,
    )
    .instrument(span)
    .await
}

/// The lease's stored cell chunks, decoded; a cell whose chunks do not decode starts over
/// (logged), which costs time but never a wrong result.
fn cell_progress(progress: &[pb::CellProgress]) -> CellProgress {
    let mut cells = CellProgress::new();
    for cell in progress {
        match cell
            .chunks
            .iter()
            .map(cell_chunk_from_wire)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(chunks) => {
                cells.insert(cell.cell_id.clone(), chunks);
            }
            Err(e) => {
                warn!(cell_id = cell.cell_id, error = %e, "ignoring the cell's stored chunks")
            }
        }
    }
    cells
}

async fn execute_lease_inner(
    state: Arc<LeaseState>,
    executor: Arc<Executor>,
    heartbeat_interval: Duration,
    lease: pb::Lease,
    mut shutdown: watch::Receiver<bool>,
) -> RunOutcome {
    let Some(wire_run) = lease.run else {
        error!("lease carries no run");
        state.fail("the lease carried no run".into(), false).await;
        return RunOutcome::BadRun;
    };
    let (run, cells) = match run_from_wire(&wire_run) {
        Ok(decoded) => decoded,
        Err(e) => {
            error!(error = %e, "cannot decode the leased run");
            state.fail(format!("invalid run spec: {e}"), false).await;
            return RunOutcome::BadRun;
        }
    };
    info!(
        model = %run.model.name,
        defense = %run.defense_name,
        epochs = run.training.epochs,
        cells = cells.len(),
        device = %crate::device::label(executor.device()),
        "starting run"
    );

    let heartbeat = tokio::spawn(
        state
            .clone()
            .heartbeat(heartbeat_interval)
            .instrument(Span::current()),
    );
    if let Some(file) = &run.model.file {
        let fetched = ensure_model_file(
            &state.client,
            &state.lease.worker_id,
            file,
            executor.model_files(),
        )
        .await;
        if let Err(e) = fetched {
            error!(error = %format!("{e:#}"), "cannot fetch the run's model file");
            heartbeat.abort();
            let retryable = crate::error::is_retryable(&e);
            state
                .fail(format!("model `{}`: {e:#}", run.model_name), retryable)
                .await;
            return if retryable {
                RunOutcome::Failed
            } else {
                RunOutcome::BadRun
            };
        }
    }
    // Resume from the run's latest checkpoint (written by any worker) instead of epoch 0.
    let resume = match &lease.resume_from {
        None => None,
        Some(c) => match download_checkpoint(&state.client, &state.lease, c).await {
            Ok(bytes) => {
                info!(
                    epoch = c.epoch,
                    bytes = bytes.len(),
                    "checkpoint downloaded; resuming"
                );
                Some(bytes)
            }
            Err(DownloadError::StoredCorrupt(status)) => {
                // The coordinator has dropped the corrupt record; an earlier checkpoint may
                // still be intact. Hand the run back (no penalty): its next lease resumes from
                // that one instead of this attempt retraining from epoch 0.
                warn!(
                    checkpoint_id = c.checkpoint_id,
                    epoch = c.epoch,
                    message = status.message(),
                    "the run's newest checkpoint is corrupt; handing the run back to resume from an earlier one"
                );
                heartbeat.abort();
                state
                    .release(format!(
                        "checkpoint {} (epoch {}) is corrupt; re-queued to resume from an earlier one",
                        c.checkpoint_id, c.epoch
                    ))
                    .await;
                return RunOutcome::Released;
            }
            Err(e) => {
                let status = e.status();
                warn!(code = ?status.code(), message = status.message(), "cannot fetch the run's checkpoint; training from scratch");
                None
            }
        },
    };
    let progress = cell_progress(&lease.progress);
    let (tx, mut rx) = mpsc::channel::<Progress>(64);
    let cancel = state.cancel.clone();
    let span = Span::current();
    let job = tokio::task::spawn_blocking(move || {
        span.in_scope(|| {
            executor.catching(|| {
                let emit = &mut |event| {
                    tx.blocking_send(event)
                        .map_err(|_| anyhow::anyhow!("the progress channel closed"))
                };
                executor.run(&run, &cells, resume.as_deref(), &progress, &cancel, emit)
            })
        })
    });

    // Forward progress in order until the job drops its sender.
    let mut shutting_down = false;
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Some(progress) => {
                    // Whatever else queued while the last call was in flight goes along.
                    let mut queued = vec![progress];
                    while queued.len() < 4 * MAX_CELLS_PER_CALL {
                        match rx.try_recv() {
                            Ok(more) => queued.push(more),
                            Err(_) => break,
                        }
                    }
                    for report in coalesce(queued) {
                        state.report(report).await;
                    }
                }
                None => break,
            },
            changed = shutdown.changed(), if !shutting_down => {
                if changed.is_err() || *shutdown.borrow() {
                    shutting_down = true;
                    info!("shutdown requested; stopping the run at the next batch");
                    state.cancel.store(true, Ordering::SeqCst);
                }
            }
        }
    }
    let outcome = job.await;
    heartbeat.abort();

    match outcome {
        Ok(Ok(())) if !state.is_lost() => {
            state.complete().await;
            RunOutcome::Completed
        }
        Ok(Ok(())) => {
            info!("run finished, but its lease was lost; not completing it");
            RunOutcome::Lost
        }
        Ok(Err(e)) if state.is_lost() => {
            info!(error = %format!("{e:#}"), "run abandoned after losing its lease");
            RunOutcome::Lost
        }
        Ok(Err(e)) if shutting_down && is_cancelled(&e) => {
            // Preemption, not failure: the coordinator re-queues it at once, without counting
            // the attempt against max_attempts.
            state
                .release("the worker is shutting down (SIGTERM/SIGINT)".into())
                .await;
            RunOutcome::Released
        }
        Ok(Err(e)) => {
            let retryable = is_retryable(&e) && !is_cancelled(&e);
            let reason = format!("{e:#}");
            error!(retryable, error = %reason, "run failed");
            state.fail(reason, retryable).await;
            if retryable {
                RunOutcome::Failed
            } else {
                RunOutcome::BadRun
            }
        }
        Err(join) => {
            let reason = format!("the run's thread failed: {join}");
            error!(error = %reason, "run failed");
            state.fail(reason, true).await;
            RunOutcome::Failed
        }
    }
}

/// How one lease ended, for the worker's failure streak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Completed,
    /// Failed in a way a broken node explains (a crash, a CUDA error, out of memory): counts
    /// toward `max_consecutive_failures`.
    Failed,
    /// The run itself cannot succeed anywhere (missing data, a bad parameter): the sweep's
    /// mistake, failed for good on the coordinator, and no sign of a broken node.
    BadRun,
    /// Handed back (shutdown): not this node's fault.
    Released,
    /// The lease expired or the sweep was cancelled under us.
    Lost,
}

impl RunOutcome {
    /// The worker's count of node-like failures in a row after this outcome.
    pub fn streak(self, failures_in_a_row: u32) -> u32 {
        match self {
            RunOutcome::Failed => failures_in_a_row + 1,
            RunOutcome::Completed => 0,
            RunOutcome::BadRun | RunOutcome::Released | RunOutcome::Lost => failures_in_a_row,
        }
    }
}
