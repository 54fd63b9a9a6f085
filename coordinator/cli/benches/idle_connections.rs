//! Health latency under a connection flood (issue 18): the real `advsweep coordinator` process
//! under a low open-files limit, with N connections that never speak held open against it.
//!
//! ```sh
//! cargo bench -p advsweep-cli --bench idle_connections -- [--connections 1000] \
//!     [--open-files 256] [--probes 200]
//! ```
//! Prints one JSON object on stdout. Each probe is what a load balancer or Kubernetes does: a
//! fresh TCP connection, the HTTP/2 handshake and one `grpc.health.v1.Health/Check`, timed end
//! to end; `held_channel` probes reuse one connection opened before the flood (a worker's).
//! The flood is `--connections` tasks that each keep one silent connection open, connecting again
//! whenever the coordinator closes theirs (`flood_reconnects` counts those).
//! Measured first on the quiet coordinator (`baseline`), then with the flood held (`flooded`),
//! with the coordinator's CPU seconds over the flooded phase (a spinning accept loop would show
//! as about one core) and its connection counters from `/metrics`.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt as _;

use serde_json::{Value, json};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

struct Options {
    connections: usize,
    open_files: u64,
    probes: usize,
}

fn parse_args() -> Options {
    let mut opts = Options {
        connections: 1000,
        open_files: 256,
        probes: 200,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a whole number"))
        };
        match arg.as_str() {
            "--connections" => opts.connections = value("--connections") as usize,
            "--open-files" => opts.open_files = value("--open-files"),
            "--probes" => opts.probes = value("--probes") as usize,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    opts
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn coordinator_bin() -> PathBuf {
    std::env::var_os("ADVSWEEP_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_advsweep")))
}

/// utime + stime of a process in seconds (USER_HZ = 100 on Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn counters(metrics_port: u16) -> Value {
    let mut text = String::new();
    if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", metrics_port)) {
        let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
        let _ = stream.read_to_string(&mut text);
    }
    let mut out = serde_json::Map::new();
    for line in text.lines().filter(|l| {
        l.starts_with("advsweep_connections_") || l.starts_with("advsweep_accept_errors")
    }) {
        if let Some((k, v)) = line.rsplit_once(' ') {
            out.insert(k.to_owned(), json!(v.parse::<f64>().unwrap_or(f64::NAN)));
        }
    }
    Value::Object(out)
}

fn endpoint(port: u16) -> Endpoint {
    Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
}

/// One probe on a fresh connection, in milliseconds; `None` if it failed.
async fn fresh_probe(port: u16) -> Option<f64> {
    let started = Instant::now();
    let channel = endpoint(port).connect().await.ok()?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .ok()?;
    Some(started.elapsed().as_secs_f64() * 1e3)
}

async fn held_probe(channel: &Channel) -> Option<f64> {
    let started = Instant::now();
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .ok()?;
    Some(started.elapsed().as_secs_f64() * 1e3)
}

fn summary(mut ms: Vec<f64>, probes: usize) -> Value {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| {
        ms.get(((ms.len() as f64 - 1.0) * p).round() as usize)
            .map(|v| (v * 100.0).round() / 100.0)
    };
    json!({
        "answered": ms.len(), "probes": probes,
        "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0),
    })
}

async fn probe_phase(port: u16, held: &Channel, probes: usize) -> Value {
    let (mut fresh, mut reused) = (Vec::new(), Vec::new());
    for _ in 0..probes {
        fresh.extend(fresh_probe(port).await);
        reused.extend(held_probe(held).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    json!({ "fresh_connection": summary(fresh, probes), "held_channel": summary(reused, probes) })
}

/// One attacker's socket: connects and never writes. With `reconnect` it connects again as soon
/// as the server closes it, so that the silent connections press on the coordinator throughout;
/// without, the closed socket stays closed (the client side keeps it until the phase ends).
async fn hold_silent_connection(port: u16, reconnect: bool, reopened: Arc<AtomicU64>) {
    let mut first = true;
    loop {
        if !first {
            reopened.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(mut stream) => {
                let mut buf = [0u8; 64];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                if !reconnect {
                    std::future::pending::<()>().await;
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Opens the flood, probes health while it is held, and closes it.
async fn flood_phase(
    opts: &Options,
    port: u16,
    metrics_port: u16,
    pid: u32,
    held: &Channel,
    reconnect: bool,
) -> Value {
    eprintln!(
        "flood: {} silent connections (reconnect: {reconnect})",
        opts.connections
    );
    let reopened = Arc::new(AtomicU64::new(0));
    let flood: Vec<_> = (0..opts.connections)
        .map(|_| {
            tokio::spawn(hold_silent_connection(
                port,
                reconnect,
                Arc::clone(&reopened),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let probes = probe_phase(port, held, opts.probes).await;
    let phase_s = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    let result = json!({
        "probes": probes,
        "phase_s": (phase_s * 100.0).round() / 100.0,
        "coordinator_cpu_share": (cpu / phase_s * 1000.0).round() / 1000.0,
        "flood_reconnects": reopened.load(Ordering::Relaxed),
        "counters": counters(metrics_port),
    });
    flood.iter().for_each(tokio::task::JoinHandle::abort);
    for task in flood {
        let _ = task.await;
    }
    // Let the coordinator see the closed sockets before the next phase.
    tokio::time::sleep(Duration::from_secs(1)).await;
    result
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let opts = parse_args();
    let dir = tempfile::tempdir().expect("temp dir");
    let (port, metrics_port) = (free_port(), free_port());
    let script = format!(
        "ulimit -n {} && exec \"$0\" coordinator --listen 127.0.0.1:{port} \
         --metrics-listen 127.0.0.1:{metrics_port} --state-dir \"$1\"",
        opts.open_files
    );
    let log = std::fs::File::create(dir.path().join("coordinator.log")).expect("log");
    let child = Command::new("sh")
        .args(["-c", &script])
        .arg(coordinator_bin())
        .arg(dir.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn advsweep coordinator");
    let coordinator = Killed(child);
    let pid = coordinator.0.id();

    let started = Instant::now();
    let held = loop {
        if let Ok(channel) = endpoint(port).connect().await
            && held_probe(&channel).await.is_some()
        {
            break channel;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "coordinator never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("baseline: {} probes", opts.probes);
    let baseline = probe_phase(port, &held, opts.probes).await;

    let held_flood = flood_phase(&opts, port, metrics_port, pid, &held, false).await;
    let reconnecting_flood = flood_phase(&opts, port, metrics_port, pid, &held, true).await;
    let result = json!({
        "bench": "idle_connections",
        "connections": opts.connections,
        "open_files_limit": opts.open_files,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "baseline": baseline,
        "held_flood": held_flood,
        "reconnecting_flood": reconnecting_flood,
    });
    println!("{}", serde_json::to_string_pretty(&result).expect("json"));
}
