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
//! non-zero, so one bad node cannot burn through a sweep's retries; a run that fails for a
//! reason of its own (missing data, a bad parameter: not retryable anywhere) is the sweep's
//! mistake and does not count ([`RunOutcome::streak`]).
//!
//! Layout: this file is the lease loop (register, lease, back off, run slots); `lease.rs`
//! executes and reports one lease; `retry.rs` is the retry policy every call goes through;
//! `transfer.rs` moves checkpoint bytes.

mod lease;
mod retry;
mod transfer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use advsweep_proto::v1 as pb;
use advsweep_proto::v1::worker_service_client::WorkerServiceClient;
use advsweep_settings::ConnectionSettings;
use advsweep_settings::connection::{status_chain, tls_mismatch_hint};
use anyhow::Context as _;
use tokio::sync::watch;
use tracing::{Instrument as _, debug, error, info, info_span, warn};

use crate::job::Executor;
pub use lease::RunOutcome;
use lease::{Session, execute_lease};
use retry::{Client, RPC_FIRST_BACKOFF, is_transient, must_register};

/// How long to keep trying to reach a coordinator that is not up yet.
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);
/// Deadline of one call on the channel.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// Bounds of the wait before asking again when the coordinator has no work.
const IDLE_POLL_MIN: Duration = Duration::from_millis(50);
const IDLE_POLL_MAX: Duration = Duration::from_secs(2);
/// Longest wait between two lease attempts while the coordinator is unreachable.
const UNREACHABLE_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Heartbeat interval when the coordinator names none.
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
                        let outcome =
                            execute_lease(&client, &executor, &session, lease, shutdown.clone())
                                .await;
                        failures_in_a_row = outcome.streak(failures_in_a_row);
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
            Err(status) if must_register(&status) => {
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
                    error = %status_chain(&status),
                    hint = tls_mismatch_hint(&status_chain(&status)),
                    retry_in_ms = delay.as_millis() as u64,
                    "coordinator not reachable yet"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(4));
            }
            Err(status) => {
                let error = match tls_mismatch_hint(&status_chain(&status)) {
                    Some(hint) => anyhow::anyhow!("{} ({hint})", status_chain(&status)),
                    None => anyhow::anyhow!(status),
                };
                return Err(error).with_context(|| {
                    format!(
                        "registering with the coordinator at {}",
                        cfg.connection.coordinator
                    )
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_node_like_failures_count_toward_the_breaker() {
        let after = |outcomes: &[RunOutcome]| outcomes.iter().fold(0, |n, o| o.streak(n));
        use RunOutcome::*;
        assert_eq!(after(&[Failed, Failed]), 2);
        assert_eq!(
            after(&[Failed, BadRun, BadRun, Failed]),
            2,
            "a bad sweep is not the node"
        );
        assert_eq!(after(&[BadRun; 10]), 0);
        assert_eq!(after(&[Failed, Lost, Released, Failed]), 2);
        assert_eq!(after(&[Failed, Completed, Failed]), 1);
    }

    use super::*;

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
