//! `advsweep run` as a user types it: embedded coordinator, two local worker processes over
//! TCP, and the results table at the end; a second run reuses every finished cell.

use advsweep_core::{AttemptOutcome, ShownState};
use std::path::Path;
use std::process::Command;

use advsweep_tests::{long_sweep, workspace_bin};

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

/// `advsweep run FILE` as a user types it: `workers` local worker processes on the CPU (one
/// thread each), the state in `state`, the workers from this build.
fn advsweep_run(file: &Path, workers: u32, state: &Path) -> Command {
    let mut command = Command::new(workspace_bin("advsweep"));
    command
        .arg("run")
        .arg(file)
        .args(["--workers", &workers.to_string()])
        .args(["--threads", "1", "--device", "cpu"])
        .arg("--state-dir")
        .arg(state)
        .env("ADVSWEEP_WORKER_BIN", workspace_bin("advsweep-worker"));
    command
}

#[test]
fn advsweep_run_prints_the_results_table_and_reuses_finished_cells() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("sweep.toml");
    std::fs::write(&file, SWEEP).expect("write sweep");
    let state = dir.path().join("state");
    let run = || {
        advsweep_run(&file, 2, &state)
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

    export_weights_load_strictly_in_pytorch(dir.path(), &state);
}

/// `advsweep export weights` writes each run's weights as a plain state_dict that the
/// documented PyTorch example (docs/CHECKPOINTS.md) loads with a strict `load_state_dict`,
/// and the resolved spec beside it; the stored checkpoints themselves hold resume-only keys.
fn export_weights_load_strictly_in_pytorch(dir: &Path, state: &Path) {
    let out_dir = dir.join("weights");
    let out = Command::new(workspace_bin("advsweep"))
        .args(["export", "weights", "cli-run", "--out"])
        .arg(&out_dir)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("advsweep export runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let standard = out_dir.join("basic-standard-s0.safetensors");
    let adversarial = out_dir.join("basic-at-fgsm-eps8_255-s0.safetensors");
    for f in [&standard, &adversarial] {
        assert!(f.is_file(), "{} missing; export said {stdout}", f.display());
    }
    let about: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("basic-at-fgsm-eps8_255-s0.json")).expect("json"),
    )
    .expect("json parses");
    assert_eq!(
        about["spec"]["defense"]["method"]["kind"], "adversarial",
        "{about}"
    );
    assert_eq!(about["epoch"], 1);
    // The docs' example, verbatim but for the paths.
    let python = std::env::var_os("ADVSWEEP_TORCH_PYTHON")
        .expect("ADVSWEEP_TORCH_PYTHON (source scripts/env.sh): the export is checked in PyTorch");
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../worker/tests/reference");
    let script = format!(
        r#"
import safetensors.torch
import sys; sys.path.insert(0, {reference:?})
from models import build
for path in sys.argv[1:]:
    model = build("basic")
    model.load_state_dict(safetensors.torch.load_file(path))   # strict=True
    model.eval()
    print("loaded", path)
"#,
        reference = reference.display().to_string()
    );
    let loaded = Command::new(python)
        .arg("-c")
        .arg(&script)
        .arg(&standard)
        .arg(&adversarial)
        .output()
        .expect("python runs");
    assert!(
        loaded.status.success(),
        "strict load_state_dict failed:\n{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    // A mistyped sweep or run is named.
    let bad = Command::new(workspace_bin("advsweep"))
        .args([
            "export",
            "weights",
            "cli-run",
            "--run",
            "r-0000000000000000",
            "--out",
        ])
        .arg(&out_dir)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--run r-0000000000000000: no such run"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn ctrl_c_hands_the_runs_back_as_preempted() {
    use advsweep_coordinator::store::{SqliteStore, StateStore};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("long.toml");
    std::fs::write(&file, long_sweep(300)).expect("write sweep");
    let state = dir.path().join("state");
    let child = advsweep_run(&file, 1, &state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("advsweep runs");
    // Wait until the worker is training.
    wait_for_training(&state);
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let started = Instant::now();
    let out = child.wait_with_output().expect("exit");
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "took {:?} to stop",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "128 + SIGINT: {stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    // The run was handed back as preempted, not failed, and is ready for the next `run`.
    let store = SqliteStore::open(&state).expect("state opens");
    let sweeps = store.list_sweeps().expect("list");
    let detail = store.sweep_detail(&sweeps[0].sweep_id).expect("detail");
    assert_eq!(
        detail.runs[0].state,
        ShownState::Pending,
        "{:?}",
        detail.runs[0]
    );
    assert_eq!(
        detail.runs[0].attempts[0].outcome,
        AttemptOutcome::Preempted
    );
    // `status` says the handed-back attempt cost the run nothing.
    drop(store);
    let status = Command::new(workspace_bin("advsweep"))
        .args(["status", sweeps[0].sweep_id.as_str(), "--state-dir"])
        .arg(&state)
        .output()
        .expect("advsweep status runs");
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(
        stdout.contains(": preempted, handed back: not counted"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// `run` killed outright (SIGKILL: no chance to stop its workers) leaves no worker behind: each
/// notices that its parent is gone and stops as on SIGTERM, finds the embedded coordinator gone
/// with `run`, and exits once its shutdown grace is over (2 s here, from `--config`).
#[test]
fn workers_do_not_outlive_a_killed_run() {
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("long.toml");
    std::fs::write(&file, long_sweep(300)).expect("write sweep");
    let config = dir.path().join("advsweep.toml");
    std::fs::write(&config, "[worker]\nshutdown_grace_s = 2\n").expect("write config");
    let state = dir.path().join("state");
    let mut child = advsweep_run(&file, 1, &state)
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("advsweep runs");
    let log = wait_for_training(&state);
    let workers = children_named(child.id(), "advsweep-worker");
    assert_eq!(workers.len(), 1, "one local worker: {workers:?}");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let deadline = Instant::now() + Duration::from_secs(60);
    while workers.iter().any(|&pid| running(pid)) {
        assert!(
            Instant::now() < deadline,
            "the worker still runs 60 s after `run` was killed:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("the process that started this worker exited"),
        "{text}"
    );
    assert!(
        text.contains("not stopped and handed back within the shutdown grace"),
        "{text}"
    );
}

/// Waits (up to 2 minutes) until `advsweep run`'s first local worker has trained an epoch;
/// returns its log's path.
fn wait_for_training(state: &Path) -> std::path::PathBuf {
    use std::time::{Duration, Instant};
    let log = state.join("logs/worker-0.log");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("epoch done")
    {
        assert!(Instant::now() < deadline, "no epoch within 2 minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
    log
}

/// The processes whose parent is `parent` and whose name is `name`.
fn children_named(parent: u32, name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // `pid (comm) state ppid …`: the name may hold spaces, so split at the last ')'.
            let Some((head, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let comm = head.split_once('(').map_or("", |(_, c)| c);
            let ppid = rest
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok());
            comm == name && ppid == Some(parent)
        })
        .collect()
}

/// Whether process `pid` still runs (gone, or a zombie nobody reaped yet: not).
fn running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// A state directory holding another unfinished sweep: `advsweep run FILE` trains FILE's runs
/// only and leaves the other sweep's work untouched (its local workers lease by sweep).
#[test]
fn advsweep_run_leaves_other_sweeps_in_the_state_dir_alone() {
    use advsweep_coordinator::store::{SqliteStore, StateStore};
    use advsweep_coordinator::sweep::{Overrides, expand, parse_sweep};

    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let other_text = SWEEP
        .replace("cli-run", "someone-elses")
        .replace("\"standard\", \"at-fgsm\"", "\"at-pgd-linf\"");
    let other = expand(
        &parse_sweep(&other_text, "other.toml").expect("parses"),
        &Overrides::default(),
        "other.toml",
    )
    .expect("expands");
    {
        let store = SqliteStore::open(&state).expect("store");
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(store.submit(other.clone(), other_text.clone()))
            .expect("submit the other sweep");
    }
    let file = dir.path().join("sweep.toml");
    std::fs::write(&file, SWEEP).expect("write sweep");
    let out = advsweep_run(&file, 2, &state)
        .output()
        .expect("advsweep runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(": done (4 cells done, 0 failed)"),
        "{stdout}"
    );

    let store = SqliteStore::open(&state).expect("store");
    let detail = store.sweep_detail(&other.sweep_id).expect("other sweep");
    assert!(
        detail
            .runs
            .iter()
            .all(|r| r.state == ShownState::Pending && r.attempt == 0),
        "the other sweep's runs were touched: {:?}",
        detail.runs
    );
}

#[test]
fn zero_workers_and_a_bare_listen_port_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("sweep.toml");
    std::fs::write(&file, SWEEP).expect("write sweep");
    let state = dir.path().join("state");
    let out = Command::new(workspace_bin("advsweep"))
        .arg("run")
        .arg(&file)
        .args(["--workers", "0", "--state-dir"])
        .arg(&state)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("0 is not in 1..=256"), "{stderr}");
    assert!(!state.exists(), "nothing started");

    let out = Command::new(workspace_bin("advsweep"))
        .args(["coordinator", "--listen", "56074", "--state-dir"])
        .arg(&state)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("listen = `56074` is not an address") && !stderr.contains("WARN"),
        "the address is the first thing said: {stderr}"
    );
}

#[test]
fn status_and_report_read_the_state_directory_after_run_has_ended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("sweep.toml");
    std::fs::write(&file, SWEEP).expect("write sweep");
    // Where `advsweep run` writes by default, so that the commands find it on their own.
    let state = dir.path().join("advsweep-state");
    let out = advsweep_run(&file, 1, &state)
        .output()
        .expect("advsweep runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let advsweep = |args: &[&str]| {
        Command::new(workspace_bin("advsweep"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("ADVSWEEP_COORDINATOR")
            .env_remove("ADVSWEEP_CONFIG")
            .output()
            .expect("advsweep runs")
    };
    // No coordinator runs any more: ./advsweep-state is read, and the user is told so.
    let report = advsweep(&["report", "cli-run", "--out", "report", "--no-plots"]);
    let stderr = String::from_utf8_lossy(&report.stderr);
    assert!(report.status.success(), "{stderr}");
    assert!(
        stderr.contains("reading ./advsweep-state instead"),
        "{stderr}"
    );
    assert!(dir.path().join("report/cells.csv").is_file());
    assert!(String::from_utf8_lossy(&report.stdout).contains("| fgsm   | 8/255 |"));

    // With figures: each as SVG, PNG and a vector PDF that a strict parser reads, its text
    // (ε, ℓ∞ included) searchable.
    let figures = advsweep(&["report", "cli-run", "--out", "figures"]);
    assert!(
        figures.status.success(),
        "{}",
        String::from_utf8_lossy(&figures.stderr)
    );
    let pdf = dir
        .path()
        .join("figures/accuracy_vs_epsilon-basic-standard.pdf");
    for ext in ["svg", "png"] {
        assert!(pdf.with_extension(ext).is_file(), "{ext} beside the PDF");
    }
    let python = std::env::var_os("ADVSWEEP_TORCH_PYTHON")
        .expect("ADVSWEEP_TORCH_PYTHON (source scripts/env.sh): PDFs are checked with pypdf");
    let read = Command::new(python)
        .args([
            "-c",
            "import sys, pypdf; r = pypdf.PdfReader(sys.argv[1], strict=True); \
             p = r.pages[0]; print(len(r.pages), [float(v) for v in p.mediabox]); \
             print(p.extract_text())",
        ])
        .arg(&pdf)
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(&read.stdout);
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    // One page of the default 9 × 5 inches (648 × 360 pt).
    assert!(text.starts_with("1 [0.0, 0.0, 648.0, 360.0]"), "{text}");
    assert!(
        text.contains("basic / standard: accuracy vs ε") && text.contains("ℓ∞ budget ε"),
        "{text}"
    );

    // --state-dir names it explicitly; status --json reads the same cells.
    let status = advsweep(&[
        "status",
        "cli-run",
        "--json",
        "--state-dir",
        "advsweep-state",
    ]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(json["cells"].as_array().map(Vec::len), Some(4), "{json}");

    // A directory without state is named, exit 2.
    let none = advsweep(&["status", "--state-dir", "nowhere"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("nowhere holds no advsweep state"));
}
