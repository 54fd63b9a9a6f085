//! `advsweep coordinator` as a separate process, driven the way a user would: gRPC health and
//! reflection (what grpcurl and Kubernetes probes use), then `submit`, `status`, `cancel`,
//! `watch` from the CLI.

use advsweep_core::SweepState;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use advsweep_tests::{KillOnDrop, free_addr, text, workspace_bin};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const SWEEP: &str = r#"
version = 1
name = "client-test"
[data]
source = "synthetic"
[grid]
models = ["basic"]
defenses = ["standard", "at-pgd-linf"]
attacks = ["none", "pgd-linf"]
epsilons = ["4/255", "8/255"]
"#;

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("response");
    body
}

fn cli(url: &str, args: &[&str]) -> Output {
    Command::new(workspace_bin("advsweep"))
        .args(args)
        .env("ADVSWEEP_COORDINATOR", url)
        .output()
        .expect("advsweep runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_process_serves_health_reflection_and_the_cli() {
    let state = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let url = format!("http://{addr}");
    let metrics_addr = free_addr();
    let http_addr = free_addr();
    let _coordinator = KillOnDrop(
        Command::new(workspace_bin("advsweep"))
            .args([
                "coordinator",
                "--listen",
                &addr,
                "--metrics-listen",
                &metrics_addr,
                "--http-listen",
                &http_addr,
                "--state-dir",
            ])
            .arg(state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coordinator starts"),
    );

    // Health: SERVING for both services once up.
    let deadline = Instant::now() + Duration::from_secs(20);
    let channel = loop {
        match tonic::transport::Endpoint::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("coordinator never came up: {e}"),
        }
    };
    let mut health = HealthClient::new(channel.clone());
    for service in ["advsweep.v1.SweepService", "advsweep.v1.WorkerService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
    }

    // Reflection lists our services (what `grpcurl list` shows).
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection call")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("stream")
        .expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "advsweep.v1.SweepService",
        "advsweep.v1.WorkerService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    // The CLI against it.
    let file = state.path().join("sweep.toml");
    std::fs::write(&file, SWEEP).expect("write");
    let file = file.display().to_string();
    let out = cli(&url, &["submit", &file]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.contains("3 runs, 7 cells, 0 already done"),
        "{stdout}"
    );
    let sweep_id = stdout
        .split_whitespace()
        .find(|w| w.starts_with("(s-"))
        .map(|w| {
            w.trim_matches(|c| c == '(' || c == ')' || c == ':')
                .to_owned()
        })
        .expect("sweep id in output");

    let out = cli(&url, &["status"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&sweep_id),
        "{}",
        text(&out)
    );
    let out = cli(&url, &["status", "--json"]);
    let list: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("status --json parses");
    assert_eq!(list[0]["sweep_id"], sweep_id.as_str());
    assert_eq!(list[0]["cells_total"], 7);
    let out = cli(&url, &["status", &sweep_id, "--json"]);
    let detail: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("status SWEEP --json parses");
    assert_eq!(detail["cells"].as_array().map(Vec::len), Some(7));
    assert_eq!(detail["runs"].as_array().map(Vec::len), Some(3));

    // A client pointed at the metrics port by mistake is told which port to use.
    let wrong = cli(&format!("http://{metrics_addr}"), &["status"]);
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success(), "{said}");
    assert!(said.contains("metrics port"), "{said}");

    // Prometheus metrics: state gauges and per-RPC latency histograms.
    let metrics = http_get(&metrics_addr, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    assert!(
        metrics.contains("advsweep_cells{state=\"pending\"} 7"),
        "{metrics}"
    );
    assert!(
        metrics.contains("advsweep_runs{state=\"pending\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "advsweep_rpc_duration_seconds_count{method=\"advsweep.v1.SweepService/SubmitSweep\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("advsweep_rpc_duration_seconds_bucket{method=\"advsweep.v1.SweepService/GetSweep\",le=\"+Inf\"}"), "{metrics}");
    assert!(http_get(&metrics_addr, "/other").starts_with("HTTP/1.1 404"));
    // The dashboard's port: the API (here without tokens) and /metrics, over real HTTP.
    let sweeps = http_get(&http_addr, "/api/v1/sweeps");
    assert!(sweeps.starts_with("HTTP/1.1 200 OK"), "{sweeps}");
    assert!(sweeps.contains(sweep_id.as_str()), "{sweeps}");
    let csv = http_get(
        &http_addr,
        &format!("/api/v1/sweeps/{sweep_id}/files/cells.csv"),
    );
    assert!(
        csv.starts_with("HTTP/1.1 200 OK") && csv.contains("pgd-linf"),
        "{csv}"
    );
    let wrong = cli(&format!("http://{http_addr}"), &["status"]);
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("HTTP port"),
        "{}",
        text(&wrong)
    );

    let out = cli(&url, &["status", &sweep_id]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("cells: 0/7 done, 7 pending"), "{stdout}");
    assert!(stdout.contains("| pgd-linf | 8/255 |"), "{stdout}");
    // A sweep's name works wherever its id does.
    let by_name = cli(&url, &["status", "client-test"]);
    assert!(by_name.status.success(), "{}", text(&by_name));
    assert_eq!(String::from_utf8_lossy(&by_name.stdout), stdout);

    // Resubmitting is idempotent.
    let out = cli(&url, &["submit", &file]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&sweep_id),
        "{}",
        text(&out)
    );

    let out = cli(&url, &["cancel", &sweep_id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("7 cells cancelled"),
        "{}",
        text(&out)
    );

    // watch ends at once on a settled sweep; a cancelled sweep is not a success.
    let out = cli(&url, &["watch", &sweep_id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(SweepState::Cancelled.as_str()),
        "{}",
        text(&out)
    );

    // Unknown sweeps and unreachable coordinators are clear errors.
    let out = cli(&url, &["status", "s-doesnotexist"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no sweep with id or name `s-doesnotexist`"),
        "{}",
        text(&out)
    );
    let out = cli(&format!("http://{}", free_addr()), &["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach the coordinator"),
        "{}",
        text(&out)
    );
}
