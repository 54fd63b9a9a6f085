//! Group commit: one writer thread owns the only writing connection and runs every state
//! transition.
//!
//! Callers hand it a job (a closure over the connection) and wait for the reply. The writer
//! takes every job that is queued, runs them in one `BEGIN IMMEDIATE` transaction, each inside
//! its own savepoint (a job that fails is rolled back alone and answers its own error), then
//! commits once (one WAL append, one fsync with `synchronous = FULL`) and only then replies to
//! each job. So nothing is acknowledged before it is durable, and N concurrent requests cost one
//! fsync instead of N. Jobs run in arrival order, except that urgent ones (leases, heartbeats,
//! registrations: a worker idles until they are answered) go ahead of the reports queued
//! before them; each job sees the writes of those before it. Urgent jobs also commit among
//! themselves: a batch is either all urgent or all reports, and a batch of reports ends early
//! (commits what it ran) as soon as an urgent job arrives, so a lease waits for at most one
//! report and one commit, not for a transaction of hundreds of reports.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;

use crate::store::error::StoreError;

/// Most jobs in one transaction: bounds how long a job (an urgent one above all) can wait
/// behind others, while one fsync is still shared by up to this many requests.
const MAX_BATCH: usize = 256;

/// Which queue a job joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Priority {
    /// Results and metrics: throughput matters, order among them is kept.
    Normal,
    /// A worker waits idle for the answer (lease, heartbeat, registration).
    Urgent,
}

/// What a job hands back after running: whether it succeeded (else its savepoint is rolled
/// back), and how to reply once the transaction's fate is known.
type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Called with the connection to run, or with `None` when it cannot run (its reply is then the
/// error passed to the returned [`Finish`]).
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Finish) + Send>;

/// The handle the store keeps: a queue into the writer thread.
pub(super) struct Writer {
    queue: Option<mpsc::Sender<(Priority, Job)>>,
    thread: Option<JoinHandle<()>>,
}

fn writer_gone() -> StoreError {
    StoreError::CommitFailed("the store's writer thread is not running".into())
}

impl Writer {
    pub(super) fn start(conn: Connection) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<(Priority, Job)>();
        let thread = std::thread::Builder::new()
            .name("advsweep-store-writer".into())
            .spawn(move || run(conn, rx))?;
        Ok(Writer {
            queue: Some(tx),
            thread: Some(thread),
        })
    }

    fn submit<T, F>(
        &self,
        priority: Priority,
        f: F,
        reply: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
    ) where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let job: Job = Box::new(move |conn: Option<&Connection>| {
            let out = match conn {
                None => Err(StoreError::CommitFailed("not executed".into())),
                Some(conn) => match catch_unwind(AssertUnwindSafe(|| f(conn))) {
                    Ok(out) => out,
                    Err(_) => Err(StoreError::CommitFailed(
                        "a store operation panicked".into(),
                    )),
                },
            };
            let ok = out.is_ok();
            let finish: Finish = Box::new(move |commit: Result<(), StoreError>| {
                // The caller may have gone away (a cancelled RPC); its job still ran and
                // committed.
                let _ = reply.send(commit.and(out));
            });
            (ok, finish)
        });
        if let Some(queue) = &self.queue
            && let Err(mpsc::SendError(job)) = queue.send((priority, job))
        {
            drop(job);
        }
    }

    /// Runs `f` in the next group commit; resolves once it is durable.
    pub(super) async fn write<T, F>(&self, priority: Priority, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(priority, f, tx);
        rx.await.unwrap_or_else(|_| Err(writer_gone()))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread after the jobs already queued; joining it closes
        // the connection before the store is reopened or its directory removed.
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: Connection, queue: mpsc::Receiver<(Priority, Job)>) {
    let mut urgent: VecDeque<Job> = VecDeque::new();
    let mut normal: VecDeque<Job> = VecDeque::new();
    let take_queued = |urgent: &mut VecDeque<Job>, normal: &mut VecDeque<Job>| {
        while let Ok((priority, job)) = queue.try_recv() {
            match priority {
                Priority::Urgent => urgent.push_back(job),
                Priority::Normal => normal.push_back(job),
            }
        }
    };
    loop {
        if urgent.is_empty() && normal.is_empty() {
            match queue.recv() {
                Ok((Priority::Urgent, job)) => urgent.push_back(job),
                Ok((Priority::Normal, job)) => normal.push_back(job),
                Err(_) => return, // the store is closed and every job answered
            }
        }
        take_queued(&mut urgent, &mut normal);
        let urgent_batch = !urgent.is_empty();
        let mut taken = 0;
        run_batch(&conn, || {
            if taken == MAX_BATCH {
                return None;
            }
            // Jobs that arrived while the previous one ran; an urgent one ends a batch of
            // reports here, so that it commits in the next batch instead of after all of them.
            take_queued(&mut urgent, &mut normal);
            let job = if urgent_batch {
                urgent.pop_front()
            } else if urgent.is_empty() {
                normal.pop_front()
            } else {
                None
            };
            taken += usize::from(job.is_some());
            job
        });
    }
}

/// Runs the jobs `next` hands out, in one transaction, and replies to each after the commit.
fn run_batch(conn: &Connection, mut next: impl FnMut() -> Option<Job>) {
    // Replies waiting for the current transaction's commit.
    let mut pending: Vec<Finish> = Vec::new();
    let mut open = false;
    loop {
        let Some(job) = next() else { break };
        if !open {
            if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
                let why = format!("cannot begin a transaction: {e}");
                let (_, finish) = job(None);
                finish(Err(StoreError::CommitFailed(why.clone())));
                while let Some(job) = next() {
                    let (_, finish) = job(None);
                    finish(Err(StoreError::CommitFailed(why.clone())));
                }
                return;
            }
            open = true;
        }
        if let Err(e) = exec(conn, "SAVEPOINT job") {
            // The transaction is unusable; fail what it holds and this job, start afresh.
            rollback(conn);
            open = false;
            let why = format!("savepoint failed: {e}");
            fail_all(&mut pending, &why);
            let (_, finish) = job(None);
            finish(Err(StoreError::CommitFailed(why)));
            continue;
        }
        let (ok, finish) = job(Some(conn));
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (disk full, I/O error): everything
            // this transaction held is lost, not only this job.
            open = false;
            fail_all(&mut pending, "the transaction was rolled back by SQLite");
            finish(Err(StoreError::CommitFailed(
                "the transaction was rolled back by SQLite".into(),
            )));
            continue;
        }
        let end = if ok {
            exec(conn, "RELEASE job")
        } else {
            exec(conn, "ROLLBACK TO job").and_then(|()| exec(conn, "RELEASE job"))
        };
        if let Err(e) = end {
            rollback(conn);
            open = false;
            let why = format!("ending a savepoint failed: {e}");
            fail_all(&mut pending, &why);
            finish(Err(StoreError::CommitFailed(why)));
            continue;
        }
        pending.push(finish);
    }
    if !open {
        return;
    }
    match exec(conn, "COMMIT") {
        Ok(()) => {
            for finish in pending.drain(..) {
                finish(Ok(()));
            }
        }
        Err(e) => {
            rollback(conn);
            fail_all(&mut pending, &format!("commit failed: {e}"));
        }
    }
}

/// Runs a transaction-control statement, kept prepared.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn fail_all(pending: &mut Vec<Finish>, why: &str) {
    tracing::error!(error = %why, jobs = pending.len(), "group commit failed");
    for finish in pending.drain(..) {
        finish(Err(StoreError::CommitFailed(why.to_owned())));
    }
}

fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
}
