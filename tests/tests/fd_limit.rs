//! The real `advsweep coordinator` process under a low open-files limit (`ulimit -n 128`) while
//! a flood of connections that never speak is held open against it (issue 18: at the limit the
//! accept loop spun on failing `accept4` and health went unanswered). The coordinator must keep
//! answering gRPC health on fresh connections, must not busy-loop, and must have made room by
//! closing silent connections. How fast health is answered is measured by the
//! `idle_connections` benchmark, not here.

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use advsweep_tests::{KillOnDrop, free_port, workspace_bin};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Connections held open: several times what 128 descriptors allow, but under the 1024 soft
/// limit a test process commonly has.
const FLOOD: usize = 600;

async fn health(port: u16) -> Result<ServingStatus, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map_err(|e| format!("check: {e}"))?
        .into_inner()
        .status;
    ServingStatus::try_from(status).map_err(|e| e.to_string())
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("coordinator stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat has a command name")
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn metric(port: u16, name: &str) -> f64 {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .expect("metrics request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("metrics response");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_answered_under_a_low_open_files_limit_while_silent_connections_flood_in() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let metrics_port = free_port();
    let log = std::fs::File::create(dir.path().join("coordinator.log")).expect("log");
    // `ulimit` is a shell builtin: no extra tool, and the limit applies to what `exec` runs.
    let script = format!(
        "ulimit -n 128 && exec \"$0\" coordinator --listen 127.0.0.1:{port} \
         --metrics-listen 127.0.0.1:{metrics_port} --state-dir \"$1\""
    );
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(workspace_bin("advsweep"))
        .arg(dir.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawns the coordinator");
    let coordinator = KillOnDrop(child);
    let pid = coordinator.0.id();
    let log_text =
        || std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap_or_default();

    let started = Instant::now();
    while health(port).await != Ok(ServingStatus::Serving) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never served:\n{}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 128 ")),
        "the coordinator runs under the low limit:\n{limits}"
    );

    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        flood.push(std::net::TcpStream::connect(("127.0.0.1", port)).expect("connects"));
    }
    for probe in 0..5 {
        assert_eq!(
            health(port).await,
            Ok(ServingStatus::Serving),
            "probe {probe} with {FLOOD} silent connections held:\n{}",
            log_text()
        );
    }

    // Not spinning: over two idle seconds the coordinator uses well under one core.
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_seconds = (cpu_ticks(pid) - before) as f64 / ticks_per_second;
    assert!(
        cpu_seconds < 1.0,
        "{cpu_seconds} CPU seconds in 2 s: a busy loop"
    );

    assert!(
        log_text().contains("max_connections does not fit under the open-files limit"),
        "the lowered cap is logged:\n{}",
        log_text()
    );
    assert!(
        metric(metrics_port, "advsweep_connections_evicted_total") > 0.0,
        "silent connections were closed to make room"
    );
    drop(flood);
}
