//! `advsweep.v1.SweepService`: what the CLI and scripts call.
//!
//! Requests are validated before the store sees them ([`super::validate`]): sweep and cell ids by
//! shape, the sweep file by size, its overrides by key and value, and its expansion against the
//! coordinator's [`Limits`] before any cell is materialised.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use advsweep_proto::v1 as pb;
use advsweep_proto::v1::sweep_service_server::SweepService;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::info;

use super::validate::{self, MAX_OVERRIDES, MAX_RETRY_CELL_IDS, require_count};
use super::{ChangeNotifier, convert, status_of};
use crate::scheduler::Scheduler;
use crate::store::SweepSummary;
use crate::sweep::model_files::{FileRef, ModelFiles};
use crate::sweep::{self, Limits, Overrides};

/// Least time between two refreshes of a `WatchSweep` stream.
const WATCH_MIN_INTERVAL: Duration = Duration::from_millis(200);

// Sweep files larger than this are refused before parsing (the same cap as `plan`'s).
use advsweep_core::limits::MAX_SWEEP_FILE_BYTES;

#[derive(Debug, Clone)]
pub struct SweepApi {
    scheduler: Arc<Scheduler>,
    changes: ChangeNotifier,
    limits: Limits,
}

impl SweepApi {
    /// With the default [`Limits`].
    pub fn new(scheduler: Arc<Scheduler>, changes: ChangeNotifier) -> Self {
        SweepApi {
            scheduler,
            changes,
            limits: Limits::default(),
        }
    }

    /// The same service with other limits on submitted sweeps.
    pub fn with_limits(self, limits: Limits) -> Self {
        SweepApi { limits, ..self }
    }
}

/// Most model files one sweep may name.
pub const MAX_MODEL_FILES: usize = 256;

/// `SubmitSweepRequest.model_files`: paths (bounded like every path) to checked hashes.
fn model_files_from(
    map: &std::collections::HashMap<String, pb::ModelFileRef>,
) -> Result<ModelFiles, Status> {
    if map.len() > MAX_MODEL_FILES {
        return Err(validate::invalid(format!(
            "field `model_files` has {} entries, more than {MAX_MODEL_FILES}",
            map.len()
        )));
    }
    let mut files = ModelFiles::new();
    for (path, file) in map {
        advsweep_core::wire::check_path(path, "model_files")
            .map_err(|e| validate::invalid(e.to_string()))?;
        let sha256 = validate::require_sha256("model_files.sha256", &file.sha256)?;
        files.insert(
            path.clone(),
            FileRef {
                sha256,
                bytes: file.bytes,
            },
        );
    }
    Ok(files)
}

/// Turns the request's override map into [`Overrides`]; unknown keys are errors, and a
/// `data.path` must be a plausible path (1-4096 bytes, no NUL or control characters).
pub fn overrides_from(
    map: &std::collections::HashMap<String, String>,
) -> Result<Overrides, String> {
    if map.len() > MAX_OVERRIDES {
        return Err(format!(
            "field `overrides` has {} entries, more than {MAX_OVERRIDES}",
            map.len()
        ));
    }
    let mut overrides = Overrides::default();
    for (key, value) in map {
        match key.as_str() {
            "data.path" => {
                advsweep_core::wire::check_path(value, "overrides[\"data.path\"]")
                    .map_err(|e| e.to_string())?;
                overrides.data_path = Some(value.clone());
            }
            other => {
                return Err(format!(
                    "unknown override {} (known: data.path)",
                    validate::shown(other)
                ));
            }
        }
    }
    Ok(overrides)
}

/// One line describing how `now` differs from `before`.
fn describe(before: Option<&SweepSummary>, now: &SweepSummary) -> String {
    let c = &now.cells;
    let mut msg = format!(
        "{}: {}/{} cells done, {} running, {} pending",
        now.state.as_str(),
        c.done,
        c.total(),
        c.running,
        c.pending
    );
    if c.failed > 0 {
        msg.push_str(&format!(", {} failed", c.failed));
    }
    if c.cancelled > 0 {
        msg.push_str(&format!(", {} cancelled", c.cancelled));
    }
    if let Some(b) = before {
        let newly = c.done.saturating_sub(b.cells.done);
        if newly > 0 {
            msg.push_str(&format!(" (+{newly})"));
        }
    }
    msg
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SweepEvent, Status>> + Send>>;

#[tonic::async_trait]
impl SweepService for SweepApi {
    async fn submit_sweep(
        &self,
        request: Request<pb::SubmitSweepRequest>,
    ) -> Result<Response<pb::SubmitSweepResponse>, Status> {
        let r = request.into_inner();
        if r.sweep_toml.len() > MAX_SWEEP_FILE_BYTES {
            return Err(validate::invalid(format!(
                "field `sweep_toml` is {} bytes; the limit is {MAX_SWEEP_FILE_BYTES}",
                r.sweep_toml.len()
            )));
        }
        let mut overrides = overrides_from(&r.overrides).map_err(validate::invalid)?;
        overrides.model_files = model_files_from(&r.model_files)?;
        // Every file the sweep names must be here before a worker is sent to fetch it.
        let artifacts = self.scheduler.artifacts();
        for (path, file) in &overrides.model_files {
            if !super::model_files::stored(&artifacts, &file.sha256, file.bytes).await {
                return Err(Status::failed_precondition(format!(
                    "model file `{}` ({}, {} bytes) was not uploaded: upload it with \
                     UploadModelFile before SubmitSweep (`advsweep submit` does)",
                    validate::shown(path),
                    file.sha256,
                    file.bytes
                )));
            }
        }
        // Parsing and expanding a (bounded) file is CPU work: off the async threads.
        let limits = self.limits.clone();
        let toml = r.sweep_toml;
        let (plan, toml) = tokio::task::spawn_blocking(move || {
            let file = sweep::parse_sweep(&toml, "sweep file")?;
            let plan = sweep::expand_within(&file, &overrides, "sweep file", &limits)?;
            Ok::<_, sweep::SweepError>((plan, toml))
        })
        .await
        .map_err(|e| Status::internal(format!("sweep expansion panicked: {e}")))?
        .map_err(|e| validate::invalid(e.to_string()))?;
        let outcome = self.scheduler.submit(plan, toml).await.map_err(status_of)?;
        info!(
            sweep_id = outcome.sweep_id.as_str(),
            name = outcome.name,
            runs = outcome.runs,
            cells = outcome.cells,
            already_done = outcome.cells_already_done,
            new = outcome.new_sweep,
            "sweep submitted"
        );
        self.changes.notify();
        Ok(Response::new(pb::SubmitSweepResponse {
            sweep_id: outcome.sweep_id.into_string(),
            name: outcome.name,
            runs: outcome.runs,
            cells: outcome.cells,
            cells_already_done: outcome.cells_already_done,
        }))
    }

    async fn upload_model_file(
        &self,
        request: Request<tonic::Streaming<pb::ModelFileChunk>>,
    ) -> Result<Response<pb::ModelFileAck>, Status> {
        let artifacts = self.scheduler.artifacts();
        let ack = super::model_files::receive(
            &artifacts,
            request.into_inner(),
            self.limits.max_model_file_bytes,
        )
        .await?;
        info!(
            sha256 = ack.sha256,
            bytes = ack.bytes,
            already_stored = ack.already_stored,
            "model file uploaded"
        );
        Ok(Response::new(ack))
    }

    async fn list_sweeps(
        &self,
        _request: Request<pb::ListSweepsRequest>,
    ) -> Result<Response<pb::ListSweepsResponse>, Status> {
        let sweeps = self.scheduler.list_sweeps().await.map_err(status_of)?;
        Ok(Response::new(pb::ListSweepsResponse {
            sweeps: sweeps.iter().map(convert::summary).collect(),
        }))
    }

    async fn get_sweep(
        &self,
        request: Request<pb::GetSweepRequest>,
    ) -> Result<Response<pb::SweepDetail>, Status> {
        let id = validate::sweep_id("sweep_id", &request.into_inner().sweep_id)?;
        let detail = self.scheduler.sweep_detail(&id).await.map_err(status_of)?;
        Ok(Response::new(convert::detail(&detail)))
    }

    type WatchSweepStream = EventStream;

    async fn watch_sweep(
        &self,
        request: Request<pb::WatchSweepRequest>,
    ) -> Result<Response<Self::WatchSweepStream>, Status> {
        let id = validate::sweep_id("sweep_id", &request.into_inner().sweep_id)?;
        // Fail fast on an unknown sweep instead of opening an empty stream.
        let first = self.scheduler.sweep_summary(&id).await.map_err(status_of)?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let scheduler = Arc::clone(&self.scheduler);
        let mut changed = self.changes.subscribe();
        tokio::spawn(async move {
            let mut last: Option<SweepSummary> = None;
            let mut current = first;
            let mut running = Vec::new();
            let mut refreshed = tokio::time::Instant::now();
            loop {
                if last.as_ref() != Some(&current) || !running.is_empty() {
                    let finished = current.state.is_terminal();
                    let event = pb::SweepEvent {
                        summary: Some(convert::summary(&current)),
                        message: describe(last.as_ref(), &current),
                        finished,
                        running: running.iter().map(convert::run).collect(),
                    };
                    if tx.send(Ok(event)).await.is_err() || finished {
                        return;
                    }
                    last = Some(current.clone());
                }
                tokio::select! {
                    _ = changed.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = tx.closed() => return,
                }
                // Under load every RPC is a change: refresh at most every WATCH_MIN_INTERVAL
                // (the changes in between are coalesced into one event).
                let since = refreshed.elapsed();
                if since < WATCH_MIN_INTERVAL {
                    tokio::select! {
                        _ = tokio::time::sleep(WATCH_MIN_INTERVAL - since) => {}
                        _ = tx.closed() => return,
                    }
                }
                refreshed = tokio::time::Instant::now();
                match scheduler.sweep_progress(&id).await.map_err(status_of) {
                    Ok((s, r)) => {
                        current = s;
                        running = r;
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn retry_sweep(
        &self,
        request: Request<pb::RetrySweepRequest>,
    ) -> Result<Response<pb::RetrySweepResponse>, Status> {
        let r = request.into_inner();
        let sweep_id = validate::sweep_id("sweep_id", &r.sweep_id)?;
        require_count("cell_ids", r.cell_ids.len(), MAX_RETRY_CELL_IDS)?;
        let cell_ids = r
            .cell_ids
            .iter()
            .enumerate()
            .map(|(i, id)| validate::cell_id(&format!("cell_ids[{i}]"), id))
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .scheduler
            .retry(&sweep_id, &cell_ids, r.include_cancelled)
            .await
            .map_err(status_of)?;
        info!(
            sweep_id = r.sweep_id,
            cells = out.cells,
            runs = out.runs,
            "retry requested"
        );
        self.changes.notify();
        Ok(Response::new(pb::RetrySweepResponse {
            cells_requeued: out.cells,
            runs_requeued: out.runs,
        }))
    }

    async fn cancel_sweep(
        &self,
        request: Request<pb::CancelSweepRequest>,
    ) -> Result<Response<pb::CancelSweepResponse>, Status> {
        let id = validate::sweep_id("sweep_id", &request.into_inner().sweep_id)?;
        let out = self.scheduler.cancel(&id).await.map_err(status_of)?;
        info!(
            sweep_id = id.as_str(),
            cells_cancelled = out.cells,
            cells_shared = out.shared,
            "sweep cancelled"
        );
        self.changes.notify();
        Ok(Response::new(pb::CancelSweepResponse {
            cells_cancelled: out.cells,
            cells_shared: out.shared,
        }))
    }
}
