//! `advsweep-worker --slots 2`: one process, two leases at once on the same device. What a
//! user would check: both slots register, the two runs of a sweep are trained by different
//! slots at the same time, and the worker exits when the sweep is done.

use std::collections::BTreeSet;
use std::time::Duration;

use advsweep_proto::v1 as pb;
use advsweep_proto::v1::sweep_service_client::SweepServiceClient;
use advsweep_tests::{TestCoordinator, log_text, spawn_worker, submit, within};

const SWEEP: &str = r#"
version = 1
name = "slots"
[data]
source = "synthetic"
seed = 9
train_size = 512
test_size = 64
[training]
epochs = 2
batch_size = 64
[evaluation]
limit = 64
batch_size = 64
[grid]
models = ["basic"]
defenses = ["standard", "at-fgsm"]
attacks = ["none", "fgsm"]
epsilons = ["8/255"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_slots_train_two_runs_at_once() {
    let coordinator = TestCoordinator::start().await;
    let sweep_id = submit(&coordinator.url, SWEEP).await;
    let log = coordinator.state_dir.path().join("worker.log");
    let mut worker = spawn_worker(
        &coordinator.url,
        &log,
        &["--slots", "2", "--exit-when-idle", "--name", "box"],
    );
    let status = within(
        Duration::from_secs(300),
        worker.wait(),
        "worker did not finish in 5 minutes; log",
        &log,
    )
    .await
    .expect("worker status");
    let log_text = log_text(&log);
    assert!(
        status.success(),
        "worker exited with {status}; log:\n{log_text}"
    );
    for slot in ["box/slot-0", "box/slot-1"] {
        assert!(
            log_text.contains(slot),
            "{slot} never appears; log:\n{log_text}"
        );
    }

    let mut client = SweepServiceClient::connect(coordinator.url.clone())
        .await
        .expect("connect");
    let detail = client
        .get_sweep(pb::GetSweepRequest {
            sweep_id: sweep_id.clone(),
        })
        .await
        .expect("get sweep")
        .into_inner();
    assert!(
        detail.cells.iter().all(|c| c.result.is_some()),
        "{detail:?}"
    );
    let workers: BTreeSet<&str> = detail.runs.iter().map(|r| r.worker_id.as_str()).collect();
    assert_eq!(
        workers.len(),
        2,
        "each slot should have leased one of the two runs; log:\n{log_text}"
    );
}
