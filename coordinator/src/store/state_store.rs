//! The [`StateStore`] trait: the durable operations the scheduler needs.

use std::path::{Path, PathBuf};

use advsweep_core::{CellChunk, CellId, CellResult, EpochMetrics, RunId, SweepId};

use super::error::StoreError;
use super::records::{
    CancelOutcome, CheckpointInfo, FailOutcome, LeaseOutcome, LeaseRecord, LeaseRef, NewCheckpoint,
    NewWorker, RecordedCheckpoint, RetryOutcome, SubmitOutcome,
};
use super::views::{Gauges, RunStatus, SweepDetail, SweepSummary};
use crate::artifacts::Artifacts;
use crate::scheduler::policy::LeaseSettings;
use crate::sweep::Plan;

/// Durable coordinator state. Transitions are `async` and resolve once durable (or failed, with
/// none of their writes kept); each is atomic, and applies the scheduler's rules
/// (`crate::scheduler`: fencing, retries, completion) to the records it reads inside the same
/// transaction, so no rule is ever decided on a stale read. Reads are blocking and see every
/// transition acknowledged before they were called; callers on an async runtime run them on
/// the blocking pool (the [`crate::scheduler::Scheduler`] does).
#[async_trait::async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// Where the state lives (shown in logs).
    fn location(&self) -> &Path;

    /// The checkpoint files kept beside the state.
    fn artifacts(&self) -> Artifacts;

    /// Where checkpoint files of `run_id` live.
    fn artifacts_dir(&self, run_id: &RunId) -> PathBuf {
        self.artifacts().run_dir(run_id)
    }

    // --- Workers and leases: a worker idles until these are answered. ---

    /// Registers a worker; returns its new id.
    async fn register_worker(&self, worker: NewWorker) -> Result<String, StoreError>;

    /// Expires lapsed leases, then grants the oldest ready run to `worker_id` (restricted to
    /// the runs `sweep_id` needs when given).
    async fn lease(
        &self,
        policy: &LeaseSettings,
        worker_id: String,
        sweep_id: Option<SweepId>,
    ) -> Result<LeaseOutcome, StoreError>;

    /// Renews a live lease; `Ok(false)` when it is no longer held.
    async fn heartbeat(&self, policy: &LeaseSettings, lease: LeaseRef) -> Result<bool, StoreError>;

    /// Ends every lease past its expiry (a failed attempt, retried by the policy); returns how
    /// many.
    async fn expire_leases(&self, policy: &LeaseSettings) -> Result<usize, StoreError>;

    // --- Reports under a lease, each fenced. ---

    async fn report_epochs(
        &self,
        lease: LeaseRef,
        epochs: Vec<EpochMetrics>,
    ) -> Result<(), StoreError>;

    /// Stores a chunk of a cell's evaluation (it must continue the cell's stored chunks);
    /// `Ok(false)` when it was stored already or the cell is done.
    async fn report_cell_chunk(
        &self,
        lease: LeaseRef,
        cell_id: CellId,
        chunk: CellChunk,
    ) -> Result<bool, StoreError>;

    /// Stores the cells' results, all or none; returns how many this call stored.
    async fn complete_cells(
        &self,
        lease: LeaseRef,
        cells: Vec<(CellId, CellResult)>,
    ) -> Result<usize, StoreError>;

    /// Ends the lease successfully: unreported cells fail, the sanity warnings are stored.
    async fn complete_run(&self, lease: LeaseRef) -> Result<(), StoreError>;

    /// Ends the lease with an error; the policy decides between a retry and failing for good.
    async fn fail_run(
        &self,
        policy: &LeaseSettings,
        lease: LeaseRef,
        reason: String,
        retryable: bool,
    ) -> Result<FailOutcome, StoreError>;

    /// Hands the run back without penalty (preemption).
    async fn release_run(&self, lease: LeaseRef, reason: String) -> Result<(), StoreError>;

    /// Records a verified checkpoint file under a live lease, keeping the newest `keep` of the
    /// run's checkpoints.
    async fn record_checkpoint(
        &self,
        lease: LeaseRef,
        checkpoint: NewCheckpoint,
        keep: usize,
    ) -> Result<RecordedCheckpoint, StoreError>;

    /// Forgets a checkpoint (its file turned out corrupt).
    async fn drop_checkpoint(&self, checkpoint_id: String) -> Result<(), StoreError>;

    // --- What clients ask for. ---

    /// Stores a plan, idempotently by content id.
    async fn submit(&self, plan: Plan, sweep_toml: String) -> Result<SubmitOutcome, StoreError>;

    /// Cancels a sweep's unfinished work no other active sweep needs; returns the cells
    /// cancelled and those left running for the sweeps that share them.
    async fn cancel(&self, sweep_id: SweepId) -> Result<CancelOutcome, StoreError>;

    /// Re-queues the sweep's failed cells (and its cancelled ones with `include_cancelled`),
    /// or the named failed/cancelled ones; re-queuing nothing changes nothing.
    async fn retry(
        &self,
        sweep_id: SweepId,
        cell_ids: Vec<CellId>,
        include_cancelled: bool,
    ) -> Result<RetryOutcome, StoreError>;

    // --- Reads (blocking). ---

    /// The lease record of `run_id` (`None`: no such run).
    fn lease_record(&self, run_id: &RunId) -> Result<Option<LeaseRecord>, StoreError>;

    /// The client certificate (SHA-256, hex) `worker_id` registered with: `None` when no
    /// such worker is registered, `Some(None)` when it registered without one.
    fn worker_cert(&self, worker_id: &str) -> Result<Option<Option<String>>, StoreError>;

    /// A checkpoint of `run_id` by id.
    fn checkpoint(
        &self,
        run_id: &RunId,
        checkpoint_id: &str,
    ) -> Result<Option<CheckpointInfo>, StoreError>;

    /// The run's most advanced checkpoint, if any.
    fn latest_checkpoint(&self, run_id: &RunId) -> Result<Option<CheckpointInfo>, StoreError>;

    /// Whether any run of an active sweep still has work to do (pending or leased).
    fn has_work(&self) -> Result<bool, StoreError>;

    /// Counts by state, leases, workers (alive: seen at or after `alive_after_ms`).
    fn gauges(&self, alive_after_ms: i64) -> Result<Gauges, StoreError>;

    fn sweep_summary(&self, sweep_id: &SweepId) -> Result<SweepSummary, StoreError>;

    /// Every sweep, oldest first.
    fn list_sweeps(&self) -> Result<Vec<SweepSummary>, StoreError>;

    /// A sweep with every run (and its epochs and attempts) and every cell, in file order.
    fn sweep_detail(&self, sweep_id: &SweepId) -> Result<SweepDetail, StoreError>;

    /// The sweep's leased runs with their latest epoch, for live progress.
    fn running_runs(&self, sweep_id: &SweepId) -> Result<Vec<RunStatus>, StoreError>;
}
