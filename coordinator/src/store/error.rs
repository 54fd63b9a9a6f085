//! Store errors, classified so the gRPC layer can map them to status codes.

use advsweep_core::{CellId, InvalidId, LeaseId, RunId, SweepId};

use super::ids::lease_digest;

/// How [`StoreError::NotLeaseHolder`] shows the run of a lease request, which names none.
pub const NO_RUN: &str = "(any: a lease request)";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no sweep with id `{0}`")]
    SweepNotFound(SweepId),
    #[error("unknown worker `{0}`: register first")]
    UnknownWorker(String),
    /// The caller's lease expired, was re-granted, or its run was cancelled. The lease id is
    /// a secret: it is shown only as a digest.
    #[error(
        "lease {} (attempt {attempt}) on run {run_id} is no longer held: {why}",
        lease_digest(.lease_id.as_str())
    )]
    LeaseLost {
        run_id: RunId,
        lease_id: LeaseId,
        attempt: u32,
        why: String,
    },
    /// The quoted lease was granted to another worker than the caller (or the caller's client
    /// certificate is not the one its worker id registered with). `run_id` is `None` for a
    /// lease request, which names no run.
    #[error(
        "worker `{worker_id}` does not hold the lease it quotes on run {}: {why}",
        run_id.as_ref().map_or(NO_RUN, RunId::as_str)
    )]
    NotLeaseHolder {
        run_id: Option<RunId>,
        worker_id: String,
        why: String,
    },
    #[error("cell `{cell_id}` does not belong to run `{run_id}`")]
    NoSuchCell { run_id: RunId, cell_id: CellId },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot create state directory {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("state database error: {0}")]
    Sqlite(#[source] rusqlite::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// Another process (a coordinator, `advsweep run`) holds the state directory's lock.
    #[error(
        "the state directory {dir} is in use by another advsweep process ({owner}); stop it, \
         or point this one at another --state-dir"
    )]
    InUse { dir: String, owner: String },
    /// The group commit this call was part of did not commit; nothing it wrote happened.
    #[error("state database write failed: {0}")]
    CommitFailed(String),
}

impl From<rusqlite::Error> for StoreError {
    /// A stored state that is none of the known spellings, or a stored id of the wrong shape,
    /// is a corrupt record, not a database failure.
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::FromSqlConversionFailure(_, _, source) = &e {
            if let Some(unknown) = source.downcast_ref::<advsweep_core::UnknownState>() {
                return StoreError::Corrupt(unknown.to_string());
            }
            if let Some(invalid) = source.downcast_ref::<InvalidId>() {
                return StoreError::Corrupt(invalid.to_string());
            }
        }
        StoreError::Sqlite(e)
    }
}

/// A stored id of the wrong shape is a corrupt record.
impl From<InvalidId> for StoreError {
    fn from(e: InvalidId) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

impl From<advsweep_core::UnknownState> for StoreError {
    fn from(e: advsweep_core::UnknownState) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}
