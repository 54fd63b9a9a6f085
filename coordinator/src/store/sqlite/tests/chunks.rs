//! Long cells' chunks (issue 19): stored durably under the lease, contiguous, offered on the
//! next lease of the run, and dropped once the cell's result is stored.

use std::time::Duration;

use advsweep_core::CellChunk;

use super::{SWEEP, grant, lease_ref, plan, result, store, worker};
use crate::scheduler::LeaseSettings;
use crate::store::StoreError;

fn chunk(start: u32, images: u32) -> CellChunk {
    CellChunk {
        start,
        images,
        adversarial_correct: images / 2,
        clean_correct: images,
        flipped: images / 2,
        linf_sum: 0.03 * f64::from(images),
        l2_sum: 1.0,
        stage_robust: vec![],
        seconds: 1.0,
        rng_state: u64::from(start) * 7 + 1,
    }
}

#[tokio::test]
async fn chunks_are_kept_in_order_offered_on_the_next_lease_and_dropped_when_the_cell_is_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = SWEEP.replace(r#"["standard", "at-fgsm"]"#, r#"["standard"]"#);
    let settings = LeaseSettings {
        lease_ttl: Duration::from_millis(50),
        retry_base: Duration::ZERO,
        ..LeaseSettings::default()
    };
    let s = store(&dir, settings);
    s.submit(plan(&text), text.clone()).await.expect("submit");
    let new_worker = |name: &str| worker(name.into(), "h".into(), "cpu".into(), 1, "t".into());
    let a = s.register_worker(new_worker("a")).await.expect("a");
    let g = grant(&s, &a).await;
    let lease = lease_ref(&a, &g);
    let cell = g.cells.last().expect("a cell").id.clone();
    assert!(g.progress.is_empty(), "a fresh run has no progress");

    let stored =
        |start, images| s.report_cell_chunk(lease.clone(), cell.clone(), chunk(start, images));
    assert!(stored(0, 100).await.expect("first chunk"));
    assert!(
        !stored(0, 100).await.expect("a retried call"),
        "stored once"
    );
    assert!(stored(100, 50).await.expect("the next one"));
    let gap = stored(200, 50).await.expect_err("a gap");
    assert!(
        matches!(&gap, StoreError::Invalid(m) if m.contains("chunk.start") && m.contains("150")),
        "{gap}"
    );

    // The worker vanishes; the next lease of the run carries the cell's chunks.
    tokio::time::sleep(Duration::from_millis(80)).await;
    s.expire_leases().await.expect("expiry");
    let b = s.register_worker(new_worker("b")).await.expect("b");
    let again = grant(&s, &b).await;
    assert_eq!(again.run.id, g.run.id);
    assert_eq!(
        again.progress,
        vec![(cell.clone(), vec![chunk(0, 100), chunk(100, 50)])]
    );

    // The old lease can add nothing any more; the new one continues.
    let stale = s
        .report_cell_chunk(lease, cell.clone(), chunk(150, 50))
        .await;
    assert!(stale.is_err(), "a lost lease's chunk is refused");
    let lease_b = lease_ref(&b, &again);
    assert!(
        s.report_cell_chunk(lease_b.clone(), cell.clone(), chunk(150, 50))
            .await
            .expect("continues")
    );
    assert!(
        s.complete_cell(lease_b.clone(), cell.clone(), result(0.5))
            .await
            .expect("cell done")
    );
    let conn = rusqlite::Connection::open(s.store.path()).expect("open");
    let left: i64 = conn
        .query_row("SELECT COUNT(*) FROM cell_chunks", [], |r| r.get(0))
        .expect("count");
    assert_eq!(left, 0, "a done cell's chunks are dropped");
    assert!(
        !s.report_cell_chunk(lease_b, cell, chunk(200, 10))
            .await
            .expect("a late chunk of a done cell"),
        "ignored"
    );
}
