//! A network partition between a worker and the coordinator, with real network namespaces
//! (root + iproute2; skipped with a message elsewhere): the cut-off worker's lease expires and
//! the run moves to another worker, which resumes from the last checkpoint; when the link
//! heals, the old worker's late reports are rejected and every cell has exactly one result.

use advsweep_coordinator::store::StateStore;
use advsweep_core::AttemptOutcome;
use std::process::{Command, Stdio};
use std::time::Duration;

use advsweep_coordinator::store::SweepState;
use advsweep_tests::{
    TestCoordinator, log_text, poll_until, second_worker_resumes, short_leases, spawn_worker_via,
    submit, training_sweep, typed,
};

/// A namespace joined to the host by a veth pair; removed on drop.
struct Netns {
    name: String,
    host_if: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Netns {
    fn create(host_ip: &str, ns_ip: &str) -> Option<Netns> {
        let id = std::process::id() % 100_000;
        let n = Netns {
            name: format!("advsweep{id}"),
            host_if: format!("avh{id}"),
        };
        let peer = format!("avn{id}");
        let ok = ip(&["netns", "add", &n.name])
            && ip(&[
                "link", "add", &n.host_if, "type", "veth", "peer", "name", &peer,
            ])
            && ip(&["link", "set", &peer, "netns", &n.name])
            && ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &n.host_if])
            && ip(&["link", "set", &n.host_if, "up"])
            && ip(&[
                "netns",
                "exec",
                &n.name,
                "ip",
                "addr",
                "add",
                &format!("{ns_ip}/24"),
                "dev",
                &peer,
            ])
            && ip(&["netns", "exec", &n.name, "ip", "link", "set", &peer, "up"])
            && ip(&["netns", "exec", &n.name, "ip", "link", "set", "lo", "up"]);
        if ok { Some(n) } else { None }
    }

    fn link(&self, up: bool) {
        assert!(ip(&[
            "link",
            "set",
            &self.host_if,
            if up { "up" } else { "down" }
        ]));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        ip(&["link", "del", &self.host_if]);
        ip(&["netns", "del", &self.name]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_worker_loses_its_lease_and_its_late_reports_are_rejected() {
    let (host_ip, ns_ip) = ("10.213.7.1", "10.213.7.2");
    let Some(ns) = Netns::create(host_ip, ns_ip) else {
        eprintln!("SKIPPED: cannot create a network namespace here (needs root and iproute2)");
        return;
    };
    let c = TestCoordinator::start_on(&format!("{host_ip}:0"), short_leases()).await;
    let sweep = submit(&c.url, &training_sweep("partition", 10, "")).await;

    // Worker A lives in the namespace, on the far side of the veth link.
    let log_a = c.state_dir.path().join("worker-a.log");
    let mut a = spawn_worker_via(
        &["ip", "netns", "exec", &ns.name],
        &c.url,
        &log_a,
        &["--exit-when-idle"],
    );
    poll_until(
        Duration::from_secs(120),
        Duration::from_millis(50),
        || {
            (c.store.sweep_detail(&typed(&sweep)).expect("detail").runs[0]
                .epochs
                .len()
                >= 2)
                .then_some(())
        },
        || format!("no progress:\n{}", log_text(&log_a)),
    )
    .await;
    ns.link(false); // the partition
    // The lease expires and the run is re-queued.
    poll_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let d = c.store.sweep_detail(&typed(&sweep)).expect("detail");
            d.runs[0]
                .attempts
                .iter()
                .any(|x| x.outcome == AttemptOutcome::Expired)
                .then_some(())
        },
        || "the partitioned lease never expired".to_owned(),
    )
    .await;
    // Worker B, on the host, takes the run over and finishes the sweep.
    second_worker_resumes(&c, "worker b finishes").await;

    // Heal the link: A's late reports reach the coordinator and are refused.
    ns.link(true);
    let _ = tokio::time::timeout(Duration::from_secs(90), a.wait()).await;
    let text_a = log_text(&log_a);
    assert!(
        text_a.contains("lease lost"),
        "worker a never learned it lost the lease:\n{text_a}"
    );

    let d = c.store.sweep_detail(&typed(&sweep)).expect("detail");
    assert_eq!(d.summary.state, SweepState::Done);
    assert_eq!(d.summary.cells.done, 2);
    assert!(d.cells.iter().all(|cell| cell.result.is_some()));
    let outcomes: Vec<AttemptOutcome> = d.runs[0].attempts.iter().map(|x| x.outcome).collect();
    assert_eq!(outcomes, [AttemptOutcome::Expired, AttemptOutcome::Done]);
}
