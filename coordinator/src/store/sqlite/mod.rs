//! The SQLite [`StateStore`](super::StateStore): `<state-dir>/state.sqlite`, WAL,
//! `synchronous = FULL`.
//!
//! Writes go through one writer thread (`writer`) that group-commits whatever is queued: each
//! transition runs in its own savepoint of a shared transaction, and every caller is answered
//! only after that transaction's commit (and fsync) — concurrent workers share fsyncs, nothing is
//! acknowledged before it is durable. Leases, heartbeats and registrations are urgent: they
//! commit ahead of queued reports. Reads use a small pool of read-only connections, which WAL
//! lets run beside the writer.
//!
//! The files: `leases` (register, lease, heartbeat, expiry), `attempts` (the lease record
//! fencing reads, the end of a failed attempt), `reports` (epochs, cells, completion,
//! failure), `recovery` (preemption, retry, checkpoints), `submit` (submit, cancel), `query`
//! (the views), `schema`, `writer`, and `state_store` (the trait's one `impl`, delegating to
//! them). Each transition is a function over the connection that reads records, calls the
//! scheduler's rule (`crate::scheduler`) and writes its outcome.
//!
//! States are stored as their one spelling from `advsweep_core` (`RunState::as_str` and
//! friends): statements that name a state are built from it once (`sql!`), and state
//! columns read back through `parse` (`state`), so an unknown spelling is a
//! [`StoreError::Corrupt`], never a panic. Ids are typed (`advsweep_core::ids`) everywhere above
//! SQL: bound as their text, and read back through `id` (`optional_id`), so a stored id of the
//! wrong shape is a [`StoreError::Corrupt`] too.

/// SQL text with `advsweep_core` state spellings in it (a `format!`), built once per call site:
/// every call returns the same `&'static str`, so `prepare_cached` keeps hitting its cache.
macro_rules! sql {
    ($($text:tt)+) => {{
        static TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| format!($($text)+));
        TEXT.as_str()
    }};
}

mod attempts;
mod leases;
mod query;
mod recovery;
mod reports;
mod schema;
mod state_store;
mod submit;
mod writer;

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use advsweep_core::{InvalidId, UnknownState};
use rusqlite::{Connection, OptionalExtension};

use super::error::StoreError;

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

/// Reads the id column `idx` of `row` as a typed id ([`advsweep_core::RunId`] and the others);
/// an id of the wrong shape is a conversion error ([`StoreError::Corrupt`]). Ids are bound as
/// their text (`as_str()`).
fn id<T>(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T: TryFrom<String, Error = InvalidId>,
{
    let text: String = row.get(idx)?;
    parse_id(text, idx)
}

/// [`id`] of a column that may be NULL.
fn optional_id<T>(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Option<T>>
where
    T: TryFrom<String, Error = InvalidId>,
{
    let text: Option<String> = row.get(idx)?;
    text.map(|text| parse_id(text, idx)).transpose()
}

fn parse_id<T>(text: String, idx: usize) -> rusqlite::Result<T>
where
    T: TryFrom<String, Error = InvalidId>,
{
    T::try_from(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Idle read connections kept for reuse.
const READERS_KEPT: usize = 4;

/// The coordinator's state directory, opened.
/// Takes the exclusive lock on `<state_dir>/lock` (released when the file is closed, the
/// process's death included) and writes who holds it there; `InUse` naming that holder when
/// another process has it. Two coordinators on one state directory would each sweep the other's
/// uploads away and interleave their leases; `advsweep run` pointed at a live coordinator's
/// state would share it silently.
fn lock_state_dir(state_dir: &Path) -> Result<std::fs::File, StoreError> {
    use std::io::{Read as _, Seek as _, Write as _};
    let path = state_dir.join("lock");
    let io = |source: std::io::Error| StoreError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut owner = String::new();
            let _ = (&file).take(512).read_to_string(&mut owner);
            let owner = owner.trim();
            return Err(StoreError::InUse {
                dir: state_dir.display().to_string(),
                owner: if owner.is_empty() {
                    "a process that has not said who it is".to_owned()
                } else {
                    owner.to_owned()
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    let command: String = std::env::args()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "pid {}: {command}", std::process::id()).map_err(io)?;
    Ok(file)
}

pub struct SqliteStore {
    /// `None` for a store opened to read only ([`SqliteStore::open_read_only`]).
    writer: Option<writer::Writer>,
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
    /// The state directory's lock (`lock`, an OS file lock held while the store is open): one
    /// process owns a state directory. A read-only store takes none.
    _lock: Option<std::fs::File>,
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

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `state.sqlite` inside `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::Io {
            path: state_dir.display().to_string(),
            source,
        })?;
        let lock = lock_state_dir(state_dir)?;
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
        Ok(SqliteStore {
            writer: Some(writer),
            readers: Mutex::new(Vec::new()),
            path,
            _lock: Some(lock),
        })
    }

    /// Opens an existing state directory to read it (`advsweep status` / `report` without a
    /// coordinator): no lock (a coordinator may be running on it; WAL readers never block it),
    /// no migration, and every transition refused.
    pub fn open_read_only(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join("state.sqlite");
        if !path.is_file() {
            return Err(StoreError::Invalid(format!(
                "{} holds no advsweep state (no state.sqlite): point --state-dir at the \
                 directory `advsweep run` or the coordinator wrote",
                state_dir.display()
            )));
        }
        let conn = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version != schema::SCHEMA_VERSION {
            return Err(StoreError::Invalid(format!(
                "{} has schema version {version}; this build reads version {} (open it once \
                 with this version's coordinator or `advsweep run` to migrate it)",
                path.display(),
                schema::SCHEMA_VERSION
            )));
        }
        Ok(SqliteStore {
            writer: None,
            readers: Mutex::new(vec![conn]),
            path,
            _lock: None,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
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

    /// Runs `f` as one atomic transition in the writer's next group commit; resolves once it
    /// is durable (or failed, in which case none of its writes happened).
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        match &self.writer {
            Some(writer) => writer.write(writer::Priority::Normal, f).await,
            None => Err(read_only()),
        }
    }

    /// [`SqliteStore::write`] ahead of queued reports: a worker waits idle for the answer.
    async fn write_urgent<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        match &self.writer {
            Some(writer) => writer.write(writer::Priority::Urgent, f).await,
            None => Err(read_only()),
        }
    }
}

fn read_only() -> StoreError {
    StoreError::Invalid("this state directory was opened to read only".into())
}

#[cfg(test)]
mod tests;
