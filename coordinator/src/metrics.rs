//! Prometheus metrics: RPC counts and latencies (a tower layer on the gRPC server), results and
//! metric points ingested, and state gauges read from the store at scrape time. Served as text
//! on `GET /metrics` by the coordinator's HTTP side ([`crate::web`]: `--metrics-listen`, and the
//! dashboard's `--http-listen`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::store::{Gauges, StoreError};

/// The gRPC methods this coordinator serves, as `package.Service/Method` labels. Anything else
/// (a probe of random paths, before or after authentication) is counted as `other`: label
/// cardinality, and so memory, stays bounded whatever callers send.
const KNOWN_METHODS: [&str; 23] = [
    "advsweep.v1.WorkerService/Register",
    "advsweep.v1.WorkerService/Lease",
    "advsweep.v1.WorkerService/Heartbeat",
    "advsweep.v1.WorkerService/ReportMetrics",
    "advsweep.v1.WorkerService/CompleteCell",
    "advsweep.v1.WorkerService/CompleteCells",
    "advsweep.v1.WorkerService/ReportCellChunk",
    "advsweep.v1.WorkerService/CompleteRun",
    "advsweep.v1.WorkerService/FailRun",
    "advsweep.v1.WorkerService/ReleaseRun",
    "advsweep.v1.WorkerService/UploadCheckpoint",
    "advsweep.v1.WorkerService/DownloadCheckpoint",
    "advsweep.v1.WorkerService/DownloadModelFile",
    "advsweep.v1.SweepService/SubmitSweep",
    "advsweep.v1.SweepService/ListSweeps",
    "advsweep.v1.SweepService/GetSweep",
    "advsweep.v1.SweepService/WatchSweep",
    "advsweep.v1.SweepService/CancelSweep",
    "advsweep.v1.SweepService/RetrySweep",
    "advsweep.v1.SweepService/UploadModelFile",
    "grpc.health.v1.Health/Check",
    "grpc.health.v1.Health/Watch",
    "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
];

/// `/advsweep.v1.WorkerService/Lease` → `advsweep.v1.WorkerService/Lease`; unknown → `other`.
fn method_label(path: &str) -> &'static str {
    let path = path.strip_prefix('/').unwrap_or(path);
    KNOWN_METHODS
        .iter()
        .find(|known| **known == path)
        .copied()
        .unwrap_or("other")
}

/// Latency histogram bounds, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default, Clone)]
struct RpcStats {
    count: u64,
    errors: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

/// Counters shared by the services and the exporter.
#[derive(Debug, Default)]
pub struct Metrics {
    rpcs: Mutex<BTreeMap<String, RpcStats>>,
    pub metric_points: AtomicU64,
    pub cell_results: AtomicU64,
    /// Reports refused because their lease is no longer held (fencing at work).
    pub stale_reports: AtomicU64,
    /// Calls refused because they quoted another worker's lease (or another certificate).
    pub foreign_lease_refusals: AtomicU64,
    /// Checkpoint bytes read from disk by downloads as they stream (not the verification pass).
    pub checkpoint_bytes_streamed: AtomicU64,
    /// Downloads refused because `max_checkpoint_downloads` were in flight.
    pub checkpoint_downloads_refused: AtomicU64,
    /// Failed `accept` calls (out of file descriptors, …), each followed by a back-off.
    pub accept_errors: AtomicU64,
    /// Connections closed because they sent nothing within `first_bytes_timeout_s`.
    pub connections_silent: AtomicU64,
    /// Silent connections closed to make room for a new one (`max_connections` reached).
    pub connections_evicted: AtomicU64,
    /// New connections closed because `max_connections` had all spoken.
    pub connections_refused: AtomicU64,
    /// Connections closed after going twice the keepalive interval (plus
    /// `first_bytes_timeout_s`) without a byte read (a stalled handshake).
    pub connections_idle_closed: AtomicU64,
}

impl Metrics {
    pub fn observe(&self, method: &str, elapsed: Duration, ok: bool) {
        let mut rpcs = self.rpcs.lock().unwrap_or_else(|e| e.into_inner());
        let s = rpcs.entry(method.to_owned()).or_default();
        let secs = elapsed.as_secs_f64();
        s.count += 1;
        s.sum += secs;
        if !ok {
            s.errors += 1;
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                s.buckets[i] += 1;
            }
        }
    }

    /// The Prometheus text exposition of everything, with the store's `gauges` read at scrape
    /// time.
    pub fn render(&self, gauges: Result<Gauges, StoreError>) -> String {
        let mut out = String::new();
        match gauges {
            Ok(g) => {
                let _ = writeln!(out, "# HELP advsweep_cells Cells by state (all sweeps).");
                let _ = writeln!(out, "# TYPE advsweep_cells gauge");
                for (state, n) in &g.cells {
                    let _ = writeln!(out, "advsweep_cells{{state=\"{state}\"}} {n}");
                }
                let _ = writeln!(out, "# HELP advsweep_runs Runs by state (all sweeps).");
                let _ = writeln!(out, "# TYPE advsweep_runs gauge");
                for (state, n) in &g.runs {
                    let _ = writeln!(out, "advsweep_runs{{state=\"{state}\"}} {n}");
                }
                let _ = writeln!(
                    out,
                    "# HELP advsweep_leases_active Runs currently leased to a worker."
                );
                let _ = writeln!(out, "# TYPE advsweep_leases_active gauge");
                let _ = writeln!(out, "advsweep_leases_active {}", g.leases);
                let _ = writeln!(
                    out,
                    "# HELP advsweep_workers_alive Workers heard from within three heartbeat intervals."
                );
                let _ = writeln!(out, "# TYPE advsweep_workers_alive gauge");
                let _ = writeln!(out, "advsweep_workers_alive {}", g.workers_alive);
                let _ = writeln!(
                    out,
                    "# HELP advsweep_workers_registered Workers ever registered."
                );
                let _ = writeln!(out, "# TYPE advsweep_workers_registered gauge");
                let _ = writeln!(out, "advsweep_workers_registered {}", g.workers);
            }
            Err(e) => {
                let _ = writeln!(out, "# store unavailable: {e}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP advsweep_metric_points_ingested_total Epoch metric records stored."
        );
        let _ = writeln!(out, "# TYPE advsweep_metric_points_ingested_total counter");
        let _ = writeln!(
            out,
            "advsweep_metric_points_ingested_total {}",
            self.metric_points.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP advsweep_cell_results_total Cell results stored."
        );
        let _ = writeln!(out, "# TYPE advsweep_cell_results_total counter");
        let _ = writeln!(
            out,
            "advsweep_cell_results_total {}",
            self.cell_results.load(Ordering::Relaxed)
        );
        for (name, help, value) in [
            (
                "advsweep_stale_reports_total",
                "Worker reports refused as LEASE_LOST (a lease expired, re-granted or cancelled).",
                &self.stale_reports,
            ),
            (
                "advsweep_foreign_lease_refusals_total",
                "Calls refused as NOT_LEASE_HOLDER (another worker's lease or certificate).",
                &self.foreign_lease_refusals,
            ),
            (
                "advsweep_checkpoint_bytes_streamed_total",
                "Checkpoint bytes read from disk and sent by downloads.",
                &self.checkpoint_bytes_streamed,
            ),
            (
                "advsweep_checkpoint_downloads_refused_total",
                "Checkpoint downloads refused as RESOURCE_EXHAUSTED (max_checkpoint_downloads in flight).",
                &self.checkpoint_downloads_refused,
            ),
            (
                "advsweep_accept_errors_total",
                "Failed accepts (e.g. out of file descriptors), each followed by a back-off.",
                &self.accept_errors,
            ),
            (
                "advsweep_connections_silent_total",
                "Connections closed for sending nothing within first_bytes_timeout_s.",
                &self.connections_silent,
            ),
            (
                "advsweep_connections_evicted_total",
                "Silent connections closed to make room for a new one (max_connections).",
                &self.connections_evicted,
            ),
            (
                "advsweep_connections_refused_total",
                "New connections closed because max_connections had all spoken.",
                &self.connections_refused,
            ),
            (
                "advsweep_connections_idle_closed_total",
                "Connections closed for reading nothing for 2 x keepalive_interval_s + first_bytes_timeout_s.",
                &self.connections_idle_closed,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let rpcs = self.rpcs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let _ = writeln!(
            out,
            "# HELP advsweep_rpc_errors_total RPCs answered with a non-OK status."
        );
        let _ = writeln!(out, "# TYPE advsweep_rpc_errors_total counter");
        for (m, s) in &rpcs {
            let _ = writeln!(
                out,
                "advsweep_rpc_errors_total{{method=\"{m}\"}} {}",
                s.errors
            );
        }
        let _ = writeln!(
            out,
            "# HELP advsweep_rpc_duration_seconds RPC latency as seen by the server."
        );
        let _ = writeln!(out, "# TYPE advsweep_rpc_duration_seconds histogram");
        for (m, s) in &rpcs {
            for (b, n) in BUCKETS.iter().zip(s.buckets) {
                let _ = writeln!(
                    out,
                    "advsweep_rpc_duration_seconds_bucket{{method=\"{m}\",le=\"{b}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "advsweep_rpc_duration_seconds_bucket{{method=\"{m}\",le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "advsweep_rpc_duration_seconds_sum{{method=\"{m}\"}} {}",
                s.sum
            );
            let _ = writeln!(
                out,
                "advsweep_rpc_duration_seconds_count{{method=\"{m}\"}} {}",
                s.count
            );
        }
        out
    }
}

/// A tower layer that times every gRPC call by its path (`/advsweep.v1.WorkerService/Lease`).
#[derive(Debug, Clone)]
pub struct MetricsLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: Arc::clone(&self.0),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let metrics = Arc::clone(&self.metrics);
        let start = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            // Errors are "trailers-only" responses: grpc-status in the headers.
            let ok = match &response {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .is_none_or(|v| v.as_bytes() == b"0"),
                Err(_) => false,
            };
            metrics.observe(method, start.elapsed(), ok);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_served_methods_or_other() {
        assert_eq!(
            method_label("/advsweep.v1.WorkerService/Lease"),
            "advsweep.v1.WorkerService/Lease"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        for junk in [
            "/",
            "",
            "/x/y/z",
            "/advsweep.v1.WorkerService/Nope",
            "/a/Lease",
        ] {
            assert_eq!(method_label(junk), "other", "{junk}");
        }
    }

    #[test]
    fn every_rpc_of_the_contract_has_a_label() {
        let proto = include_str!("../../proto/proto/advsweep/v1/advsweep.proto");
        let mut service = "";
        let mut served = 0;
        for line in proto.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.split_whitespace().next().unwrap_or("");
            } else if let Some(rest) = line.strip_prefix("rpc ") {
                let method = rest.split('(').next().unwrap_or("").trim();
                let label = format!("advsweep.v1.{service}/{method}");
                assert!(
                    KNOWN_METHODS.contains(&label.as_str()),
                    "{label} has no label"
                );
                served += 1;
            }
        }
        assert_eq!(
            served + 3,
            KNOWN_METHODS.len(),
            "a label for a method that is gone"
        );
    }
}
