//! Tests of the SQLite store: the state machine through the scheduler (`lifecycle`), and the
//! writer's group commit and query plans (`writer`).

mod chunks;
mod expiry;
mod lifecycle;
mod migration;
mod sweep_states;
mod writer;

use std::ops::Deref;
use std::sync::Arc;

use advsweep_core::{CellId, CellResult, CellState, RunId};

use super::{SqliteStore, id, state};
use crate::scheduler::{LeaseSettings, Scheduler};
use crate::store::{LeaseGrant, LeaseOutcome, LeaseRef, NewWorker};
use crate::sweep::{Overrides, Plan, expand, parse_sweep};

const SWEEP: &str = r#"
version = 1
name = "store-test"
[data]
source = "synthetic"
[grid]
models = ["basic"]
defenses = ["standard", "at-fgsm"]
attacks = ["none", "fgsm"]
epsilons = ["8/255"]
"#;

fn plan(text: &str) -> Plan {
    let file = parse_sweep(text, "t.toml").expect("parses");
    expand(&file, &Overrides::default(), "t.toml").expect("expands")
}

/// A scheduler over a SQLite store, with the store at hand for what only it can show.
struct Harness {
    store: Arc<SqliteStore>,
    scheduler: Scheduler,
}

impl Deref for Harness {
    type Target = Scheduler;
    fn deref(&self) -> &Scheduler {
        &self.scheduler
    }
}

fn store(dir: &tempfile::TempDir, settings: LeaseSettings) -> Harness {
    let store = Arc::new(SqliteStore::open(dir.path()).expect("opens"));
    Harness {
        scheduler: Scheduler::new(Arc::clone(&store) as _, settings),
        store,
    }
}

/// Awaits `f` on a runtime of its own (for threads outside any runtime).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A worker registering without a client certificate.
fn worker(
    name: String,
    hostname: String,
    device: String,
    slots: u32,
    version: String,
) -> NewWorker {
    NewWorker {
        name,
        hostname,
        device,
        slots,
        version,
        cert_sha256: None,
    }
}

/// A worker `w` registered with `s` (no certificate, one slot); its id.
async fn registered(s: &Scheduler) -> String {
    s.register_worker(worker(
        "w".into(),
        "host".into(),
        "cpu".into(),
        1,
        "test".into(),
    ))
    .await
    .expect("register")
}

fn result(accuracy: f64) -> CellResult {
    CellResult {
        accuracy,
        examples: 10,
        ..CellResult::default()
    }
}

async fn grant(store: &Scheduler, worker: &str) -> LeaseGrant {
    match store.lease(worker.to_owned(), None).await.expect("lease") {
        LeaseOutcome::Granted(g) => *g,
        other => panic!("expected a lease, got {other:?}"),
    }
}

fn lease_ref(worker: &str, g: &LeaseGrant) -> LeaseRef {
    LeaseRef {
        worker_id: worker.to_owned(),
        run_id: g.run.id.clone(),
        lease_id: g.lease_id.clone(),
        attempt: g.attempt,
    }
}

/// (cell id, state, accuracy) of every cell of a run, read through a fresh connection.
fn cells_of(s: &SqliteStore, run_id: &RunId) -> Vec<(CellId, CellState, Option<f64>)> {
    let conn = rusqlite::Connection::open(s.path()).expect("open");
    conn.prepare("SELECT cell_id, state, result_json FROM cells WHERE run_id = ?1 ORDER BY cell_id")
        .expect("prepare")
        .query_map([run_id.as_str()], |r| {
            let result: Option<String> = r.get(2)?;
            Ok((
                id(r, 0)?,
                state(r, 1)?,
                result.map(|j| {
                    serde_json::from_str::<CellResult>(&j)
                        .expect("stored result")
                        .accuracy
                }),
            ))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}
