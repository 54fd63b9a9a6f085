//! Durable coordinator state in SQLite: sweeps, runs, cells, metrics, workers, leases.
//!
//! The store is the only owner of state. The gRPC layer is a thin translation over it, so every
//! transition (submit, lease, heartbeat, result, failure, cancel) is an atomic unit here and can
//! be tested without a network.
//!
//! Writes go through one writer thread (`writer`) that group-commits whatever is queued: each
//! transition runs in its own savepoint of a shared transaction, and every caller is answered
//! only after that transaction's commit (and fsync) — concurrent workers share fsyncs, nothing is
//! acknowledged before it is durable. Reads (`status`, reports, metrics) use a small pool of
//! read-only connections, which WAL lets run beside the writer.
//!
//! States are stored as their one spelling from `advsweep_core` (`RunState::as_str` and
//! friends): statements that name a state are built from it once (`sql!`), and state
//! columns read back through `parse` (`state`), so an unknown spelling is a
//! [`StoreError::Corrupt`], never a panic.

/// SQL text with `advsweep_core` state spellings in it (a `format!`), built once per call site:
/// every call returns the same `&'static str`, so `prepare_cached` keeps hitting its cache.
macro_rules! sql {
    ($($text:tt)+) => {{
        static TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| format!($($text)+));
        TEXT.as_str()
    }};
}

mod error;
mod fencing;
mod lease;
mod query;
mod recovery;
mod report;
mod schema;
mod settings;
mod submit;
mod writer;

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use advsweep_core::{RunState, UnknownState};
use rusqlite::{Connection, OptionalExtension};

pub use advsweep_core::{StateCounts, SweepState};
pub use error::StoreError;
pub use fencing::LeaseRef;
pub use lease::{LeaseGrant, LeaseOutcome};
pub use query::{AttemptRecord, CellStatus, Gauges, RunStatus, SweepDetail, SweepSummary};
pub use recovery::{CHECKPOINTS_KEPT, CheckpointInfo, RetryOutcome};
pub use report::FailOutcome;
pub use settings::LeaseSettings;
pub use submit::SubmitOutcome;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Reads the state column `idx` of `row` through its one spelling (`RunState`, `CellState`,
/// `AttemptOutcome`); an unknown spelling is a conversion error ([`StoreError::Corrupt`]).
fn state<T>(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T: std::str::FromStr<Err = UnknownState>,
{
    let text: String = row.get(idx)?;
    text.parse().map_err(|e: UnknownState| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Idle read connections kept for reuse.
const READERS_KEPT: usize = 4;

/// The coordinator's state directory, opened.
pub struct Store {
    writer: writer::Writer,
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
    settings: LeaseSettings,
}

/// A pooled read-only connection, returned to the pool when dropped.
struct Reader<'a> {
    conn: Option<Connection>,
    pool: &'a Mutex<Vec<Connection>>,
}

impl Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a reader holds its connection until dropped")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // End a snapshot left open (an early return on error) before pooling.
            if !conn.is_autocommit() && conn.execute_batch("ROLLBACK").is_err() {
                return;
            }
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < READERS_KEPT {
                pool.push(conn);
            }
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) `state.sqlite` inside `state_dir`.
    pub fn open(state_dir: &Path, settings: LeaseSettings) -> Result<Self, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::Io {
            path: state_dir.display().to_string(),
            source,
        })?;
        let path = state_dir.join("state.sqlite");
        let conn = Connection::open(&path)?;
        schema::configure(&conn)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let fresh = version == 0
            && conn
                .query_row(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'",
                    [],
                    |_| Ok(()),
                )
                .optional()?
                .is_none();
        conn.execute_batch(schema::SCHEMA)?;
        match version {
            0 if fresh => conn.pragma_update(None, "user_version", schema::SCHEMA_VERSION)?,
            v if v == schema::SCHEMA_VERSION => {}
            v if (1..schema::SCHEMA_VERSION).contains(&v) => {
                for (to, sql) in schema::MIGRATIONS.iter().filter(|(to, _)| *to > v) {
                    conn.execute_batch(sql)?;
                    conn.pragma_update(None, "user_version", to)?;
                }
            }
            v => {
                return Err(StoreError::Invalid(format!(
                    "{} has schema version {v}; this build reads version {}",
                    path.display(),
                    schema::SCHEMA_VERSION
                )));
            }
        }
        schema::configure_writer(&conn)?;
        let writer = writer::Writer::start(conn).map_err(|source| StoreError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Store {
            writer,
            readers: Mutex::new(Vec::new()),
            path,
            settings,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// A read-only connection; it sees every write acknowledged before this call.
    fn reader(&self) -> Result<Reader<'_>, StoreError> {
        // A panic while holding the lock cannot leave the pool inconsistent.
        let pooled = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = Connection::open(&self.path)?;
                schema::configure_reader(&conn)?;
                conn
            }
        };
        Ok(Reader {
            conn: Some(conn),
            pool: &self.readers,
        })
    }

    /// A read-only connection inside a read transaction: every query through it sees the same
    /// committed state (for views assembled from several queries).
    fn snapshot(&self) -> Result<Reader<'_>, StoreError> {
        let reader = self.reader()?;
        reader.execute_batch("BEGIN")?;
        Ok(reader)
    }

    /// Runs `f` as one atomic transition in the writer's next group commit; returns once it is
    /// durable (or failed, in which case none of its writes happened).
    fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write(writer::Priority::Normal, f)
    }

    /// [`Store::write`] for async callers: awaits the commit without holding a thread.
    async fn write_async<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write_async(writer::Priority::Normal, f).await
    }

    /// [`Store::write_async`] ahead of queued reports: a worker waits idle for the answer.
    async fn write_urgent<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write_async(writer::Priority::Urgent, f).await
    }

    /// Whether any run of an active sweep still has work to do (pending or leased).
    pub fn has_work(&self) -> Result<bool, StoreError> {
        let conn = self.reader()?;
        Ok(conn
            .query_row(
                sql!(
                    "SELECT 1 FROM runs WHERE state IN ('{}', '{}') LIMIT 1",
                    RunState::Pending,
                    RunState::Leased
                ),
                [],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }
}

/// A random identifier (lease ids, worker ids) without an RNG dependency: std's hasher is
/// seeded randomly per process, and mixing in time and a counter makes each call unique.
pub fn random_id(prefix: &str) -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos(),
    );
    format!("{prefix}{:016x}", h.finish())
}

#[cfg(test)]
mod tests;
