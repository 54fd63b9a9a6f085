//! Store errors, classified so the gRPC layer can map them to status codes.

use super::ids::lease_digest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no sweep with id `{0}`")]
    SweepNotFound(String),
    #[error("unknown worker `{0}`: register first")]
    UnknownWorker(String),
    /// The caller's lease expired, was re-granted, or its run was cancelled. The lease id is
    /// a secret: it is shown only as a digest.
    #[error(
        "lease {} (attempt {attempt}) on run {run_id} is no longer held: {why}",
        lease_digest(.lease_id)
    )]
    LeaseLost {
        run_id: String,
        lease_id: String,
        attempt: u32,
        why: String,
    },
    /// The quoted lease was granted to another worker than the caller (or the caller's client
    /// certificate is not the one its worker id registered with).
    #[error("worker `{worker_id}` does not hold the lease it quotes on run {run_id}: {why}")]
    NotLeaseHolder {
        run_id: String,
        worker_id: String,
        why: String,
    },
    #[error("cell `{cell_id}` does not belong to run `{run_id}`")]
    NoSuchCell { run_id: String, cell_id: String },
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
    /// A stored state that is none of the known spellings is a corrupt record, not a database
    /// failure.
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::FromSqlConversionFailure(_, _, source) = &e
            && let Some(unknown) = source.downcast_ref::<advsweep_core::UnknownState>()
        {
            return StoreError::Corrupt(unknown.to_string());
        }
        StoreError::Sqlite(e)
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
