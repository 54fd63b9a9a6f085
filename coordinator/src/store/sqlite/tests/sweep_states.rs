//! A sweep's states under cancel, retry and resume, two sweeps sharing every run included
//! (ARCHITECTURE.md, "State machines"): each transition as `advsweep` users see it.

use advsweep_core::{EpochMetrics, SweepId};

use super::{Harness, SWEEP, lease_ref, plan, result, store, worker};
use crate::scheduler::LeaseSettings;
use crate::store::{LeaseOutcome, SweepState};

async fn state(s: &Harness, sweep_id: &SweepId) -> SweepState {
    s.sweep_summary(sweep_id).await.expect("summary").state
}

/// Leases and finishes every run that has work.
async fn finish_everything(s: &Harness) {
    let w = s
        .register_worker(worker("w".into(), "h".into(), "cpu".into(), 1, "t".into()))
        .await
        .expect("w");
    while let LeaseOutcome::Granted(g) = s.lease(w.clone(), None).await.expect("lease") {
        let l = lease_ref(&w, &g);
        s.report_epochs(
            l.clone(),
            vec![EpochMetrics {
                epoch: 1,
                ..Default::default()
            }],
        )
        .await
        .expect("epochs");
        for cell in &g.cells {
            s.complete_cell(l.clone(), cell.id.clone(), result(0.5))
                .await
                .expect("complete");
        }
        s.complete_run(l).await.expect("run done");
    }
}

#[tokio::test]
async fn cancel_retry_and_resume_with_a_second_sweep_sharing_every_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(&dir, LeaseSettings::default());
    let a = plan(SWEEP);
    let b_text = SWEEP.replace("store-test", "sharing");
    let b = plan(&b_text);
    s.submit(a.clone(), SWEEP.to_string()).await.expect("a");
    s.submit(b.clone(), b_text.clone()).await.expect("b");
    let cells = u32::try_from(a.cells.len()).expect("few");
    let runs = u32::try_from(a.runs.len()).expect("few");
    assert_eq!(state(&s, &a.sweep_id).await, SweepState::Running);

    // Cancelling A cancels nothing B needs: every cell keeps running for B, and says so.
    let out = s.cancel(&a.sweep_id).await.expect("cancel a");
    assert_eq!((out.cells, out.shared), (0, cells));
    assert_eq!(state(&s, &a.sweep_id).await, SweepState::Cancelled);
    assert_eq!(state(&s, &b.sweep_id).await, SweepState::Running);

    // A retry with nothing failed changes nothing: A stays cancelled.
    let out = s.retry(&a.sweep_id, &[], false).await.expect("retry a");
    assert_eq!((out.cells, out.runs), (0, 0));
    assert_eq!(state(&s, &a.sweep_id).await, SweepState::Cancelled);

    // Cancelling B too stops the work: every cell cancelled, none shared any more.
    let out = s.cancel(&b.sweep_id).await.expect("cancel b");
    assert_eq!((out.cells, out.shared), (cells, 0));
    for id in [&a.sweep_id, &b.sweep_id] {
        assert_eq!(state(&s, id).await, SweepState::Cancelled);
        // Retrying failed cells of a sweep with only cancelled ones: nothing, still cancelled
        // (it used to read as done).
        let out = s.retry(id, &[], false).await.expect("retry");
        assert_eq!(out.cells, 0);
        assert_eq!(state(&s, id).await, SweepState::Cancelled);
    }
    assert!(!s.has_work().await.expect("has_work"));

    // Resuming A re-queues every cancelled cell and run: A runs; B, still cancelled, shows
    // its shared cells running.
    let out = s.retry(&a.sweep_id, &[], true).await.expect("resume a");
    assert_eq!((out.cells, out.runs), (cells, runs));
    assert_eq!(state(&s, &a.sweep_id).await, SweepState::Running);
    assert_eq!(state(&s, &b.sweep_id).await, SweepState::Cancelled);
    // Resuming again: nothing left to resume, nothing changes.
    assert_eq!(
        s.retry(&a.sweep_id, &[], true).await.expect("again").cells,
        0
    );

    // The work finishes: A is done, and so is B, whose every result now exists.
    finish_everything(&s).await;
    assert_eq!(state(&s, &a.sweep_id).await, SweepState::Done);
    assert_eq!(state(&s, &b.sweep_id).await, SweepState::Done);
    let out = s
        .cancel(&a.sweep_id)
        .await
        .expect("cancel a finished sweep");
    assert_eq!((out.cells, out.shared), (0, 0));
    assert_eq!(
        state(&s, &a.sweep_id).await,
        SweepState::Done,
        "cancelling finished work leaves it done"
    );
}

#[tokio::test]
async fn a_cancelled_sweep_with_unshared_cells_resumes_after_a_partial_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(&dir, LeaseSettings::default());
    let a = plan(SWEEP);
    s.submit(a.clone(), SWEEP.to_string()).await.expect("a");
    let cells = u32::try_from(a.cells.len()).expect("few");
    assert_eq!(s.cancel(&a.sweep_id).await.expect("cancel").cells, cells);
    let d = s.sweep_detail(&a.sweep_id).await.expect("detail");
    assert_eq!(d.summary.cells.cancelled, cells);
    // Resubmitting the same file also resumes it.
    s.submit(a.clone(), SWEEP.to_string())
        .await
        .expect("resubmit");
    assert_eq!(state(&s, &a.sweep_id).await, SweepState::Running);
    finish_everything(&s).await;
    assert_eq!(state(&s, &a.sweep_id).await, SweepState::Done);
}
