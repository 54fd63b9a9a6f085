//! Coordinator load benchmark (issue 6): the real `advsweep coordinator` process on a loopback
//! port and a fresh state directory, a real sweep file submitted through `SweepService`, and W
//! simulated workers that are real tonic gRPC clients doing no-op cells.
//!
//! ```sh
//! cargo bench -p advsweep-cli --bench load -- [--quick] [--repeats N]
//!     [--scenarios 2x1000,2x10000,2x100000,1000x100000] [--sweep-dir DIR]
//!     [--reporting batched|per-event] [--compute-ms MS] [--dashboard-clients N]
//! ```
//! (or `bench/coordinator.sh`, which also runs the Optuna comparison, and
//! `bench/dashboard-load.sh`, which compares runs without and with dashboard pages open). Prints
//! one JSON object on stdout; progress goes to stderr.
//!
//! Each simulated worker behaves like `advsweep-worker` (worker/src/agent.rs) minus the compute:
//! `Register` once, then sequentially `Lease`; for a granted run its epoch points and cell
//! results, `CompleteRun`. How the results go depends on `--reporting`: `batched` (the default)
//! is what the real worker sends when its job finishes faster than a round trip, as a no-op job
//! does — everything queued goes in one call, i.e. one `ReportMetrics` with the run's epochs and
//! one `CompleteCells` with its cells (worker/src/report_batch.rs); `per-event` is the real
//! worker's pattern when every epoch and cell takes longer than a round trip — one
//! `ReportMetrics` per epoch, one `CompleteCell` per cell, each awaited. When no
//! run is ready it sleeps `retry_after_ms` clamped to [50 ms, 2 s], and it exits when the
//! coordinator says idle (`--exit-when-idle`). Transient RPC errors are retried as the worker
//! does. No RPC of one worker overlaps another of the same worker (no pipelining). Every worker
//! has its own `Channel`, i.e. its own HTTP/2 connection, as separate machines would. Not
//! simulated: heartbeats (no run lasts a heartbeat interval) and checkpoint uploads (data-plane
//! bytes proportional to the model, not bookkeeping).
//!
//! `--compute-ms MS` (default 0) makes each worker hold every leased run for MS milliseconds on
//! average before reporting it — the training and attacks a real worker spends on it — so that
//! W workers offer about W × 10 cells per MS ms: the coordinator serving a sweep at a chosen
//! rate instead of as fast as a closed loop of no-op workers can drive it (with 1,000 such
//! workers about 1,000 calls are always waiting, and by Little's law each waits 1,000 / (calls
//! per second), however fast the handler). Each run's time is drawn uniformly from
//! [0.5, 1.5] × MS (a fixed generator per worker), as real runs differ in length; equal times
//! would keep the workers in lockstep, all reporting in the same millisecond every MS ms.
//!
//! `--dashboard-clients N` starts the coordinator with its dashboard (`--http-listen` on a free
//! loopback port) and, with N > 0, opens N simulated sweep pages on it (dashboard.rs): each
//! loads the page's JSON, holds the sweep's event stream open, and on every event re-reads the
//! report, the runs and `table.md`, at most once per 2 s, as the page's script does. The pages
//! open one after the other over those 2 s once the sweep is submitted, and the workers start
//! when every page has loaded, received its first events and made the refresh they call for,
//! so the pages' next refreshes fall evenly over the throttle period, as those of pages open
//! for a while do (not all 50 on the workers' first report). They run on a runtime of their
//! own (threads `bench-dashboard`), whose CPU is reported apart. A repeat fails (panics, after
//! printing what the pages saw) if any page saw an error or no `done` event, or its last
//! summary did not show every cell done. `--dashboard-clients 0` serves the dashboard with no
//! page open: the baseline it is compared with. `--dashboard-events-only` makes the N clients
//! hold the event stream alone (no page load, no refreshes): the issue's "50 event-stream
//! clients", and what tells the stream's cost from the fetches'. `--dashboard-niced` runs the
//! pages' threads at the lowest priority (`SCHED_IDLE`, else nice 19), so that on a machine with few cores the stand-ins for browsers
//! (which run elsewhere) do not take the cores from the coordinator they measure.
//!
//! Measured per repeat: cells/s from the first `Lease` sent to the last `CompleteRun`
//! acknowledged; latency of granted `Lease` calls (p50, p99) and of `CompleteCell`; epoch
//! points acknowledged per second; the coordinator's peak RSS (`VmHWM` of its process); and
//! duplicated cells, counted three ways: cells acknowledged under two different leases (client
//! side), results stored more often than there are done cells (the coordinator's
//! `advsweep_cell_results_total` counter against `state.sqlite`), and cells not done at the end.

use std::collections::{HashMap, HashSet};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use advsweep_core::{AttemptOutcome, CellState, RunState};
use advsweep_proto::is_transient;
use advsweep_proto::v1 as pb;
use pb::sweep_service_client::SweepServiceClient;
use pb::worker_service_client::WorkerServiceClient;
use serde_json::{Value, json};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// The grid: every axis a real sweep-file axis, with built-in presets only
/// (coordinator/src/sweep/presets.rs). Neither defense ties its ε to the grid and the clean
/// attack `none` is left out, so cells = models × defenses × attacks × ε × seeds exactly; both
/// defenses train the same standard classifier (`noise-injection` only wraps it at inference),
/// so a run (model, seed) has defenses × attacks × ε = 20 cells. (Before runs were shared by
/// inference-only defenses, a run was (model, defense, seed) with 10 cells.)
const MODELS: [&str; 2] = ["basic", "resnet18"];
const DEFENSES: [&str; 2] = ["standard", "noise-injection"];
const ATTACKS: [&str; 2] = ["fgsm", "pgd-linf"];
const EPSILONS: [&str; 5] = ["1/255", "2/255", "4/255", "8/255", "16/255"];
/// Epochs per run: one `ReportMetrics` (one point) each, as the real worker sends them.
const EPOCHS: u32 = 3;
const CELLS_PER_SEED: usize = MODELS.len() * DEFENSES.len() * ATTACKS.len() * EPSILONS.len();
const CELLS_PER_RUN: usize = DEFENSES.len() * ATTACKS.len() * EPSILONS.len();

/// What the real worker does between polls and on transport errors (worker/src/agent.rs).
const IDLE_POLL_MIN: Duration = Duration::from_millis(50);
const IDLE_POLL_MAX: Duration = Duration::from_secs(2);
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
const RPC_RETRY_WINDOW: Duration = Duration::from_secs(60);

fn sweep_toml(cells: usize) -> String {
    assert!(
        cells.is_multiple_of(CELLS_PER_SEED),
        "cells must be a multiple of {CELLS_PER_SEED}"
    );
    let seeds = cells / CELLS_PER_SEED;
    let list = |xs: &[&str]| {
        xs.iter()
            .map(|x| format!("\"{x}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let seeds = (0..seeds)
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"# Generated by coordinator/cli/benches/load/main.rs: the coordinator load benchmark's grid.
version = 1
name = "bench-load-{cells}"
description = "coordinator load benchmark: {cells} no-op cells"

[data]
source = "synthetic"

[training]
epochs = {EPOCHS}

[grid]
models = [{models}]
defenses = [{defenses}]
attacks = [{attacks}]
epsilons = [{epsilons}]
seeds = [{seeds}]
"#,
        models = list(&MODELS),
        defenses = list(&DEFENSES),
        attacks = list(&ATTACKS),
        epsilons = list(&EPSILONS),
    )
}

#[derive(Debug, Clone)]
struct Options {
    scenarios: Vec<(usize, usize)>,
    repeats: usize,
    sweep_dir: Option<PathBuf>,
    quick: bool,
    reporting: Reporting,
    /// Milliseconds each worker holds a leased run before reporting it (0: no-op cells).
    compute_ms: u64,
    /// Serve the dashboard and open this many pages on it (`None`: no dashboard).
    dashboard_clients: Option<usize>,
    /// The dashboard clients only follow the event stream (no fetches).
    dashboard_events_only: bool,
    /// Run the pages' threads at the lowest priority (`SCHED_IDLE`): on a machine with few
    /// cores they stand in for browsers on other machines, and should not take the cores from
    /// the coordinator they measure.
    dashboard_niced: bool,
}

/// How a simulated worker reports a run's epochs and cells (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reporting {
    Batched,
    PerEvent,
}

impl Reporting {
    fn name(self) -> &'static str {
        match self {
            Reporting::Batched => "batched",
            Reporting::PerEvent => "per-event",
        }
    }
}

fn parse_args() -> Options {
    let mut opts = Options {
        scenarios: vec![(2, 1_000), (2, 10_000), (2, 100_000), (1_000, 100_000)],
        repeats: 3,
        sweep_dir: None,
        quick: false,
        reporting: Reporting::Batched,
        compute_ms: 0,
        dashboard_clients: None,
        dashboard_events_only: false,
        dashboard_niced: false,
    };
    let mut scenarios: Option<Vec<(usize, usize)>> = None;
    let mut repeats: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--repeats" => repeats = args.next().and_then(|v| v.parse().ok()),
            "--sweep-dir" => opts.sweep_dir = args.next().map(PathBuf::from),
            "--reporting" => {
                opts.reporting = match args.next().as_deref() {
                    Some("batched") => Reporting::Batched,
                    Some("per-event") => Reporting::PerEvent,
                    other => panic!("--reporting takes batched or per-event, got {other:?}"),
                }
            }
            "--compute-ms" => {
                opts.compute_ms = match args.next().map(|v| v.parse()) {
                    Some(Ok(ms)) => ms,
                    other => panic!("--compute-ms takes milliseconds, got {other:?}"),
                }
            }
            "--dashboard-clients" => {
                opts.dashboard_clients = match args.next().map(|v| v.parse()) {
                    Some(Ok(n)) => Some(n),
                    other => panic!("--dashboard-clients takes a number of pages, got {other:?}"),
                }
            }
            "--dashboard-events-only" => opts.dashboard_events_only = true,
            "--dashboard-niced" => opts.dashboard_niced = true,
            "--scenarios" => {
                scenarios = args.next().map(|v| {
                    v.split(',')
                        .map(|s| {
                            let (w, c) = s.split_once('x').expect("scenario is WORKERSxCELLS");
                            (
                                w.trim().parse().expect("workers"),
                                c.trim().parse().expect("cells"),
                            )
                        })
                        .collect()
                });
            }
            // `cargo bench` passes `--bench`; ignore it and anything else harness-specific.
            _ => {}
        }
    }
    if opts.quick {
        opts.scenarios = vec![(2, 1_000), (2, 10_000), (100, 10_000)];
        opts.repeats = 1;
    }
    if let Some(s) = scenarios {
        opts.scenarios = s;
    }
    if let Some(r) = repeats {
        opts.repeats = r.max(1);
    }
    opts
}

mod coordinator;
use coordinator::*;

/// Calls an RPC, retrying transient failures like the real worker.
macro_rules! call {
    ($stats:expr, $client:expr, $method:ident, $request:expr) => {{
        let started = Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            match $client.clone().$method($request.clone()).await {
                Ok(r) => break Ok(r.into_inner()),
                Err(status) if is_transient(&status) && started.elapsed() < RPC_RETRY_WINDOW => {
                    $stats.transient_errors += 1;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(status) => break Err(status),
            }
        }
    }};
}

mod worker;
use worker::*;

mod stats;
use stats::*;

mod dashboard;
use dashboard::{DONE_TIMEOUT, Fetch, PageStats, THROTTLE};

/// The name of the dashboard pages' runtime threads.
const DASHBOARD_THREADS: &str = "bench-dashboard";

/// The dashboard of a repeat: how many pages, what they do, where they run.
struct Pages {
    clients: usize,
    events_only: bool,
    runtime: tokio::runtime::Handle,
}

fn one_repeat(
    rt: &tokio::runtime::Runtime,
    workers: usize,
    cells: usize,
    sweep: &str,
    reporting: Reporting,
    compute: Duration,
    dashboard: Option<Pages>,
) -> serde_json::Map<String, Value> {
    let dir = tempfile::Builder::new()
        .prefix("advsweep-bench-")
        .tempdir()
        .expect("tempdir");
    let coordinator = Coordinator::start(dir.path(), dashboard.is_some());
    let addr = coordinator.addr.clone();
    let http_addr = coordinator.http_addr;
    let sweep = sweep.to_owned();
    let clients = dashboard.as_ref().map(|d| d.clients);
    let process = &coordinator;
    let outcome = rt.block_on(async move {
        let channel = connect(&addr).await;
        let submitted = Instant::now();
        let response = SweepServiceClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .submit_sweep(pb::SubmitSweepRequest {
                sweep_toml: sweep,
                overrides: Default::default(),
                ..Default::default()
            })
            .await
            .expect("submit")
            .into_inner();
        let submit_seconds = submitted.elapsed().as_secs_f64();
        assert_eq!(
            response.cells as usize, cells,
            "the sweep file's cell count"
        );
        // The dashboard pages, opened one after the other over the throttle period (the
        // coordinator answered SubmitSweep, so its dashboard listener is bound).
        let (deadline, deadline_rx) = tokio::sync::watch::channel(None);
        // Where the dashboard is served the workers start at the same moment with pages open
        // or without (once the last page is past its first second): both sides idle alike
        // before the start, and a 25 ms sweep measures the pages, not how long the runtimes
        // and caches had to go cold.
        let start_at = dashboard
            .as_ref()
            .map(|_| Instant::now() + THROTTLE + dashboard::FRESH + Duration::from_millis(100));
        let mut pages = Vec::new();
        let mut ready = None;
        if let Some(d) = dashboard.as_ref().filter(|d| d.clients > 0) {
            let http = http_addr.expect("the dashboard's address");
            let n = d.clients;
            let (ready_tx, ready_rx) = tokio::sync::mpsc::channel(n);
            for i in 0..n {
                pages.push(d.runtime.spawn(dashboard::page(
                    http,
                    response.sweep_id.clone(),
                    THROTTLE.mul_f64(i as f64 / n as f64),
                    !d.events_only,
                    dashboard::throttle_for(cells),
                    ready_tx.clone(),
                    deadline_rx.clone(),
                )));
            }
            ready = Some(ready_rx);
        }
        let go = Arc::new(tokio::sync::Barrier::new(workers + 1));
        let mut tasks = Vec::with_capacity(workers);
        for i in 0..workers {
            // Connections are opened one after the other (1,000 machines do not start in the
            // same millisecond); each worker registers as soon as it is connected.
            let channel = connect(&addr).await;
            let go = Arc::clone(&go);
            tasks.push(tokio::spawn(worker(channel, i, go, reporting, compute)));
        }
        // Every page loaded and following the event stream (or failed: its sender is gone).
        if let Some(mut ready) = ready {
            let n = pages.len();
            let all = async {
                let mut count = 0;
                while count < n && ready.recv().await.is_some() {
                    count += 1;
                }
                count
            };
            let count = tokio::time::timeout(Duration::from_secs(60), all)
                .await
                .unwrap_or_default();
            if count < n {
                eprintln!("load:   only {count} of {n} dashboard pages are ready");
            }
        }
        if let Some(at) = start_at {
            tokio::time::sleep_until(at.into()).await;
        }
        // CPU from the moment every worker is registered to the end.
        let cpu_at_start = process.cpu();
        let own_cpu_at_start = ThreadsCpu::read("self", None);
        let pages_cpu_at_start = ThreadsCpu::read("self", Some(DASHBOARD_THREADS));
        go.wait().await;
        let mut stats = Vec::with_capacity(workers);
        for t in tasks {
            stats.push(t.await.expect("worker task"));
        }
        let cpu = (
            process.cpu().seconds_since(&cpu_at_start),
            ThreadsCpu::read("self", None).seconds_since(&own_cpu_at_start),
            ThreadsCpu::read("self", Some(DASHBOARD_THREADS)).seconds_since(&pages_cpu_at_start),
        );
        // The pages have DONE_TIMEOUT from here to see `done`.
        let _ = deadline.send(Some(Instant::now() + DONE_TIMEOUT));
        let mut page_stats = Vec::with_capacity(pages.len());
        for p in pages {
            page_stats.push(p.await.unwrap_or_else(|e| PageStats {
                errors: vec![format!("the page's task failed: {e}")],
                ..PageStats::default()
            }));
        }
        (response, submit_seconds, stats, cpu, page_stats)
    });
    let (response, submit_seconds, stats, cpu, page_stats) = outcome;
    let (coordinator_cpu, client_cpu, pages_cpu) = cpu;
    let peak_rss = coordinator.peak_rss();
    let counters = coordinator.counters();
    let store = store_counts(&coordinator.state_dir);
    let log_bytes = std::fs::metadata(dir.path().join("coordinator.log")).map_or(0, |m| m.len());
    coordinator.stop();

    let start = stats
        .iter()
        .filter_map(|s| s.first_lease)
        .min()
        .expect("a lease was sent");
    let end = stats
        .iter()
        .filter_map(|s| s.last_done)
        .max()
        .expect("a run completed");
    let wall = end.duration_since(start).as_secs_f64();
    let mut lease: Vec<f64> = stats
        .iter()
        .flat_map(|s| s.lease_latency.iter().copied())
        .collect();
    lease.sort_by(f64::total_cmp);
    // Without each worker's first lease: all W workers leave the start barrier together, so
    // their first leases arrive as one burst of W requests that the store serves one after
    // the other; the rest is the steady state of a running sweep.
    let mut steady_lease: Vec<f64> = stats
        .iter()
        .flat_map(|s| s.lease_latency.iter().skip(1).copied())
        .collect();
    steady_lease.sort_by(f64::total_cmp);
    let mut cell: Vec<f64> = stats
        .iter()
        .flat_map(|s| s.cell_latency.iter().copied())
        .collect();
    cell.sort_by(f64::total_cmp);
    let points: u64 = stats.iter().map(|s| s.points).sum();
    let mut by_cell: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut acks = 0usize;
    for s in &stats {
        for (c, l) in &s.acks {
            acks += 1;
            by_cell.entry(c).or_default().insert(l);
        }
    }
    let acked_by_two_leases = by_cell.values().filter(|l| l.len() > 1).count();
    let stored_results = counters
        .get("advsweep_cell_results_total")
        .copied()
        .unwrap_or(f64::NAN);
    let stored_twice = (stored_results as i64 - store["cells_done"]).max(0);
    let not_done = cells as i64 - store["cells_done"];
    let errors: Vec<String> = stats.iter().flat_map(|s| s.errors.clone()).collect();
    let duplicated = acked_by_two_leases.max(stored_twice as usize);

    let mut m = serde_json::Map::new();
    m.insert("cells_per_s".into(), json!(round(cells as f64 / wall, 1)));
    m.insert("wall_s".into(), json!(round(wall, 3)));
    m.insert(
        "us_per_cell".into(),
        json!(round(wall * 1e6 / cells as f64, 1)),
    );
    m.insert(
        "lease_p50_ms".into(),
        json!(round(percentile(&lease, 50.0) * 1e3, 3)),
    );
    m.insert(
        "lease_p99_ms".into(),
        json!(round(percentile(&lease, 99.0) * 1e3, 3)),
    );
    m.insert(
        "lease_p99_ms_after_first".into(),
        json!(round(percentile(&steady_lease, 99.0) * 1e3, 3)),
    );
    m.insert(
        "complete_cell_p50_ms".into(),
        json!(round(percentile(&cell, 50.0) * 1e3, 3)),
    );
    m.insert(
        "complete_cell_p99_ms".into(),
        json!(round(percentile(&cell, 99.0) * 1e3, 3)),
    );
    // CPU time per cell is robust to other load on the machine, unlike wall-clock rates.
    m.insert(
        "coordinator_cpu_us_per_cell".into(),
        json!(round(coordinator_cpu * 1e6 / cells as f64, 1)),
    );
    m.insert(
        "client_cpu_us_per_cell".into(),
        json!(round(client_cpu * 1e6 / cells as f64, 1)),
    );
    m.insert(
        "metric_points_per_s".into(),
        json!(round(points as f64 / wall, 1)),
    );
    m.insert(
        "peak_rss_mb".into(),
        json!(round(peak_rss as f64 / (1 << 20) as f64, 1)),
    );
    m.insert("duplicated_cells".into(), json!(duplicated));
    m.insert(
        "cells_acked_by_two_leases".into(),
        json!(acked_by_two_leases),
    );
    m.insert("results_stored_twice".into(), json!(stored_twice));
    m.insert("cells_not_done".into(), json!(not_done));
    m.insert("repeated_reports".into(), json!(acks - by_cell.len()));
    m.insert(
        "runs_leased_more_than_once".into(),
        json!(store["runs_leased_more_than_once"]),
    );
    m.insert(
        "runs".into(),
        json!(stats.iter().map(|s| s.runs).sum::<u64>()),
    );
    m.insert("runs_in_store".into(), json!(response.runs));
    m.insert("metric_points".into(), json!(points));
    m.insert(
        "metric_points_in_store".into(),
        json!(store["epoch_points"]),
    );
    m.insert(
        "lease_waits".into(),
        json!(stats.iter().map(|s| s.waits).sum::<u64>()),
    );
    m.insert(
        "transient_errors".into(),
        json!(stats.iter().map(|s| s.transient_errors).sum::<u64>()),
    );
    m.insert("errors".into(), json!(errors.len()));
    if !errors.is_empty() {
        m.insert(
            "first_errors".into(),
            json!(errors.iter().take(5).collect::<Vec<_>>()),
        );
    }
    // Time spent inside the coordinator per RPC (its own histogram), to tell it from transit.
    for method in [
        "Lease",
        "ReportMetrics",
        "CompleteCell",
        "CompleteCells",
        "CompleteRun",
    ] {
        let key = |what: &str| {
            format!(
                "advsweep_rpc_duration_seconds_{what}{{method=\"advsweep.v1.WorkerService/{method}\"}}"
            )
        };
        if let (Some(sum), Some(n)) = (counters.get(&key("sum")), counters.get(&key("count"))) {
            m.insert(
                format!("server_{}_mean_ms", method.to_lowercase()),
                json!(round(sum / n * 1e3, 3)),
            );
        }
    }
    m.insert("submit_s".into(), json!(round(submit_seconds, 3)));
    m.insert("coordinator_log_bytes".into(), json!(log_bytes));
    if let Some(n) = clients {
        let failures = dashboard_summary(&mut m, n, &page_stats, cells, (start, end), pages_cpu);
        if !failures.is_empty() {
            eprintln!(
                "load: the dashboard pages failed: {}",
                serde_json::to_string_pretty(&m).expect("json")
            );
            for f in failures.iter().take(20) {
                eprintln!("load:   {f}");
            }
            panic!(
                "{} dashboard page failure(s), the first: {}",
                failures.len(),
                failures[0]
            );
        }
    }
    m
}

/// Adds what the dashboard pages saw and did to `m`; returns every failure (an error, no
/// `done`, a last summary without every cell done), one line each.
fn dashboard_summary(
    m: &mut serde_json::Map<String, Value>,
    clients: usize,
    pages: &[PageStats],
    cells: usize,
    (start, end): (Instant, Instant),
    cpu: f64,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, p) in pages.iter().enumerate() {
        failures.extend(p.errors.iter().map(|e| format!("page {i}: {e}")));
        if p.errors.is_empty() && p.done.is_none() {
            failures.push(format!("page {i}: no `done` event"));
        }
        if p.errors.is_empty() && p.last_cells != Some((cells as u64, cells as u64)) {
            failures.push(format!(
                "page {i}: the last summary showed {:?} cells done of total, not all {cells}",
                p.last_cells
            ));
        }
    }
    let sum = |f: &dyn Fn(&PageStats) -> u64| pages.iter().map(f).sum::<u64>();
    m.insert("dashboard_clients".into(), json!(clients));
    m.insert(
        "dashboard_done".into(),
        json!(pages.iter().filter(|p| p.done.is_some()).count()),
    );
    m.insert("dashboard_errors".into(), json!(failures.len()));
    if !failures.is_empty() {
        m.insert(
            "dashboard_first_errors".into(),
            json!(failures.iter().take(5).collect::<Vec<_>>()),
        );
    }
    m.insert(
        "dashboard_summary_events".into(),
        json!(sum(&|p| p.summaries)),
    );
    m.insert(
        "dashboard_running_events".into(),
        json!(sum(&|p| p.running)),
    );
    m.insert(
        "dashboard_keep_alives".into(),
        json!(sum(&|p| p.keep_alives)),
    );
    m.insert("dashboard_refreshes".into(), json!(sum(&|p| p.refreshes)));
    m.insert(
        "dashboard_fetches".into(),
        json!(sum(&|p| p.fetches.iter().sum())),
    );
    // Fetches sent while the workers ran (from the first Lease to the last CompleteRun).
    m.insert(
        "dashboard_fetches_during_load".into(),
        json!(
            pages
                .iter()
                .flat_map(|p| &p.fetch_started)
                .filter(|t| **t >= start && **t <= end)
                .count()
        ),
    );
    for kind in Fetch::ALL {
        let i = kind as usize;
        m.insert(
            format!("dashboard_fetches_{}", kind.name()),
            json!(sum(&|p| p.fetches[i])),
        );
    }
    m.insert(
        "dashboard_fetched_mb".into(),
        json!(round(sum(&|p| p.bytes) as f64 / (1 << 20) as f64, 2)),
    );
    m.insert(
        "dashboard_event_kb".into(),
        json!(round(sum(&|p| p.event_bytes) as f64 / 1024.0, 1)),
    );
    m.insert("dashboard_reconnects".into(), json!(sum(&|p| p.reconnects)));
    let mut all: Vec<f64> = pages
        .iter()
        .flat_map(|p| p.latency.iter().flatten().copied())
        .collect();
    all.sort_by(f64::total_cmp);
    let mut latencies = vec![("fetch", all)];
    for kind in Fetch::ALL {
        let mut xs: Vec<f64> = pages
            .iter()
            .flat_map(|p| p.latency[kind as usize].iter().copied())
            .collect();
        xs.sort_by(f64::total_cmp);
        latencies.push((kind.name(), xs));
    }
    for (name, xs) in &latencies {
        for p in [50.0, 99.0] {
            m.insert(
                format!("dashboard_{name}_p{p}_ms"),
                json!(round(percentile(xs, p) * 1e3, 3)),
            );
        }
    }
    // From the workers' last CompleteRun to each page's `done`.
    let mut lag: Vec<f64> = pages
        .iter()
        .filter_map(|p| p.done)
        .map(|d| d.saturating_duration_since(end).as_secs_f64())
        .collect();
    lag.sort_by(f64::total_cmp);
    m.insert(
        "dashboard_done_lag_p50_ms".into(),
        json!(round(percentile(&lag, 50.0) * 1e3, 3)),
    );
    m.insert(
        "dashboard_done_lag_max_ms".into(),
        json!(round(percentile(&lag, 100.0) * 1e3, 3)),
    );
    m.insert(
        "dashboard_client_cpu_us_per_cell".into(),
        json!(round(cpu * 1e6 / cells as f64, 1)),
    );
    failures
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "loadavg_at_start": loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "temp_dir": std::env::temp_dir().display().to_string(),
    })
}

fn main() {
    let opts = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The dashboard pages' own runtime (browsers are other processes), so that parsing their
    // answers does not queue behind the workers' tasks and its CPU can be told apart.
    let pages_rt = opts.dashboard_clients.filter(|n| *n > 0).map(|_| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(DASHBOARD_THREADS)
            .enable_all()
            .build()
            .expect("the dashboard pages' runtime")
    });
    if let Some(rt) = pages_rt.as_ref().filter(|_| opts.dashboard_niced) {
        // Its worker threads exist once a task has run on each.
        rt.block_on(async {
            let wake: Vec<_> = (0..8)
                .map(|_| tokio::spawn(tokio::task::yield_now()))
                .collect();
            for w in wake {
                let _ = w.await;
            }
        });
        dashboard::renice_threads(DASHBOARD_THREADS);
    }
    let machine = machine();
    let mut scenarios = Vec::new();
    let mut cost_by_cells: HashMap<(usize, usize), f64> = HashMap::new();
    for &(workers, cells) in &opts.scenarios {
        let sweep = sweep_toml(cells);
        if let Some(dir) = &opts.sweep_dir {
            std::fs::create_dir_all(dir).expect("sweep dir");
            std::fs::write(dir.join(format!("sweep-{cells}.toml")), &sweep).expect("sweep file");
        }
        let mut samples = Vec::new();
        for repeat in 1..=opts.repeats {
            eprintln!(
                "load: {workers} workers, {cells} cells, repeat {repeat}/{}",
                opts.repeats
            );
            let compute = Duration::from_millis(opts.compute_ms);
            let dashboard = opts.dashboard_clients.map(|clients| Pages {
                clients,
                events_only: opts.dashboard_events_only,
                runtime: pages_rt
                    .as_ref()
                    .map_or_else(|| rt.handle().clone(), |r| r.handle().clone()),
            });
            let sample = one_repeat(
                &rt,
                workers,
                cells,
                &sweep,
                opts.reporting,
                compute,
                dashboard,
            );
            eprintln!(
                "load:   {} cells/s, lease p99 {} ms, peak RSS {} MB, duplicated {}",
                sample["cells_per_s"],
                sample["lease_p99_ms"],
                sample["peak_rss_mb"],
                sample["duplicated_cells"]
            );
            if opts.dashboard_clients.is_some_and(|n| n > 0) {
                eprintln!(
                    "load:   dashboard: {} pages done, {} summaries, {} running events, {} \
                     fetches ({} while the workers ran), report p99 {} ms, coordinator CPU {} \
                     µs/cell",
                    sample["dashboard_done"],
                    sample["dashboard_summary_events"],
                    sample["dashboard_running_events"],
                    sample["dashboard_fetches"],
                    sample["dashboard_fetches_during_load"],
                    sample["dashboard_report_p99_ms"],
                    sample["coordinator_cpu_us_per_cell"]
                );
            }
            samples.push(sample);
        }
        let keys: Vec<String> = samples[0]
            .iter()
            .filter(|(_, v)| v.is_number())
            .map(|(k, _)| k.clone())
            .collect();
        let mut med = serde_json::Map::new();
        for k in keys {
            let xs: Vec<f64> = samples.iter().filter_map(|s| s[&k].as_f64()).collect();
            med.insert(k.clone(), json!(round(median(xs), 3)));
        }
        if let Some(us) = med["us_per_cell"].as_f64() {
            cost_by_cells.insert((workers, cells), us);
        }
        scenarios.push(json!({
            "name": format!(
                "{workers} workers, {cells} cells, {} reports{}{}",
                opts.reporting.name(),
                if opts.compute_ms > 0 { format!(", {} ms per run", opts.compute_ms) } else { String::new() },
                match opts.dashboard_clients {
                    Some(n) if opts.dashboard_events_only => format!(", dashboard with {n} event streams open"),
                    Some(n) => format!(", dashboard with {n} pages open"),
                    None => String::new(),
                }
            ),
            "dashboard_clients": opts.dashboard_clients,
            "dashboard_events_only": opts.dashboard_events_only,
            "reporting": opts.reporting.name(),
            "compute_ms_per_run": opts.compute_ms,
            // What W workers holding each run compute_ms can deliver at most.
            "offered_cells_per_s": (opts.compute_ms > 0).then(|| {
                round(workers as f64 * CELLS_PER_RUN as f64 * 1e3 / opts.compute_ms as f64, 1)
            }),
            "workers": workers,
            "cells": cells,
            "runs": cells / CELLS_PER_RUN,
            "repeats": opts.repeats,
            "median": med,
            "samples": samples,
        }));
    }
    let flatness = match (
        cost_by_cells.get(&(2, 1_000)),
        cost_by_cells.get(&(2, 100_000)),
    ) {
        (Some(small), Some(big)) => json!(round(big / small, 3)),
        _ => Value::Null,
    };
    let out = json!({
        "bench": "advsweep coordinator load",
        "coordinator": coordinator_bin().display().to_string(),
        "command": "cargo bench -p advsweep-cli --bench load -- ".to_owned()
            + &std::env::args().skip(1).filter(|a| a != "--bench").collect::<Vec<_>>().join(" "),
        "machine": machine,
        "grid": {
            "models": MODELS, "defenses": DEFENSES, "attacks": ATTACKS, "epsilons": EPSILONS,
            "epochs_per_run": EPOCHS, "cells_per_run": CELLS_PER_RUN,
            "cells_per_seed": CELLS_PER_SEED,
        },
        "worker_model": match opts.reporting {
            Reporting::Batched => "each simulated worker: own HTTP/2 channel, sequential RPCs like worker/src/agent.rs with a job faster than a round trip (Register; Lease; one ReportMetrics with the run's epochs; one CompleteCells with its cells; CompleteRun), no heartbeats, no checkpoint uploads",
            Reporting::PerEvent => "each simulated worker: own HTTP/2 channel, sequential RPCs like worker/src/agent.rs with epochs and cells slower than a round trip (Register; Lease; ReportMetrics per epoch; CompleteCell per cell; CompleteRun), no heartbeats, no checkpoint uploads",
        },
        "reporting": opts.reporting.name(),
        "compute_ms_per_run": opts.compute_ms,
        "dashboard_clients": opts.dashboard_clients,
        "dashboard_events_only": opts.dashboard_events_only,
        "dashboard_page_model": opts.dashboard_clients.map(|_| if opts.dashboard_events_only { "each client: its own runtime thread pool, one HTTP/1.1 connection holding the event stream, no fetches; clients opened over the 2 s before the workers start" } else { "each page: its own runtime thread pool, one kept-alive HTTP/1.1 connection for fetches and one for the event stream; page load GET report, access, table.md, runs; a running sweep's summary/running event (none in the page's first second) calls for GET table.md, runs, report one after the other 2 s later, the events in between folded in (app.js coalesced), a settled sweep's summary for them at once; pages opened over the 2 s before the workers start, which start once every page follows the event stream" }),
        "scenarios": scenarios,
        "per_cell_cost_100k_over_1k_2_workers": flatness,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&out).expect("json output")
    );
}
