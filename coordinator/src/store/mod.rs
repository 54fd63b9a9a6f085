//! Durable coordinator state in SQLite: sweeps, runs, cells, metrics, workers, leases.
//!
//! The store is the only owner of state. The gRPC layer is a thin translation over it, so every
//! transition (submit, lease, heartbeat, result, failure, cancel) is a transaction here and can
//! be tested without a network.

mod error;
mod lease;
mod query;
mod recovery;
mod report;
mod schema;
mod submit;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension};

pub use error::StoreError;
pub use lease::{LeaseGrant, LeaseOutcome, LeaseRef, LeaseSettings};
pub use query::{
    AttemptRecord, CellStatus, Gauges, RunStatus, StateCounts, SweepDetail, SweepState,
    SweepSummary,
};
pub use recovery::{CHECKPOINTS_KEPT, CheckpointInfo, RetryOutcome};
pub use report::FailOutcome;
pub use submit::SubmitOutcome;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The coordinator's state directory, opened.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
    settings: LeaseSettings,
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
        Ok(Store {
            conn: Mutex::new(conn),
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

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back on drop), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether any run of an active sweep still has work to do (pending or leased).
    pub fn has_work(&self) -> Result<bool, StoreError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT 1 FROM runs WHERE state IN ('pending', 'leased') LIMIT 1",
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
