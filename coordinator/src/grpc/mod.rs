//! The tonic glue: the two v1 services over the [`Scheduler`](crate::scheduler::Scheduler),
//! plus health and reflection.
//!
//! Handlers only translate: decode and validate the request, call the scheduler (which runs
//! the store's blocking work off the async threads), map the outcome to a status, and wake the
//! watchers.

pub mod auth;
pub mod caller;
mod checkpoints;
pub mod convert;
mod incoming;
mod model_files;
mod refusals;
pub mod rows;
mod server;
mod sweep_service;
pub mod validate;
mod wire_errors;
mod worker_service;

use std::collections::HashMap;
use std::sync::Arc;

use advsweep_core::refusal::{self, Refusal};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::store::StoreError;

pub use server::{ConnectionLimits, Coordinator, ServeOptions, serve};
pub use sweep_service::SweepApi;
pub use validate::require_id;
pub use worker_service::WorkerApi;

/// Wakes `WatchSweep` streams after every state change.
#[derive(Debug, Clone)]
pub struct ChangeNotifier {
    tx: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for ChangeNotifier {
    fn default() -> Self {
        ChangeNotifier {
            tx: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

impl ChangeNotifier {
    pub fn notify(&self) {
        self.tx.send_modify(|v| *v = v.saturating_add(1));
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tx.subscribe()
    }

    /// How many changes were notified so far: equal twice, nothing changed between; larger,
    /// later (a u64 does not wrap in practice).
    pub fn version(&self) -> u64 {
        *self.tx.borrow()
    }
}

/// Maps store errors to gRPC statuses: the caller's mistakes are `invalid_argument` /
/// `not_found` / `failed_precondition`; only our own failures are `internal`.
pub fn status_of(error: StoreError) -> Status {
    match &error {
        StoreError::SweepNotFound(_) => Status::not_found(error.to_string()),
        StoreError::UnknownWorker(_) => {
            refused(Code::Unauthenticated, Refusal::WorkerUnknown, &error)
        }
        StoreError::LeaseLost { .. } => {
            refused(Code::FailedPrecondition, Refusal::LeaseLost, &error)
        }
        StoreError::NotLeaseHolder { .. } => {
            refused(Code::PermissionDenied, Refusal::NotLeaseHolder, &error)
        }
        StoreError::NoSuchCell { .. } | StoreError::Invalid(_) => {
            Status::invalid_argument(error.to_string())
        }
        StoreError::Io { .. }
        | StoreError::InUse { .. }
        | StoreError::Sqlite(_)
        | StoreError::Corrupt(_)
        | StoreError::CommitFailed(_) => {
            tracing::error!(%error, "store failure");
            Status::internal(error.to_string())
        }
    }
}

/// A refusal the worker acts on: the v1 code it always had, and the reason as a
/// `google.rpc.ErrorInfo` in the status details (see `advsweep_core::refusal`).
fn refused(code: Code, reason: Refusal, error: &StoreError) -> Status {
    Status::with_error_details(
        code,
        error.to_string(),
        ErrorDetails::with_error_info(reason.as_str(), refusal::DOMAIN, HashMap::new()),
    )
}
