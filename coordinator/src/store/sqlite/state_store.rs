//! [`StateStore`] for [`SqliteStore`]: each transition is one writer job (urgent for what a
//! worker idles on: registration, lease, heartbeat), each read one pooled connection (a
//! snapshot for views assembled from several queries).

use std::path::Path;

use advsweep_core::{CellChunk, CellId, CellResult, EpochMetrics, RunId, SweepId};

use super::{SqliteStore, attempts, leases, query, recovery, reports, submit};
use crate::artifacts::Artifacts;
use crate::scheduler::policy::LeaseSettings;
use crate::store::error::StoreError;
use crate::store::ids::now_ms;
use crate::store::records::{
    CancelOutcome, CheckpointInfo, FailOutcome, LeaseOutcome, LeaseRecord, LeaseRef, NewCheckpoint,
    NewWorker, RecordedCheckpoint, RetryOutcome, SubmitOutcome,
};
use crate::store::state_store::StateStore;
use crate::store::views::{Gauges, RunStatus, SweepDetail, SweepSummary};
use crate::sweep::Plan;

#[async_trait::async_trait]
impl StateStore for SqliteStore {
    fn location(&self) -> &Path {
        &self.path
    }

    fn artifacts(&self) -> Artifacts {
        Artifacts::new(self.path.parent().unwrap_or_else(|| Path::new(".")))
    }

    async fn register_worker(&self, worker: NewWorker) -> Result<String, StoreError> {
        self.write_urgent(move |c| leases::register_worker(c, &worker))
            .await
    }

    async fn lease(
        &self,
        policy: &LeaseSettings,
        worker_id: String,
        sweep_id: Option<SweepId>,
    ) -> Result<LeaseOutcome, StoreError> {
        let policy = policy.clone();
        self.write_urgent(move |c| leases::lease(c, &policy, &worker_id, sweep_id.as_ref()))
            .await
    }

    async fn heartbeat(&self, policy: &LeaseSettings, lease: LeaseRef) -> Result<bool, StoreError> {
        let policy = policy.clone();
        self.write_urgent(move |c| leases::heartbeat(c, &policy, &lease))
            .await
    }

    async fn expire_leases(&self, policy: &LeaseSettings) -> Result<usize, StoreError> {
        let policy = policy.clone();
        self.write(move |c| leases::expire_leases(c, &policy, now_ms()))
            .await
    }

    async fn report_epochs(
        &self,
        lease: LeaseRef,
        epochs: Vec<EpochMetrics>,
    ) -> Result<(), StoreError> {
        self.write(move |c| reports::report_epochs(c, &lease, &epochs))
            .await
    }

    async fn report_cell_chunk(
        &self,
        lease: LeaseRef,
        cell_id: CellId,
        chunk: CellChunk,
    ) -> Result<bool, StoreError> {
        self.write(move |c| reports::report_cell_chunk(c, &lease, &cell_id, &chunk))
            .await
    }

    async fn complete_cells(
        &self,
        lease: LeaseRef,
        cells: Vec<(CellId, CellResult)>,
    ) -> Result<usize, StoreError> {
        // One writer job, so one savepoint: the first refused cell rolls back the ones before.
        self.write(move |c| reports::complete_cells(c, &lease, &cells))
            .await
    }

    async fn complete_run(&self, lease: LeaseRef) -> Result<(), StoreError> {
        self.write(move |c| reports::complete_run(c, &lease)).await
    }

    async fn fail_run(
        &self,
        policy: &LeaseSettings,
        lease: LeaseRef,
        reason: String,
        retryable: bool,
    ) -> Result<FailOutcome, StoreError> {
        let policy = policy.clone();
        self.write(move |c| reports::fail_run(c, &policy, &lease, &reason, retryable))
            .await
    }

    async fn release_run(&self, lease: LeaseRef, reason: String) -> Result<(), StoreError> {
        self.write(move |c| recovery::release_run(c, &lease, &reason))
            .await
    }

    async fn record_checkpoint(
        &self,
        lease: LeaseRef,
        checkpoint: NewCheckpoint,
        keep: usize,
    ) -> Result<RecordedCheckpoint, StoreError> {
        self.write(move |c| recovery::record_checkpoint(c, &lease, &checkpoint, keep))
            .await
    }

    async fn drop_checkpoint(&self, checkpoint_id: String) -> Result<(), StoreError> {
        self.write(move |c| recovery::drop_checkpoint(c, &checkpoint_id))
            .await
    }

    async fn submit(&self, plan: Plan, sweep_toml: String) -> Result<SubmitOutcome, StoreError> {
        self.write(move |c| submit::submit(c, &plan, &sweep_toml))
            .await
    }

    async fn cancel(&self, sweep_id: SweepId) -> Result<CancelOutcome, StoreError> {
        self.write(move |c| submit::cancel(c, &sweep_id)).await
    }

    async fn retry(
        &self,
        sweep_id: SweepId,
        cell_ids: Vec<CellId>,
        include_cancelled: bool,
    ) -> Result<RetryOutcome, StoreError> {
        self.write(move |c| recovery::retry(c, &sweep_id, &cell_ids, include_cancelled))
            .await
    }

    fn lease_record(&self, run_id: &RunId) -> Result<Option<LeaseRecord>, StoreError> {
        attempts::lease_record(&*self.reader()?, run_id)
    }

    fn worker_cert(&self, worker_id: &str) -> Result<Option<Option<String>>, StoreError> {
        recovery::worker_cert(&*self.reader()?, worker_id)
    }

    fn checkpoint(
        &self,
        run_id: &RunId,
        checkpoint_id: &str,
    ) -> Result<Option<CheckpointInfo>, StoreError> {
        recovery::checkpoint(&*self.reader()?, run_id, checkpoint_id)
    }

    fn latest_checkpoint(&self, run_id: &RunId) -> Result<Option<CheckpointInfo>, StoreError> {
        recovery::latest_checkpoint(&*self.reader()?, run_id)
    }

    fn has_work(&self) -> Result<bool, StoreError> {
        query::has_work(&*self.reader()?)
    }

    fn gauges(&self, alive_after_ms: i64) -> Result<Gauges, StoreError> {
        query::gauges(&*self.snapshot()?, alive_after_ms)
    }

    fn sweep_summary(&self, sweep_id: &SweepId) -> Result<SweepSummary, StoreError> {
        query::summary(&*self.snapshot()?, sweep_id)
    }

    fn list_sweeps(&self) -> Result<Vec<SweepSummary>, StoreError> {
        query::list_sweeps(&*self.snapshot()?)
    }

    fn sweep_detail(&self, sweep_id: &SweepId) -> Result<SweepDetail, StoreError> {
        query::sweep_detail(&*self.snapshot()?, sweep_id)
    }

    fn running_runs(&self, sweep_id: &SweepId) -> Result<Vec<RunStatus>, StoreError> {
        query::running_runs(&*self.reader()?, sweep_id)
    }
}
