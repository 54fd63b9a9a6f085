//! The state machine end to end: the scheduler's rules over a real SQLite file.

use std::time::Duration;

use advsweep_core::{
    AttemptOutcome, CellId, CellResult, CellState, EpochMetrics, LeaseId, ShownState, SweepId,
};

use super::{SWEEP, cells_of, grant, lease_ref, plan, result, store, worker};
use crate::scheduler::LeaseSettings;
use crate::store::{FailOutcome, LeaseOutcome, LeaseRef, StoreError, SweepState};

#[tokio::test]
async fn a_sweep_runs_to_done_and_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plan(SWEEP);
    {
        let s = store(&dir, LeaseSettings::default());
        let out = s
            .submit(p.clone(), SWEEP.to_string())
            .await
            .expect("submit");
        assert_eq!((out.runs, out.cells, out.cells_already_done), (2, 4, 0));
        let w = s
            .register_worker(worker(
                "w".into(),
                "host".into(),
                "cpu".into(),
                1,
                "test".into(),
            ))
            .await
            .expect("register");
        while let LeaseOutcome::Granted(g) = s.lease(w.clone(), None).await.expect("lease") {
            let l = lease_ref(&w, &g);
            assert!(s.heartbeat(l.clone()).await.expect("heartbeat"));
            s.report_epochs(
                l.clone(),
                vec![EpochMetrics {
                    epoch: 1,
                    train_loss: f64::NAN,
                    ..Default::default()
                }],
            )
            .await
            .expect("epochs");
            for cell in &g.cells {
                assert!(
                    s.complete_cell(l.clone(), cell.id.clone(), result(0.5))
                        .await
                        .expect("complete")
                );
                // A retried report for the same attempt is a no-op, not a duplicate.
                assert!(
                    !s.complete_cell(l.clone(), cell.id.clone(), result(0.9))
                        .await
                        .expect("again")
                );
            }
            s.complete_run(l.clone()).await.expect("run done");
            s.complete_run(l.clone()).await.expect("idempotent");
        }
        assert!(matches!(
            s.lease(w.clone(), None).await.expect("lease"),
            LeaseOutcome::Idle
        ));
    }
    // Everything acknowledged is on disk.
    let s = store(&dir, LeaseSettings::default());
    let d = s.sweep_detail(&p.sweep_id).await.expect("detail");
    assert_eq!(d.summary.state, SweepState::Done);
    assert_eq!(d.summary.cells.done, 4);
    assert!(
        d.cells
            .iter()
            .all(|c| c.result.as_ref().map(|r| r.accuracy) == Some(0.5))
    );
    assert!(
        d.runs
            .iter()
            .all(|r| r.epochs.len() == 1 && r.epochs[0].train_loss.is_nan())
    );
    // Re-submitting reuses every finished cell.
    let again = s
        .submit(p.clone(), SWEEP.to_string())
        .await
        .expect("resubmit");
    assert_eq!(again.cells_already_done, 4);
    assert!(!again.new_sweep);
    assert!(!s.has_work().await.expect("has_work"));
}

#[tokio::test]
async fn an_expired_lease_is_fenced_off_and_the_run_requeued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = LeaseSettings {
        lease_ttl: Duration::from_millis(1),
        retry_base: Duration::ZERO,
        ..LeaseSettings::default()
    };
    let s = store(&dir, settings);
    let p = plan(SWEEP);
    s.submit(p.clone(), SWEEP.to_string())
        .await
        .expect("submit");
    let a = s
        .register_worker(worker("a".into(), "h".into(), "cpu".into(), 1, "t".into()))
        .await
        .expect("a");
    let b = s
        .register_worker(worker("b".into(), "h".into(), "cpu".into(), 1, "t".into()))
        .await
        .expect("b");
    let first = grant(&s, &a).await;
    std::thread::sleep(Duration::from_millis(5));
    let old = lease_ref(&a, &first);
    assert!(
        !s.heartbeat(old.clone()).await.expect("heartbeat answers"),
        "expired lease must stop"
    );
    // The run goes to another worker under a new attempt...
    let mut second = grant(&s, &b).await;
    while second.run.id != first.run.id {
        second = grant(&s, &b).await;
    }
    assert_eq!(second.attempt, first.attempt + 1);
    // ...and the old attempt can no longer report anything.
    let cell = &first.cells[0].id;
    let err = s
        .complete_cell(old.clone(), cell.clone(), result(0.1))
        .await
        .expect_err("fenced");
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert!(matches!(
        s.complete_run(old.clone()).await,
        Err(StoreError::LeaseLost { .. })
    ));
}

#[tokio::test]
async fn failures_retry_with_backoff_then_fail_for_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = LeaseSettings {
        retry_base: Duration::ZERO,
        ..LeaseSettings::default()
    };
    let s = store(&dir, settings);
    let text = SWEEP.replace(r#"["standard", "at-fgsm"]"#, r#"["standard"]"#)
        + "\n[retry]\nmax_attempts = 2\n";
    let p = plan(&text);
    s.submit(p.clone(), text.to_string()).await.expect("submit");
    let w = s
        .register_worker(worker("w".into(), "h".into(), "cpu".into(), 1, "t".into()))
        .await
        .expect("w");
    let g = grant(&s, &w).await;
    assert!(matches!(
        s.fail_run(lease_ref(&w, &g), "CUDA OOM".into(), true)
            .await
            .expect("fail"),
        FailOutcome::RetryAt(_)
    ));
    let g2 = grant(&s, &w).await;
    assert_eq!(g2.attempt, 2);
    assert_eq!(
        s.fail_run(lease_ref(&w, &g2), "CUDA OOM".into(), true)
            .await
            .expect("fail"),
        FailOutcome::Failed
    );
    let d = s.sweep_detail(&p.sweep_id).await.expect("detail");
    assert_eq!(d.summary.state, SweepState::Failed);
    assert!(
        d.runs[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("CUDA OOM")
    );
    assert!(d.cells.iter().all(|c| c.state == ShownState::Failed));
    // Re-submitting re-opens the failed cells.
    s.submit(p.clone(), text.to_string())
        .await
        .expect("resubmit");
    assert!(matches!(
        s.lease(w.clone(), None).await.expect("lease"),
        LeaseOutcome::Granted(_)
    ));
}

#[tokio::test]
async fn a_bad_parameter_is_not_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(&dir, LeaseSettings::default());
    let p = plan(SWEEP);
    s.submit(p.clone(), SWEEP.to_string())
        .await
        .expect("submit");
    let w = s
        .register_worker(worker("w".into(), "h".into(), "cpu".into(), 1, "t".into()))
        .await
        .expect("w");
    let g = grant(&s, &w).await;
    assert_eq!(
        s.fail_run(lease_ref(&w, &g), "no such file".into(), false)
            .await
            .expect("fail"),
        FailOutcome::Failed
    );
}

#[tokio::test]
async fn cancel_stops_leased_work_and_settles_the_sweep() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(&dir, LeaseSettings::default());
    let p = plan(SWEEP);
    s.submit(p.clone(), SWEEP.to_string())
        .await
        .expect("submit");
    let w = s
        .register_worker(worker("w".into(), "h".into(), "cpu".into(), 1, "t".into()))
        .await
        .expect("w");
    let g = grant(&s, &w).await;
    assert_eq!(s.cancel(&p.sweep_id).await.expect("cancel").cells, 4);
    assert!(
        !s.heartbeat(lease_ref(&w, &g)).await.expect("heartbeat"),
        "worker must stop"
    );
    let summary = s.sweep_summary(&p.sweep_id).await.expect("summary");
    assert_eq!(summary.state, SweepState::Cancelled);
    assert!(matches!(
        s.lease(w.clone(), None).await.expect("lease"),
        LeaseOutcome::Idle
    ));
    assert!(matches!(
        s.cancel(&SweepId::new("s-0000000000000000").expect("a sweep id"))
            .await,
        Err(StoreError::SweepNotFound(_))
    ));
}

#[tokio::test]
async fn unknown_workers_and_sweeps_are_named_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(&dir, LeaseSettings::default());
    assert!(matches!(
        s.lease("w-nobody".into(), None).await,
        Err(StoreError::UnknownWorker(_))
    ));
    assert!(matches!(
        s.sweep_detail(&SweepId::new("s-0000000000000000").expect("a sweep id"))
            .await,
        Err(StoreError::SweepNotFound(_))
    ));
}

#[tokio::test]
async fn a_stored_id_of_the_wrong_shape_is_a_corrupt_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(&dir, LeaseSettings::default());
    let conn = rusqlite::Connection::open(s.store.path()).expect("open");
    conn.execute(
        "INSERT INTO sweeps (sweep_id, name, description, sweep_toml, cancelled, created_ms)
         VALUES ('s-../../etc', 'x', '', '', 0, 0)",
        [],
    )
    .expect("a corrupt sweep row");
    let err = s.list_sweeps().await.expect_err("a corrupt row");
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("\"s-../../etc\" is not a sweep id")),
        "{err}"
    );
}

#[tokio::test]
async fn preemption_is_not_a_failure_and_retry_requeues_failed_cells() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(&dir, LeaseSettings::default());
    let text = SWEEP.replace(r#"["standard", "at-fgsm"]"#, r#"["standard"]"#)
        + "\n[retry]\nmax_attempts = 1\n";
    let p = plan(&text);
    s.submit(p.clone(), text.to_string()).await.expect("submit");
    let w = s
        .register_worker(worker("w".into(), "h".into(), "cpu".into(), 1, "t".into()))
        .await
        .expect("w");
    // Preempted twice: still pending, attempts recorded, budget untouched.
    for _ in 0..2 {
        let g = grant(&s, &w).await;
        s.release_run(lease_ref(&w, &g), "SIGTERM".into())
            .await
            .expect("release");
    }
    let g = grant(&s, &w).await;
    assert_eq!(g.attempt, 3);
    // One real failure exhausts max_attempts = 1.
    assert_eq!(
        s.fail_run(lease_ref(&w, &g), "bad node".into(), true)
            .await
            .expect("fail"),
        FailOutcome::Failed
    );
    let d = s.sweep_detail(&p.sweep_id).await.expect("detail");
    let outcomes: Vec<AttemptOutcome> = d.runs[0].attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [
            AttemptOutcome::Preempted,
            AttemptOutcome::Preempted,
            AttemptOutcome::Failed
        ]
    );
    assert_eq!(d.runs[0].max_attempts, 1);
    assert_eq!(d.summary.cells.failed, 2);
    // A cell that is not failed cannot be retried by name; unknown cells are named.
    assert!(matches!(
        s.retry(
            &p.sweep_id,
            &[CellId::new("c-0000000000000000").expect("a cell id")],
            false
        )
        .await,
        Err(StoreError::Invalid(_))
    ));
    let out = s.retry(&p.sweep_id, &[], false).await.expect("retry");
    assert_eq!((out.cells, out.runs), (2, 1));
    assert!(matches!(
        s.lease(w.clone(), None).await.expect("lease"),
        LeaseOutcome::Granted(_)
    ));
}

#[tokio::test]
async fn checkpoints_are_fenced_pruned_and_offered_on_the_next_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = LeaseSettings {
        lease_ttl: Duration::from_millis(200),
        retry_base: Duration::ZERO,
        ..LeaseSettings::default()
    };
    let s = store(&dir, settings);
    let text = SWEEP.replace(r#"["standard", "at-fgsm"]"#, r#"["standard"]"#);
    let p = plan(&text);
    s.submit(p.clone(), text.to_string()).await.expect("submit");
    let w = s
        .register_worker(worker("w".into(), "h".into(), "cpu".into(), 1, "t".into()))
        .await
        .expect("w");
    let g = grant(&s, &w).await;
    assert!(g.resume_from.is_none());
    let l = lease_ref(&w, &g);
    let art = s.artifacts_dir(&g.run.id);
    std::fs::create_dir_all(&art).expect("dir");
    let mut ids = Vec::new();
    for epoch in 1..=3u32 {
        let path = art.join(format!("e{epoch}"));
        std::fs::write(&path, b"x").expect("write");
        ids.push(
            s.record_checkpoint(&l, epoch, "abc", 1, &path)
                .await
                .expect("record"),
        );
    }
    // Only the newest CHECKPOINTS_KEPT remain, on disk too.
    assert!(!art.join("e1").exists() && art.join("e3").exists());
    std::thread::sleep(Duration::from_millis(250));
    // The lease expired: the old attempt cannot add checkpoints...
    assert!(matches!(
        s.record_checkpoint(&l, 4, "abc", 1, &art.join("e4")).await,
        Err(StoreError::LeaseLost { .. })
    ));
    // ...and the next lease resumes from epoch 3.
    let g2 = grant(&s, &w).await;
    assert_eq!(g2.resume_from.as_ref().map(|c| c.epoch), Some(3));
    assert!(
        s.checkpoint(&w, &g2.run.id, &ids[2])
            .await
            .expect("lookup")
            .is_some()
    );
    assert!(matches!(
        s.checkpoint("w-stranger", &g2.run.id, &ids[2]).await,
        Err(StoreError::UnknownWorker(_))
    ));
    // A corrupt checkpoint is dropped; the previous one is offered next.
    s.drop_checkpoint(&ids[2]).await.expect("drop");
    assert_eq!(
        s.latest_checkpoint(&g2.run.id)
            .await
            .expect("latest")
            .map(|c| c.epoch),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_workers_share_commits_and_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = SWEEP.replace(
        "epsilons = [\"8/255\"]",
        "epsilons = [\"8/255\"]\nseeds = [0, 1, 2, 3, 4, 5, 6, 7]",
    );
    let p = plan(&text);
    let s = std::sync::Arc::new(store(&dir, LeaseSettings::default()));
    s.submit(p.clone(), text.to_string()).await.expect("submit");
    let reported = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (s, reported) = (std::sync::Arc::clone(&s), std::sync::Arc::clone(&reported));
            tokio::spawn(async move {
                let w = s
                    .register_worker(worker(
                        format!("w{i}"),
                        "host".into(),
                        "cpu".into(),
                        1,
                        "test".into(),
                    ))
                    .await
                    .expect("register");
                while let LeaseOutcome::Granted(g) = s.lease(w.clone(), None).await.expect("lease")
                {
                    let l = lease_ref(&w, &g);
                    for cell in &g.cells {
                        assert!(
                            s.complete_cell(l.clone(), cell.id.clone(), result(0.5))
                                .await
                                .expect("cell")
                        );
                        reported.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    s.complete_run(l).await.expect("complete");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker task");
    }
    assert_eq!(
        reported.load(std::sync::atomic::Ordering::Relaxed),
        p.cells.len()
    );
    drop(s);
    let s = store(&dir, LeaseSettings::default());
    let d = s.sweep_detail(&p.sweep_id).await.expect("detail");
    assert_eq!(d.summary.cells.done as usize, p.cells.len());
    assert!(
        d.runs
            .iter()
            .all(|r| r.state == ShownState::Done && r.attempt == 1)
    );
    // The writer commits with a full sync of the WAL.
    let (mode, sync): (String, i64) = s
        .store
        .write(|c| {
            Ok((
                c.pragma_query_value(None, "journal_mode", |r| r.get(0))?,
                c.pragma_query_value(None, "synchronous", |r| r.get(0))?,
            ))
        })
        .await
        .expect("pragmas");
    assert_eq!((mode.as_str(), sync), ("wal", 2));
}

#[tokio::test]
async fn a_lease_for_one_sweep_leaves_the_other_sweeps_runs_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(&dir, LeaseSettings::default());
    let first = plan(SWEEP);
    let other_text = SWEEP
        .replace("store-test", "other")
        .replace("\"standard\", \"at-fgsm\"", "\"at-pgd-linf\"");
    let other = plan(&other_text);
    s.submit(first.clone(), SWEEP.to_string())
        .await
        .expect("submit first");
    s.submit(other.clone(), other_text.to_string())
        .await
        .expect("submit other");
    let w = s
        .register_worker(worker(
            "w".into(),
            "host".into(),
            "cpu".into(),
            1,
            "test".into(),
        ))
        .await
        .expect("register");
    let mut leased = Vec::new();
    while let LeaseOutcome::Granted(g) = s
        .lease(w.clone(), Some(other.sweep_id.clone()))
        .await
        .expect("lease")
    {
        assert_eq!(g.sweep_id, other.sweep_id);
        leased.push(g.run.id.clone());
        s.complete_run(lease_ref(&w, &g)).await.expect("run done");
    }
    assert_eq!(leased.len(), other.runs.len());
    // That sweep is done: idle for it, though the first sweep still has work.
    assert!(matches!(
        s.lease(w.clone(), Some(other.sweep_id.clone()))
            .await
            .expect("lease"),
        LeaseOutcome::Idle
    ));
    assert!(matches!(
        s.lease(
            w.clone(),
            Some(SweepId::new("s-0000000000000000").expect("a sweep id"))
        )
        .await
        .expect("unknown sweep"),
        LeaseOutcome::Idle
    ));
    let g = grant(&s, &w).await;
    assert_eq!(g.sweep_id, first.sweep_id);
}

#[tokio::test]
async fn cells_reported_together_are_stored_all_or_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(&dir, LeaseSettings::default());
    s.submit(plan(SWEEP), SWEEP.to_string())
        .await
        .expect("submit");
    let w = s
        .register_worker(worker(
            "w".into(),
            "host".into(),
            "cpu".into(),
            1,
            "test".into(),
        ))
        .await
        .expect("register");
    let g = grant(&s, &w).await;
    let l = lease_ref(&w, &g);
    let other = grant(&s, &w).await;
    assert_eq!(g.cells.len(), 2);

    // One cell of another run in the batch: refused by name, and nothing of it is stored.
    let mixed = vec![
        (g.cells[0].id.clone(), result(0.7)),
        (other.cells[0].id.clone(), result(0.6)),
    ];
    let err = s
        .complete_cells(l.clone(), mixed.clone())
        .await
        .expect_err("a foreign cell");
    assert!(
        matches!(&err, StoreError::NoSuchCell { cell_id, .. } if *cell_id == other.cells[0].id),
        "{err}"
    );
    assert!(
        cells_of(&s.store, &g.run.id)
            .iter()
            .all(|(_, state, acc)| *state == CellState::Pending && acc.is_none())
    );

    // The run's own cells: both stored, in one call; the same call again stores nothing.
    let batch: Vec<(CellId, CellResult)> = g
        .cells
        .iter()
        .zip([0.7, 0.3])
        .map(|(c, a)| (c.id.clone(), result(a)))
        .collect();
    assert_eq!(
        s.complete_cells(l.clone(), batch.clone())
            .await
            .expect("stored"),
        2
    );
    assert_eq!(
        s.complete_cells(l.clone(), batch.clone())
            .await
            .expect("a retry"),
        0
    );
    let mut expected: Vec<(CellId, CellState, Option<f64>)> = batch
        .iter()
        .map(|(id, r)| (id.clone(), CellState::Done, Some(r.accuracy)))
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(cells_of(&s.store, &g.run.id), expected);
    s.complete_run(l.clone()).await.expect("complete");

    // A lease that is gone stores nothing either.
    let stale = LeaseRef {
        lease_id: LeaseId::new("not-the-lease").expect("a lease id"),
        ..lease_ref(&w, &other)
    };
    let err = s
        .complete_cells(stale, vec![(other.cells[0].id.clone(), result(0.5))])
        .await
        .expect_err("fenced");
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert!(
        cells_of(&s.store, &other.run.id)
            .iter()
            .all(|(_, state, _)| *state == CellState::Pending)
    );
}

#[test]
fn one_process_owns_a_state_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    use crate::store::SqliteStore;
    let first = SqliteStore::open(dir.path()).expect("opens");
    let second = SqliteStore::open(dir.path()).expect_err("the directory is in use");
    let message = second.to_string();
    assert!(
        message.contains("is in use by another advsweep process")
            && message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    drop(first);
    SqliteStore::open(dir.path()).expect("free again once the owner closed it");
}
