//! The scheduler: the rules of leasing, fencing, retries, preemption, expiry and completion,
//! over any [`StateStore`].
//!
//! The rules are plain functions over the store's records, testable without SQL: [`leasing`]
//! (expiry, when to ask again), [`fencing`] (is this quote the live lease), [`retry`] (back-off
//! or fail for good), [`completion`] (repeated reports, a run's end, sanity warnings), and the
//! [`policy`] that times them. A store applies them inside its transactions (see
//! `crate::store`), so each decision and its outcome are one atomic step.
//!
//! [`Scheduler`] is what the gRPC handlers, the server loop and the metrics endpoint call: it
//! holds the policy, hands it to the transitions that need it, runs the store's blocking reads
//! on the blocking pool, and does the work around a transition that is not state (deleting the
//! files of checkpoints a new one made stale).

mod callers;
pub mod completion;
pub mod fencing;
pub mod leasing;
pub mod policy;
pub mod retry;

use std::path::PathBuf;
use std::sync::Arc;

use advsweep_core::{CellChunk, CellId, CellResult, EpochMetrics, RunId, SweepId};

pub use policy::LeaseSettings;

use crate::store::{
    CancelOutcome, CheckpointInfo, FailOutcome, Gauges, LeaseOutcome, LeaseRef, NewCheckpoint,
    NewWorker, RetryOutcome, RunStatus, StateStore, StoreError, SubmitOutcome, SweepDetail,
    SweepSummary, now_ms,
};
use crate::sweep::Plan;

/// Checkpoints kept per run (older ones are forgotten, and their files deleted, when a new one
/// is stored).
pub const CHECKPOINTS_KEPT: usize = 2;

/// The rules over one store.
#[derive(Debug, Clone)]
pub struct Scheduler {
    store: Arc<dyn StateStore>,
    policy: LeaseSettings,
    certificates: Arc<callers::Certificates>,
}

impl Scheduler {
    pub fn new(store: Arc<dyn StateStore>, policy: LeaseSettings) -> Self {
        Scheduler {
            store,
            policy,
            certificates: Arc::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    pub fn policy(&self) -> &LeaseSettings {
        &self.policy
    }

    /// Runs a blocking read of the store on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn StateStore) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .unwrap_or_else(|e| Err(StoreError::CommitFailed(format!("a read panicked: {e}"))))
    }

    // --- Workers and leases. ---

    /// Registers a worker; returns its new id. `cert_sha256` is the client certificate it
    /// called with (mutual TLS): its later calls must present the same one.
    pub async fn register_worker(&self, worker: NewWorker) -> Result<String, StoreError> {
        let cert = worker.cert_sha256.clone();
        let worker_id = self.store.register_worker(worker).await?;
        self.certificates.remember(&worker_id, cert);
        Ok(worker_id)
    }

    /// Fails unless a call as `worker_id` comes with the client certificate that worker
    /// registered with (`presented`: the caller's, SHA-256 hex). A worker that registered
    /// without one is not bound to any; an unknown worker passes here and is refused by the
    /// transition it asks for. `run_id` names the run the call is about, for the refusal
    /// (`None`: a lease request, about no run yet).
    pub async fn authenticate(
        &self,
        worker_id: &str,
        run_id: Option<&RunId>,
        presented: Option<&str>,
    ) -> Result<(), StoreError> {
        let registered = match self.certificates.get(worker_id) {
            Some(known) => known,
            None => {
                let id = worker_id.to_owned();
                match self.read(move |s| s.worker_cert(&id)).await? {
                    None => return Ok(()),
                    Some(cert) => {
                        self.certificates.remember(worker_id, cert.clone());
                        cert
                    }
                }
            }
        };
        callers::check_certificate(registered.as_deref(), presented, worker_id, run_id)
    }

    /// [`Scheduler::authenticate`], and the worker must be registered (`UnknownWorker`
    /// otherwise): for calls that change nothing, so no transition would refuse a stranger.
    pub async fn authenticate_known(
        &self,
        worker_id: &str,
        presented: Option<&str>,
    ) -> Result<(), StoreError> {
        let id = worker_id.to_owned();
        if self.read(move |s| s.worker_cert(&id)).await?.is_none() {
            return Err(StoreError::UnknownWorker(worker_id.to_owned()));
        }
        self.authenticate(worker_id, None, presented).await
    }

    /// Grants the oldest ready run to `worker_id`, restricted to the runs `sweep_id` needs when
    /// given (`Idle` when that sweep has no work left, or does not exist).
    pub async fn lease(
        &self,
        worker_id: String,
        sweep_id: Option<SweepId>,
    ) -> Result<LeaseOutcome, StoreError> {
        self.store.lease(&self.policy, worker_id, sweep_id).await
    }

    /// Renews a lease. `Ok(false)` tells the worker to stop: the lease is gone.
    pub async fn heartbeat(&self, lease: LeaseRef) -> Result<bool, StoreError> {
        self.store.heartbeat(&self.policy, lease).await
    }

    /// Re-queues (or fails) every run whose lease has expired. Called periodically, and by
    /// every lease and heartbeat, so expiry does not depend on a timer alone.
    pub async fn expire_leases(&self) -> Result<usize, StoreError> {
        self.store.expire_leases(&self.policy).await
    }

    // --- Reports under a lease. ---

    /// Stores a run's epoch metrics (the latest attempt's value of each epoch stands).
    pub async fn report_epochs(
        &self,
        lease: LeaseRef,
        epochs: Vec<EpochMetrics>,
    ) -> Result<(), StoreError> {
        self.store.report_epochs(lease, epochs).await
    }

    /// Stores a chunk of a cell's evaluation, durably before it returns; `false` when it had
    /// been stored already (a retried call) or the cell is done.
    pub async fn report_cell_chunk(
        &self,
        lease: LeaseRef,
        cell_id: CellId,
        chunk: CellChunk,
    ) -> Result<bool, StoreError> {
        self.store.report_cell_chunk(lease, cell_id, chunk).await
    }

    /// Stores a cell's result. Returns `false` when the result had already been stored (a
    /// retried call), `true` when this call stored it.
    pub async fn complete_cell(
        &self,
        lease: LeaseRef,
        cell_id: CellId,
        result: CellResult,
    ) -> Result<bool, StoreError> {
        Ok(self
            .store
            .complete_cells(lease, vec![(cell_id, result)])
            .await?
            > 0)
    }

    /// Stores several cells' results in one transaction: all of them or, when one is refused
    /// (not a cell of the leased run, or the lease is gone), none. Returns how many this call
    /// stored; cells already done (a retried call, or an earlier attempt's result) count 0.
    pub async fn complete_cells(
        &self,
        lease: LeaseRef,
        cells: Vec<(CellId, CellResult)>,
    ) -> Result<usize, StoreError> {
        self.store.complete_cells(lease, cells).await
    }

    /// Ends a run's lease successfully. Cells the worker did not report are failed, since the
    /// worker claims to be finished with them; the run's sanity warnings are stored with it.
    pub async fn complete_run(&self, lease: LeaseRef) -> Result<(), StoreError> {
        self.store.complete_run(lease).await
    }

    /// Ends a run's lease with an error; retried with back-off when `retryable` and attempts
    /// remain.
    pub async fn fail_run(
        &self,
        lease: LeaseRef,
        reason: String,
        retryable: bool,
    ) -> Result<FailOutcome, StoreError> {
        self.store
            .fail_run(&self.policy, lease, reason, retryable)
            .await
    }

    /// Hands a leased run back (preemption): re-queued now, not counted as a failure.
    pub async fn release_run(&self, lease: LeaseRef, reason: String) -> Result<(), StoreError> {
        self.store.release_run(lease, reason).await
    }

    // --- Checkpoints. ---

    /// Fails unless `lease` is the live lease of its run; writes nothing. Lets a checkpoint
    /// upload be refused before any byte of it reaches the disk.
    pub async fn verify_lease(&self, lease: &LeaseRef) -> Result<(), StoreError> {
        let quote = lease.clone();
        self.read(move |s| {
            fencing::check(s.lease_record(&quote.run_id)?.as_ref(), &quote, now_ms())
        })
        .await
    }

    /// Where checkpoint files of `run_id` live.
    pub fn artifacts_dir(&self, run_id: &RunId) -> PathBuf {
        self.store.artifacts_dir(run_id)
    }

    /// The state directory's artifact store (checkpoints, model files).
    pub fn artifacts(&self) -> crate::artifacts::Artifacts {
        self.store.artifacts()
    }

    /// Records a checkpoint file already written (and verified) at `path`, under a live lease.
    /// Older checkpoints beyond [`CHECKPOINTS_KEPT`] are forgotten and their files deleted.
    pub async fn record_checkpoint(
        &self,
        lease: &LeaseRef,
        epoch: u32,
        sha256: &str,
        bytes: u64,
        path: &std::path::Path,
    ) -> Result<String, StoreError> {
        let checkpoint = NewCheckpoint {
            epoch,
            sha256: sha256.to_owned(),
            bytes,
            path: path.to_owned(),
        };
        let recorded = self
            .store
            .record_checkpoint(lease.clone(), checkpoint, CHECKPOINTS_KEPT)
            .await?;
        for file in recorded.stale_files {
            let _ = tokio::fs::remove_file(file).await;
        }
        Ok(recorded.checkpoint_id)
    }

    /// A checkpoint by id, for the registered worker that holds the run's lease.
    pub async fn checkpoint(
        &self,
        worker_id: &str,
        run_id: &RunId,
        checkpoint_id: &str,
    ) -> Result<Option<CheckpointInfo>, StoreError> {
        let (worker_id, run_id, checkpoint_id) = (
            worker_id.to_owned(),
            run_id.clone(),
            checkpoint_id.to_owned(),
        );
        self.read(move |s| {
            if s.worker_cert(&worker_id)?.is_none() {
                return Err(StoreError::UnknownWorker(worker_id));
            }
            let live = s.lease_record(&run_id)?;
            fencing::check_download(live.as_ref(), &run_id, &worker_id, now_ms())?;
            s.checkpoint(&run_id, &checkpoint_id)
        })
        .await
    }

    /// The run's most advanced checkpoint, if any.
    pub async fn latest_checkpoint(
        &self,
        run_id: &RunId,
    ) -> Result<Option<CheckpointInfo>, StoreError> {
        let run_id = run_id.clone();
        self.read(move |s| s.latest_checkpoint(&run_id)).await
    }

    /// Forgets a checkpoint whose file turned out corrupt, so the next lease resumes from the
    /// previous one (or from scratch).
    pub async fn drop_checkpoint(&self, checkpoint_id: &str) -> Result<(), StoreError> {
        self.store.drop_checkpoint(checkpoint_id.to_owned()).await
    }

    // --- Sweeps. ---

    /// Stores a plan (a 100k-cell plan is tens of MB: it is moved, not copied).
    pub async fn submit(
        &self,
        plan: Plan,
        sweep_toml: String,
    ) -> Result<SubmitOutcome, StoreError> {
        self.store.submit(plan, sweep_toml).await
    }

    /// Cancels a sweep: its unfinished cells that no other active sweep needs become
    /// `cancelled`, and runs left without pending cells stop (their workers' heartbeats are
    /// answered `keep_going = false`). Returns the cells cancelled and those still running
    /// for other sweeps that share them.
    pub async fn cancel(&self, sweep_id: &SweepId) -> Result<CancelOutcome, StoreError> {
        self.store.cancel(sweep_id.clone()).await
    }

    /// Re-queues the sweep's failed cells (and cancelled ones with `include_cancelled`: a
    /// resume), or the named failed/cancelled ones, and their runs with a fresh attempt
    /// budget; a cancelled sweep becomes active again only if something was re-queued.
    pub async fn retry(
        &self,
        sweep_id: &SweepId,
        cell_ids: &[CellId],
        include_cancelled: bool,
    ) -> Result<RetryOutcome, StoreError> {
        self.store
            .retry(sweep_id.clone(), cell_ids.to_vec(), include_cancelled)
            .await
    }

    // --- Views. ---

    /// Counts by state over all sweeps, leases and workers (alive = heard from within three
    /// heartbeat intervals).
    pub async fn gauges(&self) -> Result<Gauges, StoreError> {
        let alive_after = now_ms().saturating_sub(
            3 * i64::try_from(self.policy.heartbeat_interval.as_millis()).unwrap_or(i64::MAX / 4),
        );
        self.read(move |s| s.gauges(alive_after)).await
    }

    /// Whether any run of an active sweep still has work to do (pending or leased).
    pub async fn has_work(&self) -> Result<bool, StoreError> {
        self.read(|s| s.has_work()).await
    }

    pub async fn sweep_summary(&self, sweep_id: &SweepId) -> Result<SweepSummary, StoreError> {
        let id = sweep_id.clone();
        self.read(move |s| s.sweep_summary(&id)).await
    }

    /// The summary and the leased runs of a sweep (what one `WatchSweep` event shows).
    pub async fn sweep_progress(
        &self,
        sweep_id: &SweepId,
    ) -> Result<(SweepSummary, Vec<RunStatus>), StoreError> {
        let id = sweep_id.clone();
        self.read(move |s| Ok((s.sweep_summary(&id)?, s.running_runs(&id)?)))
            .await
    }

    /// Every sweep, oldest first.
    pub async fn list_sweeps(&self) -> Result<Vec<SweepSummary>, StoreError> {
        self.read(|s| s.list_sweeps()).await
    }

    /// A sweep with every run (and its epoch metrics) and every cell, in file order.
    pub async fn sweep_detail(&self, sweep_id: &SweepId) -> Result<SweepDetail, StoreError> {
        let id = sweep_id.clone();
        self.read(move |s| s.sweep_detail(&id)).await
    }
}
