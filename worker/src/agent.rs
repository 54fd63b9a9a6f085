//! The worker's conversation with the coordinator (gRPC `WorkerService`).
//!
//! Register once, then loop: lease a run, execute it, report, repeat. While a run executes:
//! * the libtorch work runs on a blocking thread ([`tokio::task::spawn_blocking`]) so the async
//!   runtime stays free for RPCs;
//! * a heartbeat task renews the lease every `heartbeat_interval_ms`; when the coordinator says
//!   `keep_going = false` (or rejects the lease as gone) the shared cancel flag is set, the job
//!   stops at the next batch boundary, and the run is abandoned without a `FailRun` — the
//!   coordinator already moved on;
//! * progress events from the job become `ReportMetrics` and `CompleteCells` calls, in order,
//!   followed by `CompleteRun` — or `FailRun` with the full error chain and whether a retry could
//!   help. The job does not wait for its reports: what queued while a call was in flight goes in
//!   the next one ([`crate::report_batch`]), so fast cells share a round trip and a commit.
//!
//! Transient transport errors are retried a few times with exponential backoff; everything
//! that fails is logged with the RPC name and status. A shutdown signal (SIGTERM, SIGINT)
//! stops the current run at the next batch and hands it back with `ReleaseRun` ("preempted"):
//! the coordinator re-queues it immediately, without counting the attempt as a failure. After
//! `max_consecutive_failures` failed runs in a row the worker stops taking work and exits
//! non-zero, so one bad node cannot burn through a sweep's retries.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use advsweep_proto::v1 as pb;
use advsweep_proto::v1::worker_service_client::WorkerServiceClient;
use advsweep_settings::{AuthChannel, ConnectionSettings};
use advsweep_core::wire::{cell_result_to_wire, epoch_to_wire, run_from_wire};
use anyhow::Context as _;
use tokio::sync::{mpsc, watch};
use tonic::{Code, Status};
use tracing::{Instrument as _, Span, debug, error, info, info_span, warn};

use crate::error::{is_cancelled, is_retryable};
use crate::job::{Executor, Progress};
use crate::report_batch::{MAX_CELLS_PER_CALL, Report, coalesce};

type Client = WorkerServiceClient<AuthChannel>;

/// An RPC future that owns its client clone and request copy (tonic's generated methods
/// borrow the client mutably), for use in retry closures.
macro_rules! rpc {
    ($client:expr, $method:ident, $request:expr) => {{
        let mut client = $client.clone();
        let request = $request.clone();
        async move { client.$method(request).await }
    }};
}

/// How long to keep trying to reach a coordinator that is not up yet.
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);
/// Attempts for one RPC when the transport fails.
/// How long a report keeps being retried through transport failures: long enough to ride out a
/// coordinator restart (its state is durable), after which the lease may have expired anyway.
const RPC_RETRY_WINDOW: Duration = Duration::from_secs(60);
const RPC_FIRST_BACKOFF: Duration = Duration::from_millis(200);
const RPC_MAX_BACKOFF: Duration = Duration::from_secs(2);
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
const IDLE_POLL_MIN: Duration = Duration::from_millis(50);
const IDLE_POLL_MAX: Duration = Duration::from_secs(2);
const UNREACHABLE_BACKOFF_MAX: Duration = Duration::from_secs(5);
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// Largest message accepted from the coordinator (a lease with all of a big run's cells).
const MAX_LEASE_BYTES: usize = 64 << 20;

/// How this worker presents itself and behaves.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where the coordinator is, TLS, the worker token.
    pub connection: ConnectionSettings,
    pub name: String,
    pub hostname: String,
    /// "cpu", "cuda:0", …
    pub device_label: String,
    pub exit_when_idle: bool,
    /// Take only runs this sweep needs ("idle" then means: this sweep has no work left).
    pub sweep_id: Option<String>,
    /// After this many failed runs in a row, the worker stops taking work: a bad node should
    /// not burn through a sweep's retries.
    pub max_consecutive_failures: u32,
}

/// What `Register` gave us.
#[derive(Debug, Clone)]
struct Session {
    worker_id: String,
    heartbeat_interval: Duration,
}

/// Runs the worker until the coordinator reports idle (with `exit_when_idle`), a shutdown is
/// requested, or registration fails for good.
pub async fn run(
    cfg: AgentConfig,
    executor: Arc<Executor>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let endpoint = cfg
        .connection
        .endpoint()
        .map_err(|e| anyhow::anyhow!(e))?
        .timeout(RPC_TIMEOUT);
    let bearer = cfg.connection.bearer().map_err(|e| anyhow::anyhow!(e))?;
    // Lazy: the channel (re)connects on demand, so a coordinator that starts later or restarts
    // is picked up without rebuilding anything.
    // A lease carries every pending cell of its run: tonic's default 4 MiB limit would refuse
    // the lease of a run with some 60k cells, again on every retry.
    let client = WorkerServiceClient::with_interceptor(endpoint.connect_lazy(), bearer)
        .max_decoding_message_size(MAX_LEASE_BYTES);

    let mut session = tokio::select! {
        s = register(&client, &cfg) => s?,
        _ = shutdown.changed() => return Ok(()),
    };
    let mut unreachable_since: Option<Instant> = None;
    let mut backoff = RPC_FIRST_BACKOFF;
    let mut failures_in_a_row = 0u32;
    loop {
        if *shutdown.borrow() {
            info!("shutdown requested; exiting");
            return Ok(());
        }
        let request = pb::LeaseRequest {
            worker_id: session.worker_id.clone(),
            sweep_id: cfg.sweep_id.clone().unwrap_or_default(),
        };
        let mut lease_client = client.clone();
        let response = tokio::select! {
            r = lease_client.lease(request) => r,
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return Ok(()); // the shutdown sender is gone: nobody can stop us later
                }
                continue;
            }
        };
        match response {
            Ok(response) => {
                unreachable_since = None;
                backoff = RPC_FIRST_BACKOFF;
                let response = response.into_inner();
                match response.lease {
                    Some(lease) => {
                        match execute_lease(&client, &executor, &session, lease, shutdown.clone())
                            .await
                        {
                            RunOutcome::Failed => failures_in_a_row += 1,
                            RunOutcome::Completed => failures_in_a_row = 0,
                            RunOutcome::Released | RunOutcome::Lost => {}
                        }
                        if failures_in_a_row >= cfg.max_consecutive_failures.max(1) {
                            anyhow::bail!(
                                "{failures_in_a_row} runs failed in a row on this worker; it stops taking \
                                 work so that a bad node does not use up the sweep's retries (check the \
                                 device and the logs above, then restart the worker)"
                            );
                        }
                    }
                    None if response.idle && cfg.exit_when_idle => {
                        info!("coordinator has no work left; exiting (--exit-when-idle)");
                        return Ok(());
                    }
                    None => {
                        let wait = Duration::from_millis(response.retry_after_ms)
                            .clamp(IDLE_POLL_MIN, IDLE_POLL_MAX);
                        debug!(
                            idle = response.idle,
                            wait_ms = wait.as_millis() as u64,
                            "no work"
                        );
                        sleep_or_shutdown(wait, &mut shutdown).await;
                    }
                }
            }
            Err(status)
                if matches!(
                    status.code(),
                    Code::NotFound | Code::Unauthenticated | Code::FailedPrecondition
                ) =>
            {
                // The coordinator does not know us (it restarted with fresh state): register
                // again.
                warn!(code = ?status.code(), message = status.message(), "lease refused; registering again");
                session = tokio::select! {
                    s = register(&client, &cfg) => s?,
                    _ = shutdown.changed() => return Ok(()),
                };
            }
            Err(status) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                warn!(
                    code = ?status.code(),
                    message = status.message(),
                    retry_in_ms = backoff.as_millis() as u64,
                    "Lease failed"
                );
                if cfg.exit_when_idle && since.elapsed() > CONNECT_PATIENCE {
                    anyhow::bail!(
                        "coordinator {} unreachable for {:?}: {status}",
                        cfg.connection.coordinator,
                        since.elapsed()
                    );
                }
                sleep_or_shutdown(backoff, &mut shutdown).await;
                backoff = (backoff * 2).min(UNREACHABLE_BACKOFF_MAX);
            }
        }
    }
}

/// Runs one agent per slot, each with its own registration and lease, sharing the device:
/// several small runs keep a big GPU busy. The first slot to fail for good stops the others
/// (their runs are handed back as preempted) and its error is returned.
pub async fn run_slots(
    slots: Vec<(AgentConfig, Arc<Executor>)>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let forward = Arc::clone(&stop_tx);
    let forwarder = tokio::spawn(async move {
        while shutdown.changed().await.is_ok() {
            if *shutdown.borrow() {
                let _ = forward.send(true);
                return;
            }
        }
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (cfg, executor) in slots {
        let span = info_span!("slot", worker = %cfg.name);
        tasks.spawn(run(cfg, executor, stop_rx.clone()).instrument(span));
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.unwrap_or_else(|e| Err(anyhow::anyhow!("a slot's task failed: {e}")));
        if let Err(e) = result {
            error!(error = %format!("{e:#}"), "slot stopped; stopping the other slots");
            let _ = stop_tx.send(true);
            first_error.get_or_insert(e);
        }
    }
    forwarder.abort();
    first_error.map_or(Ok(()), Err)
}

async fn sleep_or_shutdown(duration: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = shutdown.changed() => {}
    }
}

/// Registers, retrying for [`CONNECT_PATIENCE`] while the coordinator is unreachable.
async fn register(client: &Client, cfg: &AgentConfig) -> anyhow::Result<Session> {
    let request = pb::RegisterRequest {
        name: cfg.name.clone(),
        hostname: cfg.hostname.clone(),
        device: cfg.device_label.clone(),
        slots: 1,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let started = Instant::now();
    let mut delay = RPC_FIRST_BACKOFF;
    loop {
        match client.clone().register(request.clone()).await {
            Ok(response) => {
                let r = response.into_inner();
                let heartbeat_interval = match r.heartbeat_interval_ms {
                    0 => DEFAULT_HEARTBEAT,
                    ms => Duration::from_millis(ms)
                        .clamp(Duration::from_millis(100), Duration::from_secs(60)),
                };
                info!(
                    worker_id = %r.worker_id,
                    coordinator = %cfg.connection.coordinator,
                    heartbeat_ms = heartbeat_interval.as_millis() as u64,
                    lease_ttl_ms = r.lease_ttl_ms,
                    device = %cfg.device_label,
                    "registered"
                );
                return Ok(Session {
                    worker_id: r.worker_id,
                    heartbeat_interval,
                });
            }
            Err(status) if is_transient(&status) && started.elapsed() < CONNECT_PATIENCE => {
                warn!(
                    coordinator = %cfg.connection.coordinator,
                    code = ?status.code(),
                    message = status.message(),
                    retry_in_ms = delay.as_millis() as u64,
                    "coordinator not reachable yet"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(4));
            }
            Err(status) => {
                return Err(anyhow::anyhow!(status)).with_context(|| {
                    format!(
                        "registering with the coordinator at {}",
                        cfg.connection.coordinator
                    )
                });
            }
        }
    }
}

/// Transport-level failures worth another try.
fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
    )
}

/// The coordinator no longer considers this lease ours.
fn lease_gone(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::FailedPrecondition | Code::NotFound | Code::Unauthenticated
    )
}

/// Calls an RPC, retrying transient failures with exponential backoff (capped) for up to
/// [`RPC_RETRY_WINDOW`]. Reports are idempotent on the coordinator, so a retry after a lost
/// response cannot duplicate anything.
async fn call<T, F, Fut>(rpc: &'static str, mut f: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let mut delay = RPC_FIRST_BACKOFF;
    let mut attempt = 1;
    let started = Instant::now();
    loop {
        match f().await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) if is_transient(&status) && started.elapsed() < RPC_RETRY_WINDOW => {
                warn!(
                    rpc,
                    attempt,
                    code = ?status.code(),
                    message = status.message(),
                    "RPC failed; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RPC_MAX_BACKOFF);
                attempt += 1;
            }
            Err(status) => return Err(status),
        }
    }
}

/// Shared state of one executing lease.
struct LeaseState {
    client: Client,
    lease: pb::LeaseRef,
    /// Tells the job to stop at the next batch.
    cancel: Arc<AtomicBool>,
    /// The coordinator took the lease away: send nothing more about it.
    lost: AtomicBool,
}

impl LeaseState {
    fn mark_lost(&self, why: &str) {
        if !self.lost.swap(true, Ordering::SeqCst) {
            warn!(why, "lease lost; abandoning the run");
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
                    self.mark_lost("the coordinator answered keep_going = false");
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

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Streams a checkpoint to the coordinator in 1 MiB chunks with its SHA-256.
async fn upload_checkpoint(
    client: &Client,
    lease: &pb::LeaseRef,
    epoch: u32,
    bytes: Vec<u8>,
) -> Result<pb::CheckpointAck, Status> {
    let sha256 = sha256_hex(&bytes);
    let chunks: Vec<pb::CheckpointChunk> = bytes
        .chunks(1 << 20)
        .enumerate()
        .map(|(i, data)| pb::CheckpointChunk {
            lease: (i == 0).then(|| lease.clone()),
            epoch: if i == 0 { epoch } else { 0 },
            sha256: if i == 0 {
                sha256.clone()
            } else {
                String::new()
            },
            data: data.to_vec(),
        })
        .collect();
    let mut client = client.clone();
    client
        .upload_checkpoint(tokio_stream::iter(chunks))
        .await
        .map(|r| r.into_inner())
}

/// Fetches a checkpoint and verifies its SHA-256 before anything loads it.
async fn download_checkpoint(
    client: &Client,
    lease: &pb::LeaseRef,
    checkpoint: &pb::CheckpointRef,
) -> Result<Vec<u8>, Status> {
    let mut client = client.clone();
    let mut stream = client
        .download_checkpoint(pb::DownloadCheckpointRequest {
            worker_id: lease.worker_id.clone(),
            run_id: lease.run_id.clone(),
            checkpoint_id: checkpoint.checkpoint_id.clone(),
        })
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        bytes.extend_from_slice(&chunk.data);
    }
    let actual = sha256_hex(&bytes);
    if actual != checkpoint.sha256 {
        return Err(Status::data_loss(format!(
            "checkpoint {} arrived corrupted (SHA-256 {actual}, expected {})",
            checkpoint.checkpoint_id, checkpoint.sha256
        )));
    }
    Ok(bytes)
}

/// Executes one lease end to end; never fails (every outcome is reported or logged).
async fn execute_lease(
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
        return RunOutcome::Failed;
    };
    let (run, cells) = match run_from_wire(&wire_run) {
        Ok(decoded) => decoded,
        Err(e) => {
            error!(error = %e, "cannot decode the leased run");
            state.fail(format!("invalid run spec: {e}"), false).await;
            return RunOutcome::Failed;
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
            Err(status) => {
                warn!(code = ?status.code(), message = status.message(), "cannot fetch the run's checkpoint; training from scratch");
                None
            }
        },
    };
    let (tx, mut rx) = mpsc::channel::<Progress>(64);
    let cancel = state.cancel.clone();
    let span = Span::current();
    let job = tokio::task::spawn_blocking(move || {
        span.in_scope(|| {
            executor.run_catching_from(&run, &cells, resume.as_deref(), &cancel, &mut |progress| {
                tx.blocking_send(progress)
                    .map_err(|_| anyhow::anyhow!("the progress channel closed"))
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
            RunOutcome::Failed
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
    Failed,
    /// Handed back (shutdown): not this node's fault.
    Released,
    /// The lease expired or the sweep was cancelled under us.
    Lost,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_and_gone_codes() {
        assert!(is_transient(&Status::unavailable("down")));
        assert!(!is_transient(&Status::invalid_argument("bad")));
        assert!(lease_gone(&Status::failed_precondition("expired")));
        assert!(lease_gone(&Status::not_found("no such lease")));
        assert!(!lease_gone(&Status::unavailable("down")));
    }

    #[tokio::test]
    async fn registration_gives_up_on_an_invalid_url() {
        let cfg = AgentConfig {
            connection: ConnectionSettings {
                coordinator: "not a url".into(),
                ..ConnectionSettings::default()
            },
            name: "t".into(),
            hostname: "h".into(),
            device_label: "cpu".into(),
            exit_when_idle: true,
            sweep_id: None,
            max_consecutive_failures: 3,
        };
        let (_tx, rx) = watch::channel(false);
        let executor = Arc::new(Executor::new(tch::Device::Cpu, 1));
        let err = run(cfg, executor, rx).await.err().map(|e| format!("{e:#}"));
        assert!(err.unwrap_or_default().contains("invalid coordinator URL"));
    }
}
