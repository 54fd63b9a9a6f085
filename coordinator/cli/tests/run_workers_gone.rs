//! `advsweep run` when its workers die: it stops and says so (after giving the progress stream
//! a moment, since workers also exit, normally, the moment a sweep is done), exits non-zero,
//! and leaves the sweep in its state directory for the next `advsweep run` to resume.

use std::process::Command;

#[test]
fn run_stops_with_a_clear_error_when_every_worker_exits_early() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let out = Command::new(env!("CARGO_BIN_EXE_advsweep"))
        .args([
            "run",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../sweeps/quickstart.toml"),
            "--workers",
            "2",
            "--state-dir",
        ])
        .arg(&state)
        .args(["--worker-bin", "/bin/false"])
        .output()
        .expect("advsweep runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("all workers exited before the sweep finished"),
        "{stderr}"
    );
    assert!(
        state.join("state.sqlite").exists(),
        "the submitted sweep stays in the state directory"
    );
}
