//! Error kinds that change what the worker tells the coordinator.
//!
//! Most failures are plain `anyhow` chains with context. Three situations need a decision,
//! though, and they are marked with a typed error somewhere in the chain:
//!
//! * [`Cancelled`]: the lease went away (expired, cancelled) or the worker is shutting down;
//!   the run is abandoned, not failed.
//! * [`Permanent`]: retrying cannot help (bad parameter, unknown model); reported with
//!   `retryable = false` so the coordinator does not burn attempts on it.
//! * [`crate::data::DataError`]: missing or corrupt data, also permanent (see
//!   [`crate::data::DataError::is_permanent`]).
//!
//! Everything else (CUDA out of memory, a transient I/O error, a panic in libtorch glue) is
//! retryable: another attempt, maybe on another worker, may well succeed.

use crate::data::DataError;

/// The run was stopped on purpose; nothing to report as a failure.
#[derive(Debug, thiserror::Error)]
#[error("run cancelled")]
pub struct Cancelled;

/// A failure that cannot succeed on retry.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Permanent(pub String);

/// A model name that is not in the catalogue ([`crate::models::build`]); permanent (retrying
/// cannot help). Defined here, beside the other kinds [`is_retryable`] tells apart, so that
/// this module depends on no model code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UnknownModel {
    pub name: String,
    /// Why, naming the known architectures (from `advsweep_core::Arch::parse`).
    pub message: String,
}

/// Whether an error chain contains [`Cancelled`].
pub fn is_cancelled(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<Cancelled>())
}

/// Whether the coordinator should retry a run that failed with `err`.
pub fn is_retryable(err: &anyhow::Error) -> bool {
    !err.chain().any(|e| {
        e.is::<Permanent>()
            || e.is::<UnknownModel>()
            || e.is::<advsweep_core::wire::WireError>()
            || e.downcast_ref::<DataError>()
                .is_some_and(DataError::is_permanent)
    })
}

/// Returns [`Cancelled`] when `flag` is set; called between batches.
pub fn check_cancel(flag: &std::sync::atomic::AtomicBool) -> Result<(), Cancelled> {
    if flag.load(std::sync::atomic::Ordering::Relaxed) {
        Err(Cancelled)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn classification_sees_through_context() {
        let e = anyhow::Error::new(Permanent("bad".into())).context("while training");
        assert!(!is_retryable(&e));
        let e: anyhow::Error = Err::<(), _>(Cancelled)
            .context("epoch 3")
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("unreachable"));
        assert!(is_cancelled(&e));
        assert!(is_retryable(&anyhow::anyhow!("CUDA out of memory")));
    }
}
