//! `advsweep run` as a user types it: embedded coordinator, two local worker processes over
//! TCP, and the results table at the end; a second run reuses every finished cell.

use std::process::Command;

use advsweep_tests::workspace_bin;

const SWEEP: &str = r#"
version = 1
name = "cli-run"
[data]
source = "synthetic"
train_size = 1000
test_size = 200
[training]
epochs = 1
batch_size = 100
[evaluation]
limit = 200
[grid]
models = ["basic"]
defenses = ["standard", "at-fgsm"]
attacks = ["none", "fgsm"]
epsilons = ["8/255"]
"#;

#[test]
fn advsweep_run_prints_the_results_table_and_reuses_finished_cells() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("sweep.toml");
    std::fs::write(&file, SWEEP).expect("write sweep");
    let state = dir.path().join("state");
    let run = || {
        Command::new(workspace_bin("advsweep"))
            .arg("run")
            .arg(&file)
            .args(["--workers", "2", "--threads", "1", "--device", "cpu"])
            .arg("--state-dir")
            .arg(&state)
            .env("ADVSWEEP_WORKER_BIN", workspace_bin("advsweep-worker"))
            .output()
            .expect("advsweep runs")
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("| attack | ε     | basic/standard | basic/at-fgsm |"),
        "{stdout}"
    );
    assert!(stdout.contains("| fgsm   | 8/255 |"), "{stdout}");
    assert!(
        stdout.contains(": done (4 cells done, 0 failed)"),
        "{stdout}"
    );
    assert!(state.join("state.sqlite").is_file());
    assert!(state.join("logs/worker-0.log").is_file());

    let again = run();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(stderr.contains("(4 already done, reused)"), "{stderr}");
}
