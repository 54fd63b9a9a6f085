//! One process owns a state directory (issue 21): a second coordinator, or `advsweep run`,
//! pointed at a live coordinator's state directory is refused with a message naming the owner,
//! instead of starting and sharing it silently.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use advsweep_tests::{KillOnDrop, free_addr, text, workspace_bin};

#[test]
fn a_second_process_on_a_live_state_directory_is_refused_naming_the_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let coordinator = |listen: &str| {
        let mut c = Command::new(workspace_bin("advsweep"));
        c.args(["coordinator", "--listen", listen, "--state-dir"])
            .arg(&state);
        c
    };
    let owner = KillOnDrop(
        coordinator(&free_addr())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the first coordinator starts"),
    );
    let pid = owner.0.id();
    let lock = state.join("lock");
    let started = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.starts_with(&format!("pid {pid}"))) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the lock is never taken"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let second = coordinator(&free_addr()).output().expect("runs");
    let said = text(&second);
    assert!(!second.status.success(), "{said}");
    assert!(
        said.contains("is in use by another advsweep process")
            && said.contains(&format!("pid {pid}:"))
            && said.contains("coordinator"),
        "{said}"
    );

    let sweep = dir.path().join("sweep.toml");
    std::fs::write(
        &sweep,
        "version = 1\nname = \"lock\"\n[data]\nsource = \"synthetic\"\n\
         [grid]\nmodels = [\"basic\"]\ndefenses = [\"standard\"]\nattacks = [\"none\"]\n\
         epsilons = [0.0]\n",
    )
    .expect("sweep file");
    let run = Command::new(workspace_bin("advsweep"))
        .arg("run")
        .arg(&sweep)
        .arg("--state-dir")
        .arg(&state)
        .env("ADVSWEEP_WORKER_BIN", workspace_bin("advsweep-worker"))
        .output()
        .expect("runs");
    let said = text(&run);
    assert!(!run.status.success(), "{said}");
    assert!(said.contains(&format!("pid {pid}:")), "{said}");

    // Once the owner is gone (even killed), the directory is free again.
    drop(owner);
    let mut again = KillOnDrop(
        coordinator(&free_addr())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts"),
    );
    let pid = again.0.id();
    let started = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.starts_with(&format!("pid {pid}"))) {
        assert!(
            again.0.try_wait().expect("status").is_none(),
            "the coordinator exited on a free state directory"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the lock is never taken"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
