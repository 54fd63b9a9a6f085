//! A coordinator on 127.0.0.1:0 and a real `advsweep-worker` process run a tiny synthetic sweep
//! over real gRPC. What a user would check: every cell has exactly one result, the trained model
//! beats chance, and the attacks order as they must (PGD ≤ FGSM ≤ clean at the same ε).

use advsweep_coordinator::store::StateStore;
use advsweep_core::{ShownState, SweepState};
use std::process::Stdio;
use std::time::Duration;

use advsweep_proto::v1 as pb;
use advsweep_proto::v1::sweep_service_client::SweepServiceClient;
use advsweep_tests::{TestCoordinator, log_text, spawn_worker, typed, within, workspace_bin};

const SWEEP: &str = r#"
version = 1
name = "e2e"
[data]
source = "synthetic"
seed = 3
train_size = 3000
test_size = 400
[training]
epochs = 4
batch_size = 64
learning_rate = 0.05
[evaluation]
limit = 400
batch_size = 200
[grid]
models = ["basic"]
defenses = ["standard"]
attacks = ["none", "fgsm", "pgd-linf"]
epsilons = ["8/255"]
"#;

fn accuracy(detail: &pb::SweepDetail, attack: &str) -> f64 {
    let cells: Vec<_> = detail
        .cells
        .iter()
        .filter(|c| c.attack_name == attack)
        .collect();
    assert_eq!(cells.len(), 1, "one `{attack}` cell");
    cells[0]
        .result
        .as_ref()
        .unwrap_or_else(|| panic!("`{attack}` has no result"))
        .accuracy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_worker_runs_a_sweep_over_grpc() {
    let coordinator = TestCoordinator::start().await;
    let mut client = SweepServiceClient::connect(coordinator.url.clone())
        .await
        .expect("client connects");
    let submitted = client
        .submit_sweep(pb::SubmitSweepRequest {
            sweep_toml: SWEEP.into(),
            overrides: Default::default(),
            ..Default::default()
        })
        .await
        .expect("submit")
        .into_inner();
    assert_eq!((submitted.runs, submitted.cells), (1, 3));

    let log = coordinator.state_dir.path().join("worker.log");
    let mut worker = spawn_worker(
        &coordinator.url,
        &log,
        &["--exit-when-idle", "--log-format", "json"],
    );

    // A user watching from another terminal, in JSON.
    let watcher = tokio::process::Command::new(workspace_bin("advsweep"))
        .args([
            "watch",
            &submitted.sweep_id,
            "--json",
            "--coordinator",
            &coordinator.url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("watch starts");

    let mut events = client
        .watch_sweep(pb::WatchSweepRequest {
            sweep_id: submitted.sweep_id.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    let finished = within(
        Duration::from_secs(300),
        async {
            while let Some(event) = events.message().await.expect("event stream") {
                if event.finished {
                    return event.summary;
                }
            }
            None
        },
        "sweep did not finish in 5 minutes; worker log",
        &log,
    )
    .await
    .expect("a final event");
    let log_text = log_text(&log);
    assert_eq!(
        finished.state,
        SweepState::Done.as_str(),
        "worker log:\n{log_text}"
    );

    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .expect("idle worker exits by itself")
        .expect("worker status");
    assert!(
        status.success(),
        "worker exited with {status}; log:\n{log_text}"
    );

    let detail = client
        .get_sweep(pb::GetSweepRequest {
            sweep_id: submitted.sweep_id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(detail.cells.len(), 3);
    let mut ids: Vec<_> = detail.cells.iter().map(|c| c.cell_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "duplicate cells");
    for cell in &detail.cells {
        assert_eq!(
            cell.state,
            ShownState::Done.as_str(),
            "cell {}: {}",
            cell.cell_id,
            cell.error
        );
        let r = cell.result.as_ref().expect("result");
        assert_eq!(
            r.examples, 400,
            "cell {} evaluated {} examples",
            cell.attack_name, r.examples
        );
    }
    // Exactly one result per cell, stored once: the durable table agrees.
    let stored = coordinator
        .store
        .sweep_detail(&typed(&submitted.sweep_id))
        .expect("store detail");
    assert_eq!(stored.summary.cells.done, 3);

    let run = &detail.runs[0];
    assert_eq!(run.epochs.len(), 4, "one metrics record per epoch");
    assert!(run.epochs.windows(2).all(|w| w[0].epoch < w[1].epoch));

    let clean = accuracy(&detail, "none");
    let fgsm = accuracy(&detail, "fgsm");
    let pgd = accuracy(&detail, "pgd-linf");
    assert!(
        clean > 0.3,
        "clean accuracy {clean} is not clearly above chance (0.1)"
    );
    assert!(fgsm <= clean, "FGSM {fgsm} > clean {clean}");
    assert!(pgd <= fgsm, "PGD {pgd} > FGSM {fgsm}");
    assert!(
        pgd < clean,
        "PGD at 8/255 did not lower accuracy ({pgd} vs {clean})"
    );
    // The worker's log explains the run: its spans carry the ids.
    assert!(
        log_text.contains(&run.run_id),
        "worker log lacks run id:\n{log_text}"
    );
    for line in log_text.lines().filter(|l| !l.trim().is_empty()) {
        let _: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("--log-format json wrote a non-JSON line ({e}): {line}"));
    }

    // `advsweep watch --json` ended by itself with the final counts.
    let watched = tokio::time::timeout(Duration::from_secs(30), watcher.wait_with_output())
        .await
        .expect("watch ends when the sweep ends")
        .expect("watch output");
    assert!(
        watched.status.success(),
        "{}",
        String::from_utf8_lossy(&watched.stderr)
    );
    let stdout = String::from_utf8_lossy(&watched.stdout);
    let last: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("events")).expect("JSON event");
    assert_eq!(last["finished"], true);
    assert_eq!(last["state"], SweepState::Done.as_str());
    assert_eq!(last["cells"][ShownState::Done.as_str()], 3);
    assert_eq!(last["cells"]["total"], 3);
    for line in stdout.lines() {
        let _: serde_json::Value = serde_json::from_str(line).expect("every event is JSON");
    }
}
