//! Worker-side recovery with real processes: SIGTERM hands the run back as *preempted* (not a
//! failure) and the worker exits promptly; a node that fails run after run stops taking work.

use std::process::Stdio;
use std::time::{Duration, Instant};

use advsweep_coordinator::store::StateStore;
use advsweep_core::{AttemptOutcome, RunId, ShownState, SweepState};
use advsweep_proto::v1 as pb;
use advsweep_tests::{
    TestCoordinator, free_addr, log_text, long_sweep, poll_until, second_worker_resumes,
    short_leases, spawn_worker, submit, training_sweep, typed, wait_for_exit, workspace_bin,
};

/// A done cell's state on the wire.
const DONE: &str = ShownState::Done.as_str();

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_run_as_preempted() {
    let c = TestCoordinator::start().await;
    let sweep = submit(&c.url, &long_sweep(200)).await;
    let log = c.state_dir.path().join("worker.log");
    let mut w = spawn_worker(&c.url, &log, &[]);
    // Wait until it is training (an epoch reported).
    poll_until(
        Duration::from_secs(120),
        Duration::from_millis(100),
        || {
            (!c.store.sweep_detail(&typed(&sweep)).expect("detail").runs[0]
                .epochs
                .is_empty())
            .then_some(())
        },
        || format!("no epoch within 2 minutes:\n{}", log_text(&log)),
    )
    .await;
    let (status, text) = sigterm_and_wait(&mut w, "", &log).await;
    assert!(status.success(), "exit {status}:\n{text}");
    let d = c.store.sweep_detail(&typed(&sweep)).expect("detail");
    let run = &d.runs[0];
    assert_eq!(
        run.state,
        ShownState::Pending,
        "the run is re-queued at once:\n{text}"
    );
    assert_eq!(run.attempts.len(), 1);
    assert_eq!(run.attempts[0].outcome, AttemptOutcome::Preempted);
    assert!(
        run.error.is_none(),
        "a preemption is not an error: {:?}",
        run.error
    );
    // What it trained is not lost: the next worker resumes from its last checkpoint.
    let checkpoint = c.store.latest_checkpoint(&run.run_id).expect("store");
    assert!(
        checkpoint.is_some_and(|k| k.epoch >= 1),
        "no checkpoint to resume from"
    );
}

/// SIGTERM while the coordinator is gone: the worker cannot hand its run back, and does not
/// wait on it for minutes (each call retried for a minute) but exits once its shutdown grace is
/// over, saying so; the run's lease expires on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_coordinator_gone_exits_after_the_shutdown_grace() {
    let mut c = TestCoordinator::start().await;
    submit(&c.url, &long_sweep(200)).await;
    let log = c.state_dir.path().join("worker.log");
    let mut w = spawn_worker(&c.url, &log, &["--shutdown-grace", "2"]);
    poll_until(
        Duration::from_secs(120),
        Duration::from_millis(100),
        || log_text(&log).contains("epoch done").then_some(()),
        || format!("no epoch within 2 minutes:\n{}", log_text(&log)),
    )
    .await;
    c.stop();
    let (status, text) =
        sigterm_and_wait(&mut w, " with its coordinator gone (grace: 2 s)", &log).await;
    assert_eq!(status.code(), Some(1), "exit {status}:\n{text}");
    assert!(
        text.contains("not stopped and handed back within the shutdown grace"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_with_missing_data_fails_its_runs_without_taking_the_worker_down() {
    let c = TestCoordinator::start().await;
    let sweep = submit(
        &c.url,
        r#"
version = 1
name = "broken-data"
[data]
source = "cifar10"
path = "/nonexistent/cifar"
[grid]
models = ["basic"]
defenses = ["standard"]
attacks = ["none"]
epsilons = [0.0]
seeds = [0, 1, 2, 3, 4]
"#,
    )
    .await;
    let log = c.state_dir.path().join("worker.log");
    let mut w = spawn_worker(
        &c.url,
        &log,
        &["--max-consecutive-failures", "2", "--exit-when-idle"],
    );
    let (status, text) = wait_for_exit(
        &mut w,
        Duration::from_secs(120),
        "the worker drains the sweep",
        &log,
    )
    .await;
    // The sweep's mistake, not the node's: the worker stays up (until the work is gone).
    assert!(status.success(), "{text}");
    assert!(!text.contains("runs failed in a row"), "{text}");
    let d = c.store.sweep_detail(&typed(&sweep)).expect("detail");
    // Missing data is not retryable: every run failed for good, naming the path.
    assert_eq!(d.runs.len(), 5);
    assert!(
        d.runs.iter().all(|r| r.state == ShownState::Failed
            && r.error
                .as_deref()
                .unwrap_or("")
                .contains("/nonexistent/cifar")),
        "{:?}",
        d.runs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_replaced_and_training_resumes_from_its_checkpoint() {
    let c = TestCoordinator::start_with(short_leases()).await;
    let sweep = submit(&c.url, &training_sweep("resume", 8, "")).await;
    let run_id = train_three_epochs_then_kill(&c, &sweep).await;
    let resumed_from = c
        .store
        .latest_checkpoint(&run_id)
        .expect("ckpt")
        .expect("a checkpoint")
        .epoch;

    let text_b = second_worker_resumes(&c, "the second worker finishes the sweep").await;
    assert!(
        text_b.contains(&format!("epochs_done={resumed_from}")),
        "worker b should resume after epoch {resumed_from}:\n{text_b}"
    );
    // It did not retrain the epochs before the checkpoint.
    assert!(
        !text_b.contains("epoch=1 "),
        "epoch 1 was retrained:\n{text_b}"
    );

    let d = c.store.sweep_detail(&typed(&sweep)).expect("detail");
    assert_eq!(
        d.summary.state,
        advsweep_coordinator::store::SweepState::Done
    );
    let outcomes: Vec<AttemptOutcome> = d.runs[0].attempts.iter().map(|x| x.outcome).collect();
    assert_eq!(outcomes, [AttemptOutcome::Expired, AttemptOutcome::Done]);
    assert_eq!(d.runs[0].epochs.len(), 8, "every epoch recorded once");
    assert_eq!(d.cells.len(), 2);
    assert!(
        d.cells
            .iter()
            .all(|cell| cell.state == ShownState::Done && cell.result.is_some())
    );
    let clean = d
        .cells
        .iter()
        .find(|cell| cell.attack_name == "none")
        .and_then(|cell| cell.result.clone())
        .expect("clean");
    assert!(
        clean.accuracy > 0.3,
        "the resumed model trained: {}",
        clean.accuracy
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_coordinator_loses_nothing_acknowledged() {
    use advsweep_proto::v1::sweep_service_client::SweepServiceClient as Client;
    let state = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let url = format!("http://{addr}");
    let start = || {
        std::process::Command::new(workspace_bin("advsweep"))
            .args(["coordinator", "--listen", &addr, "--state-dir"])
            .arg(state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coordinator starts")
    };
    let connect = || async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match Client::connect(url.clone()).await {
                Ok(c) => return c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "coordinator not up: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    };
    let mut coordinator = start();
    let mut client = connect().await;
    let sweep = client
        .submit_sweep(pb::SubmitSweepRequest {
            sweep_toml: training_sweep("restart", 6, "seeds = [0, 1]\n"),
            overrides: Default::default(),
            ..Default::default()
        })
        .await
        .expect("submit")
        .into_inner()
        .sweep_id;
    let log = state.path().join("worker.log");
    let mut w = spawn_worker(&url, &log, &["--exit-when-idle"]);
    // Kill the coordinator once the first run is done and the second is training.
    let deadline = Instant::now() + Duration::from_secs(180);
    let before = loop {
        let d = client
            .get_sweep(pb::GetSweepRequest {
                sweep_id: sweep.clone(),
            })
            .await
            .expect("get")
            .into_inner();
        let done = d.cells.iter().filter(|c| c.state == DONE).count();
        let training = d
            .runs
            .iter()
            .any(|r| r.state == ShownState::Running.as_str() && !r.epochs.is_empty());
        if done >= 2 && training {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "no progress:\n{}",
            log_text(&log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    coordinator.kill().expect("kill -9");
    let _ = coordinator.wait();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut coordinator = start();
    let mut client = connect().await;

    let (status, text) = wait_for_exit(
        &mut w,
        Duration::from_secs(180),
        "the worker finishes after the restart",
        &log,
    )
    .await;
    assert!(status.success(), "{text}");
    let after = client
        .get_sweep(pb::GetSweepRequest {
            sweep_id: sweep.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    let _ = coordinator.kill();
    let _ = coordinator.wait();
    assert_eq!(
        after.summary.as_ref().map(|s| s.state.as_str()),
        Some(SweepState::Done.as_str()),
        "{text}"
    );
    assert_eq!(after.cells.len(), 4);
    assert!(
        after
            .cells
            .iter()
            .all(|c| c.state == DONE && c.result.is_some()),
        "{:?}",
        after.cells
    );
    // Every result acknowledged before the kill is still there, unchanged.
    for c in before.cells.iter().filter(|c| c.state == DONE) {
        let same = after
            .cells
            .iter()
            .find(|a| a.cell_id == c.cell_id)
            .expect("cell");
        assert_eq!(
            same.result, c.result,
            "cell {} changed across the restart",
            c.cell_id
        );
    }
    assert!(
        after.runs.iter().all(|r| r.epochs.len() == 6),
        "{:?}",
        after.runs
    );
}

/// Flaky storage under a resume: the newest checkpoint's file rots on disk while no worker holds
/// the run. The next worker is told it is corrupt, hands the run back (no penalty) and the run
/// resumes from the checkpoint before it, not from epoch 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_newest_checkpoint_resumes_from_the_one_before() {
    let c = TestCoordinator::start_with(short_leases()).await;
    let sweep = submit(&c.url, &training_sweep("corrupt-resume", 8, "")).await;
    let run_id = train_three_epochs_then_kill(&c, &sweep).await;
    let newest = c
        .store
        .latest_checkpoint(&run_id)
        .expect("ckpt")
        .expect("a checkpoint");
    std::fs::write(&newest.path, b"rotten").expect("corrupt the newest checkpoint");
    // The epoch of the newest checkpoint file left intact.
    let epoch_of =
        |name: &str| -> Option<u32> { name.strip_prefix("epoch-")?.get(..5)?.parse().ok() };
    let intact = std::fs::read_dir(c.store.artifacts_dir(&run_id))
        .expect("artifacts")
        .flatten()
        .filter(|e| e.path() != newest.path)
        .filter_map(|e| epoch_of(&e.file_name().to_string_lossy()))
        .max()
        .expect("an earlier checkpoint");
    assert!(intact < newest.epoch);

    let text_b = second_worker_resumes(&c, "the second worker finishes the sweep").await;
    assert!(
        text_b.contains("newest checkpoint is corrupt"),
        "worker b should notice the corrupt checkpoint:\n{text_b}"
    );
    assert!(
        text_b.contains(&format!("epochs_done={intact}")),
        "worker b should resume after epoch {intact}, the newest intact checkpoint:\n{text_b}"
    );
    assert!(
        !text_b.contains("epoch=1 "),
        "epoch 1 was retrained:\n{text_b}"
    );
    let d = c.store.sweep_detail(&typed(&sweep)).expect("detail");
    assert_eq!(
        d.summary.state,
        advsweep_coordinator::store::SweepState::Done
    );
    let outcomes: Vec<AttemptOutcome> = d.runs[0].attempts.iter().map(|x| x.outcome).collect();
    assert_eq!(
        outcomes,
        [
            AttemptOutcome::Expired,
            AttemptOutcome::Preempted,
            AttemptOutcome::Done
        ]
    );
}

/// Starts a worker on the sweep's one run, lets it train three epochs (each checkpointed
/// through the coordinator), then kills it (-9); returns the run id.
/// Sends the worker SIGTERM and waits (up to 30 s: `case` says when) for it to exit; its exit
/// status and log.
async fn sigterm_and_wait(
    w: &mut tokio::process::Child,
    case: &str,
    log: &std::path::Path,
) -> (std::process::ExitStatus, String) {
    let pid = w.id().expect("pid");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let what = format!("the worker exits within 30 s of SIGTERM{case}");
    wait_for_exit(w, Duration::from_secs(30), &what, log).await
}

async fn train_three_epochs_then_kill(c: &TestCoordinator, sweep: &str) -> RunId {
    let log_a = c.state_dir.path().join("worker-a.log");
    let mut a = spawn_worker(&c.url, &log_a, &[]);
    let run_id = poll_until(
        Duration::from_secs(120),
        Duration::from_millis(50),
        || {
            let d = c.store.sweep_detail(&typed(sweep)).expect("detail");
            (d.runs[0].epochs.len() >= 3
                && c.store
                    .latest_checkpoint(&d.runs[0].run_id)
                    .expect("ckpt")
                    .is_some_and(|k| k.epoch >= 3))
            .then(|| d.runs[0].run_id.clone())
        },
        || format!("no progress:\n{}", log_text(&log_a)),
    )
    .await;
    a.start_kill().expect("kill -9");
    let _ = a.wait().await;
    run_id
}

/// One run whose second cell is a long APGD evaluation: 300 synthetic test images in 15 batches.
fn long_cell_sweep() -> String {
    r#"
version = 1
name = "long-cell"
[data]
source = "synthetic"
train_size = 600
test_size = 300
[training]
epochs = 1
batch_size = 100
learning_rate = 0.05
[evaluation]
limit = 300
batch_size = 20
[attacks.apgd-long]
kind = "apgd"
steps = 60
[grid]
models = ["basic"]
defenses = ["standard"]
attacks = ["none", "apgd-long"]
epsilons = ["8/255"]
"#
    .to_owned()
}

/// The APGD cell's result once the sweep is done.
fn apgd_result(c: &TestCoordinator, sweep: &str) -> advsweep_core::CellResult {
    let d = c.store.sweep_detail(&typed(sweep)).expect("detail");
    assert_eq!(
        d.summary.state,
        advsweep_coordinator::store::SweepState::Done
    );
    d.cells
        .iter()
        .find(|cell| cell.attack_name == "apgd-long")
        .and_then(|cell| cell.result.clone())
        .expect("the APGD cell's result")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_cell_is_replaced_and_the_cell_resumes_after_its_stored_chunks() {
    let every_batch = ["--cell-progress-interval", "0"];
    let c = TestCoordinator::start_with(short_leases()).await;
    let sweep = submit(&c.url, &long_cell_sweep()).await;
    let log_a = c.state_dir.path().join("worker-a.log");
    let mut a = spawn_worker(&c.url, &log_a, &every_batch);
    // Three chunks of the APGD cell reported: the worker is well inside the cell.
    poll_until(
        Duration::from_secs(180),
        Duration::from_millis(50),
        || {
            let text = log_text(&log_a);
            let apgd_chunks = text
                .lines()
                .filter(|l| l.contains("attack=apgd-long") && l.contains("cell chunk done"))
                .count();
            (apgd_chunks >= 3).then_some(())
        },
        || format!("no chunk of the APGD cell:\n{}", log_text(&log_a)),
    )
    .await;
    a.start_kill().expect("kill -9");
    let _ = a.wait().await;

    let log_b = c.state_dir.path().join("worker-b.log");
    let mut b = spawn_worker(
        &c.url,
        &log_b,
        &[&every_batch[..], &["--exit-when-idle"]].concat(),
    );
    let (status, text_b) = wait_for_exit(
        &mut b,
        Duration::from_secs(300),
        "worker b finishes",
        &log_b,
    )
    .await;
    assert!(status.success(), "{text_b}");
    let resumed = text_b
        .lines()
        .find(|l| l.contains("attack=apgd-long") && l.contains("resuming the cell"))
        .unwrap_or_else(|| panic!("worker b resumed the APGD cell:\n{text_b}"));
    let images_done: u32 = resumed
        .split("images_done=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("images_done in {resumed}"));
    assert!(
        images_done >= 20 && images_done % 20 == 0 && images_done < 300,
        "{resumed}"
    );
    // The stored batches were not evaluated again.
    assert!(
        !text_b.lines().any(|l| l.contains("attack=apgd-long")
            && l.contains("cell chunk done")
            && l.contains(&format!("images_done={images_done} "))),
        "{text_b}"
    );
    let interrupted = apgd_result(&c, &sweep);

    // The same sweep, uninterrupted, on a fresh coordinator: the same numbers.
    let fresh = TestCoordinator::start_with(short_leases()).await;
    let sweep2 = submit(&fresh.url, &long_cell_sweep()).await;
    let log_c = fresh.state_dir.path().join("worker-c.log");
    let mut w = spawn_worker(&fresh.url, &log_c, &["--exit-when-idle"]);
    let (status, text_c) = wait_for_exit(
        &mut w,
        Duration::from_secs(300),
        "the uninterrupted sweep",
        &log_c,
    )
    .await;
    assert!(status.success(), "{text_c}");
    let whole = apgd_result(&fresh, &sweep2);
    assert_eq!(
        (
            interrupted.accuracy,
            interrupted.attack_success_rate,
            interrupted.mean_linf,
            interrupted.mean_l2
        ),
        (
            whole.accuracy,
            whole.attack_success_rate,
            whole.mean_linf,
            whole.mean_l2
        ),
        "a resumed cell gives the uninterrupted result"
    );
    assert_eq!(interrupted.examples, 300);
}
