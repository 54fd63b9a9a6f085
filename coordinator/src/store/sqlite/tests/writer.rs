//! The writer's group commit and the worker path's query plans, on the SQLite store itself.

use std::time::Duration;

use advsweep_core::{CellState, RunState};

use super::{SWEEP, block_on, plan};
use crate::store::{SqliteStore, StateStore, StoreError};

fn store(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(dir.path()).expect("opens")
}

#[test]
fn a_group_commit_rolls_back_only_the_request_that_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(&dir);
    block_on(s.write(|c| {
        c.execute_batch("CREATE TABLE t (x INTEGER)")?;
        Ok(())
    }))
    .expect("create");
    // The first job holds the writer while the other three queue up behind it, so the four
    // share one transaction.
    let started = std::sync::Arc::new(std::sync::Barrier::new(2));
    let replies = std::thread::scope(|scope| {
        let s = &s;
        let gate = std::sync::Arc::clone(&started);
        let first = scope.spawn(move || {
            block_on(s.write(move |c| {
                gate.wait();
                std::thread::sleep(Duration::from_millis(100));
                c.execute("INSERT INTO t VALUES (1)", [])?;
                Ok(())
            }))
        });
        started.wait();
        let others: Vec<_> = (2..=4)
            .map(|x| {
                scope.spawn(move || {
                    block_on(s.write(move |c| {
                        c.execute("INSERT INTO t VALUES (?1)", [x])?;
                        if x == 3 {
                            return Err(StoreError::Invalid("request 3 is bad".into()));
                        }
                        Ok(x)
                    }))
                })
            })
            .collect();
        let first = first.join().expect("thread");
        let others: Vec<_> = others
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        (first, others)
    });
    assert!(replies.0.is_ok());
    assert!(matches!(replies.1[0], Ok(2)));
    assert!(matches!(&replies.1[1], Err(StoreError::Invalid(m)) if m == "request 3 is bad"));
    assert!(matches!(replies.1[2], Ok(4)));
    // What was acknowledged is committed and visible to a fresh connection; request 3's insert
    // was rolled back with its savepoint.
    let conn = rusqlite::Connection::open(s.path()).expect("open");
    let xs: Vec<i64> = conn
        .prepare("SELECT x FROM t ORDER BY x")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(xs, vec![1, 2, 4]);
}

#[test]
fn a_lease_commits_ahead_of_the_reports_queued_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(&dir);
    block_on(s.write(|c| {
        c.execute_batch("CREATE TABLE t (x TEXT)")?;
        Ok(())
    }))
    .expect("create");
    let path = s.path().to_owned();
    // What another connection sees: committed rows only.
    let committed = move || -> Vec<String> {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.prepare("SELECT x FROM t ORDER BY rowid")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    // One report holds the writer; three more reports queue up, then a lease.
    let started = std::sync::Arc::new(std::sync::Barrier::new(2));
    let seen_by_reports = std::thread::scope(|scope| {
        let s = &s;
        let gate = std::sync::Arc::clone(&started);
        let first = scope.spawn(move || {
            block_on(s.write(move |c| {
                gate.wait();
                std::thread::sleep(Duration::from_millis(200));
                c.execute("INSERT INTO t VALUES ('first')", [])?;
                Ok(())
            }))
        });
        started.wait();
        let reports: Vec<_> = (1..=3)
            .map(|i| {
                let committed = committed.clone();
                scope.spawn(move || {
                    block_on(s.write(move |c| {
                        let seen = committed();
                        c.execute("INSERT INTO t VALUES (?1)", [format!("report {i}")])?;
                        Ok(seen)
                    }))
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        let lease = scope.spawn(move || {
            // A lease is an async call (a worker's RPC): awaited on a runtime of its own.
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
                .block_on(s.write_urgent(|c| {
                    c.execute("INSERT INTO t VALUES ('lease')", [])?;
                    Ok(())
                }))
        });
        first.join().expect("thread").expect("first");
        lease.join().expect("thread").expect("lease");
        reports
            .into_iter()
            .map(|h| h.join().expect("thread").expect("report"))
            .collect::<Vec<_>>()
    });
    // Every queued report ran after the lease had committed (it did not wait for them), and
    // nothing was lost.
    for seen in &seen_by_reports {
        assert!(seen.contains(&"lease".to_owned()), "{seen:?}");
    }
    let mut all = committed();
    all.sort();
    assert_eq!(all, ["first", "lease", "report 1", "report 2", "report 3"]);
}

#[test]
fn the_worker_path_queries_search_indices_instead_of_scanning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(&dir);
    block_on(s.submit(plan(SWEEP), SWEEP.to_string())).expect("submit");
    // The statements every lease, report and completion runs (lease.rs, report.rs).
    let (leased, pending) = (RunState::Leased, RunState::Pending);
    let (cell_pending, cell_failed) = (CellState::Pending, CellState::Failed);
    let hot = [
        format!(
            "SELECT run_id, attempt, worker_id FROM runs WHERE state = '{leased}' AND lease_expires_ms < ?1"
        ),
        format!(
            "SELECT run_id, spec_json, attempt FROM runs WHERE state = '{pending}' AND not_before_ms <= ?1 ORDER BY seq LIMIT 1"
        ),
        format!(
            "SELECT spec_json FROM cells WHERE run_id = ?1 AND state = '{cell_pending}' ORDER BY seq"
        ),
        "SELECT state, lease_id, attempt, lease_expires_ms FROM runs WHERE run_id = ?1".to_owned(),
        "SELECT run_id, state, attempt FROM cells WHERE cell_id = ?1".to_owned(),
        format!(
            "UPDATE cells SET state = '{cell_failed}' WHERE run_id = ?1 AND state = '{cell_pending}'"
        ),
        "UPDATE workers SET last_seen_ms = ?2 WHERE worker_id = ?1".to_owned(),
    ];
    let plans = block_on(s.write(move |c| {
        let mut plans = Vec::new();
        for sql in hot {
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            let nulls = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
            let steps: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))?
                .collect::<Result<_, _>>()?;
            plans.push((sql, steps.join("; ")));
        }
        Ok(plans)
    }))
    .expect("plans");
    for (sql, plan) in &plans {
        assert!(
            plan.starts_with("SEARCH") && !plan.contains("SCAN"),
            "{sql}\n  → {plan}"
        );
    }
    // Expiry seeks on the deadline, not through every leased run.
    assert!(plans[0].1.contains("lease_expires_ms<?"), "{}", plans[0].1);
}
