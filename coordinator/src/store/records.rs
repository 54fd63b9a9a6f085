//! The records the store hands the scheduler and the outcomes of its transitions: plain data in
//! `advsweep_core` types, the same for every store implementation.

use std::path::PathBuf;

use advsweep_core::{CellId, CellSpec, CellState, LeaseId, RunId, RunSpec, RunState, SweepId};

/// What a worker quotes back on every call about a leased run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRef {
    pub worker_id: String,
    pub run_id: RunId,
    pub lease_id: LeaseId,
    pub attempt: u32,
}

/// A run's lease as stored: what fencing compares a [`LeaseRef`] against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub state: RunState,
    /// The live lease's id; `None` once the run is not leased.
    pub lease_id: Option<LeaseId>,
    /// The run's attempt counter (the latest lease's attempt).
    pub attempt: u32,
    pub expires_ms: Option<i64>,
    /// The worker the latest lease was granted to.
    pub worker_id: Option<String>,
}

/// A stored cell as a result report sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellRecord {
    pub run_id: RunId,
    pub state: CellState,
    /// The attempt whose result is stored (`None` while there is none).
    pub attempt: Option<u32>,
}

/// A worker registering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWorker {
    pub name: String,
    pub hostname: String,
    pub device: String,
    pub slots: u32,
    pub version: String,
    /// SHA-256 (hex) of the client certificate it registered with (mutual TLS), if any.
    pub cert_sha256: Option<String>,
}

/// A run handed to a worker, with the cells it still has to evaluate.
#[derive(Debug, Clone)]
pub struct LeaseGrant {
    pub lease_id: LeaseId,
    pub attempt: u32,
    pub sweep_id: SweepId,
    pub run: RunSpec,
    pub cells: Vec<CellSpec>,
    /// The latest checkpoint to resume from.
    pub resume_from: Option<CheckpointInfo>,
    /// The stored chunks of the run's unfinished cells (those with any), in order.
    pub progress: Vec<(CellId, Vec<advsweep_core::CellChunk>)>,
}

#[derive(Debug, Clone)]
pub enum LeaseOutcome {
    Granted(Box<LeaseGrant>),
    /// Work exists but none is ready (all leased, or waiting out a retry back-off).
    Wait {
        retry_after_ms: u64,
    },
    /// No sweep has pending or running work.
    Idle,
}

/// What became of a reported failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Re-queued; may start again at this time (ms since the epoch).
    RetryAt(i64),
    /// Failed for good: not retryable or out of attempts.
    Failed,
}

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub checkpoint_id: String,
    pub run_id: RunId,
    pub epoch: u32,
    pub sha256: String,
    pub bytes: u64,
    pub path: PathBuf,
}

/// A checkpoint file already written and verified, to be recorded under a live lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCheckpoint {
    pub epoch: u32,
    pub sha256: String,
    pub bytes: u64,
    pub path: PathBuf,
}

/// A recorded checkpoint, and the files of the older ones it made stale (forgotten by the
/// store, to be deleted now that the record is durable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCheckpoint {
    pub checkpoint_id: String,
    pub stale_files: Vec<PathBuf>,
}

/// What a cancel stopped, and what it left running for other sweeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CancelOutcome {
    pub cells: u32,
    /// Unfinished cells another active sweep shares: they keep running for it.
    pub shared: u32,
}

/// What a retry re-queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOutcome {
    pub cells: u32,
    pub runs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitOutcome {
    pub sweep_id: SweepId,
    pub name: String,
    pub runs: u32,
    pub cells: u32,
    /// Cells that already had a result before this submission.
    pub cells_already_done: u32,
    /// False when the same sweep had been submitted before.
    pub new_sweep: bool,
}
