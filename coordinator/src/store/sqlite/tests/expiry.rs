//! Lost workers and a run's budgets (issue 18): expired leases are counted apart from reported
//! errors, with a larger budget of their own, and a run is failed as poisonous only when its
//! attempts died on several distinct workers.

use std::time::Duration;

use advsweep_core::{AttemptOutcome, ShownState};

use super::{SWEEP, grant, plan, store, worker};
use crate::scheduler::LeaseSettings;
use crate::store::{LeaseOutcome, SweepState};

/// One run (`max_attempts = 1`), leases that expire at once, no back-off.
fn setup() -> (String, LeaseSettings) {
    let text = SWEEP.replace(r#"["standard", "at-fgsm"]"#, r#"["standard"]"#)
        + "\n[retry]\nmax_attempts = 1\n";
    let settings = LeaseSettings {
        lease_ttl: Duration::from_millis(1),
        retry_base: Duration::ZERO,
        max_expiries: 4,
        ..LeaseSettings::default()
    };
    (text, settings)
}

#[tokio::test]
async fn one_lost_node_does_not_use_up_the_error_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (text, settings) = setup();
    let s = store(&dir, settings);
    let p = plan(&text);
    s.submit(p.clone(), text.clone()).await.expect("submit");
    let w = s
        .register_worker(worker(
            "flaky".into(),
            "h".into(),
            "cpu".into(),
            1,
            "t".into(),
        ))
        .await
        .expect("w");
    // The same node loses the run three times: each expiry is retried, though the sweep
    // allows a single failed attempt.
    for attempt in 1..=4u32 {
        let g = grant(&s, &w).await;
        assert_eq!(g.attempt, attempt);
        std::thread::sleep(Duration::from_millis(5));
        s.expire_leases().await.expect("expiry");
    }
    // The fourth expiry used up max_expiries = 4.
    let d = s.sweep_detail(&p.sweep_id).await.expect("detail");
    assert_eq!(d.summary.state, SweepState::Failed);
    let error = d.runs[0].error.clone().unwrap_or_default();
    assert!(error.contains("after 4 expired leases"), "{error}");
    assert!(
        d.runs[0]
            .attempts
            .iter()
            .all(|a| a.outcome == AttemptOutcome::Expired)
    );
}

#[tokio::test]
async fn a_run_that_dies_on_three_workers_is_poisonous() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (text, settings) = setup();
    let s = store(&dir, settings);
    let p = plan(&text);
    s.submit(p.clone(), text.clone()).await.expect("submit");
    let mut workers = Vec::new();
    for name in ["a", "b", "c"] {
        workers.push(
            s.register_worker(worker(name.into(), "h".into(), "cpu".into(), 1, "t".into()))
                .await
                .expect("register"),
        );
    }
    for (i, w) in workers.iter().enumerate() {
        let g = grant(&s, w).await;
        assert_eq!(g.attempt as usize, i + 1);
        std::thread::sleep(Duration::from_millis(5));
        s.expire_leases().await.expect("expiry");
        let d = s.sweep_detail(&p.sweep_id).await.expect("detail");
        let shown = d.runs[0].state;
        if i < 2 {
            assert_ne!(shown, ShownState::Failed, "after {} lost workers", i + 1);
        } else {
            assert_eq!(shown, ShownState::Failed);
            let error = d.runs[0].error.clone().unwrap_or_default();
            assert!(error.contains("3 different workers"), "{error}");
        }
    }
    assert!(matches!(
        s.lease(workers[0].clone(), None).await.expect("lease"),
        LeaseOutcome::Idle
    ));
    // A retry gives the run fresh budgets: the next loss is retried again.
    s.retry(&p.sweep_id, &[], false).await.expect("retry");
    let g = grant(&s, &workers[0]).await;
    std::thread::sleep(Duration::from_millis(5));
    s.expire_leases().await.expect("expiry");
    let d = s.sweep_detail(&p.sweep_id).await.expect("detail");
    assert_eq!(d.runs[0].attempt, g.attempt);
    assert_ne!(d.runs[0].state, ShownState::Failed);
}
