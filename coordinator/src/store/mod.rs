//! Durable coordinator state behind one trait, [`StateStore`], with SQLite ([`SqliteStore`],
//! `sqlite/`) as its one implementation.
//!
//! The split of work: the scheduler (`crate::scheduler`) owns the rules — who may lease what,
//! whether a quoted lease is the live one (fencing), retries and back-off, preemption, expiry,
//! what completion means and which sanity warnings it stores — as plain functions over the
//! records defined here ([`records`]). The store owns durability and atomicity: every
//! transition is one `async` method that reads the records it needs, calls the scheduler's rule
//! on them and writes the outcome, all in one transaction, and resolves only once that is
//! durable. A rule is therefore never applied to a stale read, and a store implementation never
//! decides anything itself; it only supplies records and applies outcomes. Policy (lease TTL,
//! back-off) is the scheduler's and travels as an argument of the transitions that need it.
//!
//! Reads (`status`, reports, metrics, lease and checkpoint lookups) are blocking methods on
//! the same trait; async callers go through the scheduler, which runs them on the blocking
//! pool. There is one method per operation: no sync and async twins.
//!
//! Typed errors ([`StoreError`]: `UnknownWorker`, `LeaseLost`, …) travel up unchanged; the
//! gRPC layer maps them to a status code and a refusal reason.

pub mod error;
pub mod ids;
pub mod records;
pub mod sqlite;
mod state_store;
pub mod views;

pub use advsweep_core::{StateCounts, SweepState};
pub use error::StoreError;
pub use ids::{lease_digest, now_ms, random_id};
pub use records::{
    CancelOutcome, CellRecord, CheckpointInfo, FailOutcome, LeaseGrant, LeaseOutcome, LeaseRecord,
    LeaseRef, NewCheckpoint, NewWorker, RecordedCheckpoint, RetryOutcome, SubmitOutcome,
};
pub use sqlite::SqliteStore;
pub use state_store::StateStore;
pub use views::{AttemptRecord, CellStatus, Gauges, RunStatus, SweepDetail, SweepSummary};
