//! Group commit: one writer thread owns the only writing connection and runs every state
//! transition.
//!
//! Callers hand it a job (a closure over the connection) and wait for the reply. The writer
//! takes every job that is queued, runs them in one `BEGIN IMMEDIATE` transaction, each inside
//! its own savepoint (a job that fails is rolled back alone and answers its own error), then
//! commits once (one WAL append, one fsync with `synchronous = FULL`) and only then replies to
//! each job. So nothing is acknowledged before it is durable, and N concurrent requests cost one
//! fsync instead of N. Jobs run in arrival order; each sees the writes of those before it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;

use super::StoreError;

/// Most jobs in one transaction: bounds how long a job can wait behind others.
const MAX_BATCH: usize = 512;

/// What a job hands back after running: whether it succeeded (else its savepoint is rolled
/// back), and how to reply once the transaction's fate is known.
type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Called with the connection to run, or with `None` when it cannot run (its reply is then the
/// error passed to the returned [`Finish`]).
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Finish) + Send>;

/// Where a job's result goes: a blocked thread or an async task.
enum Reply<T> {
    Sync(mpsc::SyncSender<Result<T, StoreError>>),
    Async(tokio::sync::oneshot::Sender<Result<T, StoreError>>),
}

impl<T> Reply<T> {
    fn send(self, value: Result<T, StoreError>) {
        // The caller may have gone away (a cancelled RPC); its job still ran and committed.
        match self {
            Reply::Sync(tx) => {
                let _ = tx.send(value);
            }
            Reply::Async(tx) => {
                let _ = tx.send(value);
            }
        }
    }
}

/// The handle the store keeps: a queue into the writer thread.
pub(super) struct Writer {
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

fn writer_gone() -> StoreError {
    StoreError::CommitFailed("the store's writer thread is not running".into())
}

impl Writer {
    pub(super) fn start(conn: Connection) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("advsweep-store-writer".into())
            .spawn(move || run(conn, rx))?;
        Ok(Writer {
            queue: Some(tx),
            thread: Some(thread),
        })
    }

    fn submit<T, F>(&self, f: F, reply: Reply<T>)
    where
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
                reply.send(commit.and(out));
            });
            (ok, finish)
        });
        if let Some(queue) = &self.queue
            && let Err(mpsc::SendError(job)) = queue.send(job)
        {
            drop(job);
        }
    }

    /// Runs `f` in the next group commit and blocks until it is durable.
    pub(super) fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(f, Reply::Sync(tx));
        rx.recv().unwrap_or_else(|_| Err(writer_gone()))
    }

    /// Runs `f` in the next group commit; resolves once it is durable.
    pub(super) async fn write_async<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(f, Reply::Async(tx));
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

fn run(conn: Connection, queue: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = queue.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&conn, &mut batch);
    }
}

/// Runs the jobs in one transaction and replies to each after the commit.
fn run_batch(conn: &Connection, batch: &mut Vec<Job>) {
    let mut jobs = batch.drain(..);
    // Replies waiting for the current transaction's commit.
    let mut pending: Vec<Finish> = Vec::new();
    let mut open = false;
    loop {
        if !open {
            if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
                let why = format!("cannot begin a transaction: {e}");
                for job in jobs.by_ref() {
                    let (_, finish) = job(None);
                    finish(Err(StoreError::CommitFailed(why.clone())));
                }
                return;
            }
            open = true;
        }
        let Some(job) = jobs.next() else { break };
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
