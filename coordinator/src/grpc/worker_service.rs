//! `advsweep.v1.WorkerService`: what GPU workers call.
//!
//! Every request is validated ([`super::validate`]) before the store sees it: ids by shape,
//! labels and counts by bound, metrics and results through `advsweep_core::wire`. Every call
//! that quotes a lease (or, for a download, names a run) must come from the worker the lease
//! was granted to — by worker id, and under mutual TLS by the client certificate that worker
//! registered with (`Scheduler::authenticate`, `scheduler::fencing`); refusals are counted and
//! logged by [`Refusals`]. Lease ids are secrets: logs show a digest.

use std::sync::Arc;

use advsweep_core::{CellId, wire};
use advsweep_proto::v1 as pb;
use advsweep_proto::v1::worker_service_server::WorkerService;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use super::caller::Caller;
use super::checkpoints::{DEFAULT_MAX_DOWNLOADS, Downloads};
use super::refusals::Refusals;
use super::validate::{
    self, MAX_CELLS_PER_REPORT, MAX_EPOCHS_PER_REPORT, MAX_SLOTS, clean_reason, lease_ref,
    require_count, require_id, require_label, wire_error,
};
use super::{ChangeNotifier, status_of};
use crate::metrics::Metrics;
use crate::scheduler::Scheduler;
use crate::store::{FailOutcome, LeaseOutcome, LeaseRef, NewWorker, lease_digest, now_ms};

#[derive(Debug, Clone)]
pub struct WorkerApi {
    scheduler: Arc<Scheduler>,
    changes: ChangeNotifier,
    metrics: Arc<Metrics>,
    refusals: Arc<Refusals>,
    downloads: Arc<Downloads>,
}

impl WorkerApi {
    pub fn new(scheduler: Arc<Scheduler>, changes: ChangeNotifier, metrics: Arc<Metrics>) -> Self {
        WorkerApi {
            scheduler,
            changes,
            refusals: Arc::new(Refusals::new(Arc::clone(&metrics))),
            downloads: Arc::new(Downloads::new(DEFAULT_MAX_DOWNLOADS, Arc::clone(&metrics))),
            metrics,
        }
    }

    /// At most `limit` checkpoint downloads at once; the next is `RESOURCE_EXHAUSTED`.
    pub fn with_download_limit(mut self, limit: usize) -> Self {
        self.downloads = Arc::new(Downloads::new(limit, Arc::clone(&self.metrics)));
        self
    }

    /// Fails unless `caller` presents the certificate `lease`'s worker registered with.
    async fn authenticate(
        &self,
        rpc: &'static str,
        caller: &Caller,
        lease: &LeaseRef,
    ) -> Result<(), Status> {
        self.scheduler
            .authenticate(&lease.worker_id, Some(&lease.run_id), caller.cert())
            .await
            .map_err(|e| self.refusals.status(rpc, caller, e))
    }
}

/// A reported cell's id and result, validated; `at` prefixes the field names (`""` for
/// `CompleteCell`, `cells[i].` for one cell of `CompleteCells`).
fn cell_report(
    at: &str,
    cell_id: &str,
    result: Option<&pb::CellResult>,
) -> Result<(CellId, advsweep_core::CellResult), Status> {
    let cell_id = validate::cell_id(&format!("{at}cell_id"), cell_id)?;
    let result = result.ok_or_else(|| validate::invalid(format!("missing field `{at}result`")))?;
    let result = wire::cell_result_from_wire(result).map_err(|e| match at.strip_suffix('.') {
        Some(cell) => validate::invalid(format!("{cell}: {e}")),
        None => wire_error(e),
    })?;
    Ok((cell_id, result))
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    type DownloadCheckpointStream = super::checkpoints::ChunkStream;
    type DownloadModelFileStream = super::checkpoints::ChunkStreamOf<pb::ModelFileChunk>;

    async fn download_model_file(
        &self,
        request: Request<pb::DownloadModelFileRequest>,
    ) -> Result<Response<Self::DownloadModelFileStream>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        require_id("worker_id", &r.worker_id)?;
        let sha256 = validate::require_sha256("sha256", &r.sha256)?;
        self.scheduler
            .authenticate_known(&r.worker_id, caller.cert())
            .await
            .map_err(|e| self.refusals.status("DownloadModelFile", &caller, e))?;
        let slot = self.downloads.slot()?;
        let artifacts = self.scheduler.artifacts();
        let stream =
            super::model_files::send(&artifacts, &sha256, slot, Arc::clone(&self.metrics)).await;
        if let Err(status) = &stream {
            warn!(sha256, code = ?status.code(), message = status.message(), "model file not served");
        }
        Ok(Response::new(stream?))
    }

    async fn release_run(
        &self,
        request: Request<pb::ReleaseRunRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        let lease = lease_ref(r.lease)?;
        let reason = clean_reason(&r.reason);
        self.authenticate("ReleaseRun", &caller, &lease).await?;
        self.scheduler
            .release_run(lease.clone(), reason.clone())
            .await
            .map_err(|e| self.refusals.status("ReleaseRun", &caller, e))?;
        info!(
            run_id = lease.run_id.as_str(),
            worker_id = lease.worker_id,
            attempt = lease.attempt,
            reason,
            "run released (preempted); re-queued without penalty"
        );
        self.changes.notify();
        Ok(Response::new(pb::Ack {}))
    }

    async fn upload_checkpoint(
        &self,
        request: Request<tonic::Streaming<pb::CheckpointChunk>>,
    ) -> Result<Response<pb::CheckpointAck>, Status> {
        let caller = Caller::of(&request);
        let upload = super::checkpoints::begin(request.into_inner()).await?;
        // A stranger's (or a stale attempt's) upload is refused before it creates a directory
        // or writes a byte.
        self.authenticate("UploadCheckpoint", &caller, &upload.header.lease)
            .await?;
        self.scheduler
            .verify_lease(&upload.header.lease)
            .await
            .map_err(|e| self.refusals.status("UploadCheckpoint", &caller, e))?;
        let dir = self.scheduler.artifacts_dir(&upload.header.lease.run_id);
        let (header, path, bytes) = super::checkpoints::receive(upload, dir).await?;
        let lease = header.lease;
        let epoch = header.epoch;
        let recorded = self
            .scheduler
            .record_checkpoint(&lease, epoch, &header.sha256, bytes, &path)
            .await
            .map_err(|e| self.refusals.status("UploadCheckpoint", &caller, e));
        match recorded {
            Ok(checkpoint_id) => {
                info!(
                    run_id = lease.run_id.as_str(),
                    attempt = lease.attempt,
                    epoch,
                    bytes,
                    checkpoint_id,
                    "checkpoint stored"
                );
                Ok(Response::new(pb::CheckpointAck {
                    checkpoint_id,
                    bytes,
                }))
            }
            Err(status) => {
                // Fenced off (or the store failed): the file must not linger unreferenced.
                let _ = tokio::fs::remove_file(&path).await;
                Err(status)
            }
        }
    }

    async fn download_checkpoint(
        &self,
        request: Request<pb::DownloadCheckpointRequest>,
    ) -> Result<Response<Self::DownloadCheckpointStream>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        require_id("worker_id", &r.worker_id)?;
        let run_id = validate::run_id("run_id", &r.run_id)?;
        require_id("checkpoint_id", &r.checkpoint_id)?;
        let refused = |e| self.refusals.status("DownloadCheckpoint", &caller, e);
        self.scheduler
            .authenticate(&r.worker_id, Some(&run_id), caller.cert())
            .await
            .map_err(refused)?;
        let info = self
            .scheduler
            .checkpoint(&r.worker_id, &run_id, &r.checkpoint_id)
            .await
            .map_err(refused)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no checkpoint `{}` for run `{}`",
                    r.checkpoint_id, r.run_id
                ))
            })?;
        // The slot first: verifying reads the whole file, which is what the cap bounds.
        let slot = self.downloads.slot()?;
        let dropped = {
            let scheduler = Arc::clone(&self.scheduler);
            let (run_id, checkpoint_id) = (r.run_id.clone(), info.checkpoint_id.clone());
            move |error: &str| {
                warn!(
                    run_id,
                    checkpoint_id,
                    error,
                    "stored checkpoint is corrupt; dropping it so the run resumes from an earlier one"
                );
                async move {
                    let _ = scheduler.drop_checkpoint(&checkpoint_id).await;
                }
            }
        };
        if let Err(status) = super::checkpoints::verify(&info.path, &info.sha256).await {
            dropped(status.message()).await;
            return Err(status);
        }
        let on_corrupt: super::checkpoints::OnCorrupt =
            Box::new(move || Box::pin(dropped("the file changed while it was sent")));
        Ok(Response::new(super::checkpoints::stream(
            info.path,
            info.epoch,
            info.sha256,
            slot,
            Arc::clone(&self.metrics),
            on_corrupt,
        )))
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        for (field, value) in [
            ("name", &r.name),
            ("hostname", &r.hostname),
            ("device", &r.device),
            ("version", &r.version),
        ] {
            require_label(field, value)?;
        }
        if !(1..=MAX_SLOTS).contains(&r.slots) {
            return Err(validate::invalid(format!(
                "field `slots` = {} must be in 1..={MAX_SLOTS}",
                r.slots
            )));
        }
        let worker = NewWorker {
            name: r.name.clone(),
            hostname: r.hostname.clone(),
            device: r.device.clone(),
            slots: r.slots,
            version: r.version.clone(),
            cert_sha256: caller.cert_sha256.clone(),
        };
        let worker_id = self
            .scheduler
            .register_worker(worker)
            .await
            .map_err(status_of)?;
        info!(
            worker_id,
            name = r.name,
            hostname = r.hostname,
            device = r.device,
            slots = r.slots,
            certificate = caller.cert().map(|c| &c[..16]),
            "worker registered"
        );
        let settings = self.scheduler.policy();
        Ok(Response::new(pb::RegisterResponse {
            worker_id,
            heartbeat_interval_ms: millis(settings.heartbeat_interval),
            lease_ttl_ms: millis(settings.lease_ttl),
        }))
    }

    async fn lease(
        &self,
        request: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        let caller = Caller::of(&request);
        let pb::LeaseRequest {
            worker_id,
            sweep_id,
        } = request.into_inner();
        require_id("worker_id", &worker_id)?;
        let sweep_filter = if sweep_id.is_empty() {
            None
        } else {
            Some(validate::sweep_id("sweep_id", &sweep_id)?)
        };
        // A worker id bound to a certificate leases only with that certificate.
        self.scheduler
            .authenticate(&worker_id, None, caller.cert())
            .await
            .map_err(|e| self.refusals.status("Lease", &caller, e))?;
        let outcome = self
            .scheduler
            .lease(worker_id.clone(), sweep_filter)
            .await
            .map_err(status_of)?;
        let response = match outcome {
            LeaseOutcome::Granted(grant) => {
                info!(
                    sweep_id = grant.sweep_id.as_str(),
                    run_id = grant.run.id.as_str(),
                    worker_id,
                    attempt = grant.attempt,
                    lease = lease_digest(grant.lease_id.as_str()),
                    cells = grant.cells.len(),
                    "run leased"
                );
                self.changes.notify();
                pb::LeaseResponse {
                    lease: Some(pb::Lease {
                        lease_id: grant.lease_id.to_string(),
                        attempt: grant.attempt,
                        run: Some(wire::run_to_wire(&grant.run, &grant.sweep_id, &grant.cells)),
                        resume_from: grant.resume_from.as_ref().map(super::convert::checkpoint),
                        progress: grant
                            .progress
                            .iter()
                            .map(|(cell_id, chunks)| pb::CellProgress {
                                cell_id: cell_id.to_string(),
                                chunks: chunks.iter().map(wire::cell_chunk_to_wire).collect(),
                            })
                            .collect(),
                    }),
                    idle: false,
                    retry_after_ms: 0,
                }
            }
            LeaseOutcome::Wait { retry_after_ms } => pb::LeaseResponse {
                lease: None,
                idle: false,
                retry_after_ms,
            },
            LeaseOutcome::Idle => pb::LeaseResponse {
                lease: None,
                idle: true,
                retry_after_ms: 1000,
            },
        };
        Ok(Response::new(response))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let caller = Caller::of(&request);
        let lease = lease_ref(request.into_inner().lease)?;
        self.authenticate("Heartbeat", &caller, &lease).await?;
        let keep_going = self
            .scheduler
            .heartbeat(lease.clone())
            .await
            .map_err(|e| self.refusals.status("Heartbeat", &caller, e))?;
        if !keep_going {
            warn!(
                run_id = lease.run_id.as_str(),
                worker_id = lease.worker_id,
                attempt = lease.attempt,
                "heartbeat for a lease no longer held; telling the worker to stop"
            );
            self.changes.notify();
        }
        Ok(Response::new(pb::HeartbeatResponse { keep_going }))
    }

    async fn report_metrics(
        &self,
        request: Request<pb::ReportMetricsRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        let lease = lease_ref(r.lease)?;
        require_count("epochs", r.epochs.len(), MAX_EPOCHS_PER_REPORT)?;
        let epochs = r
            .epochs
            .iter()
            .map(wire::epoch_metrics_from_wire)
            .collect::<Result<Vec<_>, _>>()
            .map_err(wire_error)?;
        let points = epochs.len() as u64;
        self.authenticate("ReportMetrics", &caller, &lease).await?;
        self.scheduler
            .report_epochs(lease, epochs)
            .await
            .map_err(|e| self.refusals.status("ReportMetrics", &caller, e))?;
        self.metrics
            .metric_points
            .fetch_add(points, std::sync::atomic::Ordering::Relaxed);
        self.changes.notify();
        Ok(Response::new(pb::Ack {}))
    }

    async fn report_cell_chunk(
        &self,
        request: Request<pb::ReportCellChunkRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        let lease = lease_ref(r.lease)?;
        let cell_id = validate::cell_id("cell_id", &r.cell_id)?;
        let chunk = r
            .chunk
            .as_ref()
            .ok_or_else(|| validate::invalid("missing field `chunk`".to_owned()))?;
        let chunk = wire::cell_chunk_from_wire(chunk).map_err(wire_error)?;
        let (start, images) = (chunk.start, chunk.images);
        self.authenticate("ReportCellChunk", &caller, &lease)
            .await?;
        let stored = self
            .scheduler
            .report_cell_chunk(lease.clone(), cell_id, chunk)
            .await
            .map_err(|e| self.refusals.status("ReportCellChunk", &caller, e))?;
        debug!(
            run_id = lease.run_id.as_str(),
            cell_id = r.cell_id,
            attempt = lease.attempt,
            start,
            images,
            stored,
            "cell chunk"
        );
        self.changes.notify();
        Ok(Response::new(pb::Ack {}))
    }

    async fn complete_cell(
        &self,
        request: Request<pb::CompleteCellRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        let lease = lease_ref(r.lease)?;
        let (cell_id, result) = cell_report("", &r.cell_id, r.result.as_ref())?;
        let accuracy = result.accuracy;
        self.authenticate("CompleteCell", &caller, &lease).await?;
        let stored = self
            .scheduler
            .complete_cell(lease.clone(), cell_id, result)
            .await
            .map_err(|e| self.refusals.status("CompleteCell", &caller, e))?;
        if stored {
            self.metrics
                .cell_results
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        info!(
            run_id = lease.run_id.as_str(),
            cell_id = r.cell_id,
            attempt = lease.attempt,
            accuracy,
            stored,
            "cell result"
        );
        self.changes.notify();
        Ok(Response::new(pb::Ack {}))
    }

    async fn complete_cells(
        &self,
        request: Request<pb::CompleteCellsRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        let lease = lease_ref(r.lease)?;
        if r.cells.is_empty() {
            return Err(validate::invalid("field `cells` is empty"));
        }
        require_count("cells", r.cells.len(), MAX_CELLS_PER_REPORT)?;
        let mut cells = Vec::with_capacity(r.cells.len());
        for (i, cell) in r.cells.into_iter().enumerate() {
            cells.push(cell_report(
                &format!("cells[{i}]."),
                &cell.cell_id,
                cell.result.as_ref(),
            )?);
        }
        let count = cells.len();
        let logged: Vec<(String, f64)> = cells
            .iter()
            .map(|(id, r)| (id.to_string(), r.accuracy))
            .collect();
        self.authenticate("CompleteCells", &caller, &lease).await?;
        let stored = self
            .scheduler
            .complete_cells(lease.clone(), cells)
            .await
            .map_err(|e| self.refusals.status("CompleteCells", &caller, e))?;
        self.metrics
            .cell_results
            .fetch_add(stored as u64, std::sync::atomic::Ordering::Relaxed);
        for (cell_id, accuracy) in logged {
            info!(
                run_id = lease.run_id.as_str(),
                cell_id,
                attempt = lease.attempt,
                accuracy,
                batch = count,
                batch_stored = stored,
                "cell result"
            );
        }
        self.changes.notify();
        Ok(Response::new(pb::Ack {}))
    }

    async fn complete_run(
        &self,
        request: Request<pb::CompleteRunRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let caller = Caller::of(&request);
        let lease = lease_ref(request.into_inner().lease)?;
        self.authenticate("CompleteRun", &caller, &lease).await?;
        self.scheduler
            .complete_run(lease.clone())
            .await
            .map_err(|e| self.refusals.status("CompleteRun", &caller, e))?;
        info!(
            run_id = lease.run_id.as_str(),
            worker_id = lease.worker_id,
            attempt = lease.attempt,
            "run done"
        );
        self.changes.notify();
        Ok(Response::new(pb::Ack {}))
    }

    async fn fail_run(
        &self,
        request: Request<pb::FailRunRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        let lease = lease_ref(r.lease)?;
        let reason = clean_reason(&r.reason);
        let retryable = r.retryable;
        self.authenticate("FailRun", &caller, &lease).await?;
        let outcome = self
            .scheduler
            .fail_run(lease.clone(), reason.clone(), retryable)
            .await
            .map_err(|e| self.refusals.status("FailRun", &caller, e))?;
        match outcome {
            FailOutcome::RetryAt(at) => warn!(
                run_id = lease.run_id.as_str(),
                worker_id = lease.worker_id,
                attempt = lease.attempt,
                retry_in_ms = at - now_ms(),
                reason,
                "run attempt failed; will retry"
            ),
            FailOutcome::Failed => warn!(
                run_id = lease.run_id.as_str(),
                worker_id = lease.worker_id,
                attempt = lease.attempt,
                retryable,
                reason,
                "run failed for good"
            ),
        }
        self.changes.notify();
        Ok(Response::new(pb::Ack {}))
    }
}
