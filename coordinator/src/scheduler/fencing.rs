//! Fencing: whether a quoted lease is the live lease of its run.
//!
//! Every report a worker makes carries its [`LeaseRef`]; a report whose lease id or attempt no
//! longer matches the run's record, whose run is no longer leased, or whose lease has expired
//! is refused as [`StoreError::LeaseLost`], so a worker that lost its lease can never overwrite
//! or duplicate a result. The store calls [`check`] inside the transition it fences.

use advsweep_core::RunState;

use crate::store::error::StoreError;
use crate::store::records::{LeaseRecord, LeaseRef};

/// The refusal of `quote`, saying why it no longer holds.
fn lost(quote: &LeaseRef, why: String) -> StoreError {
    StoreError::LeaseLost {
        run_id: quote.run_id.clone(),
        lease_id: quote.lease_id.clone(),
        attempt: quote.attempt,
        why,
    }
}

/// Fails unless `quote` is the live lease recorded in `live` (`None`: no such run) at `now`.
pub fn check(live: Option<&LeaseRecord>, quote: &LeaseRef, now: i64) -> Result<(), StoreError> {
    let Some(live) = live else {
        return Err(lost(quote, "no such run".into()));
    };
    if live.attempt != quote.attempt || live.lease_id.as_deref() != Some(quote.lease_id.as_str()) {
        return Err(lost(
            quote,
            format!("the run is now on attempt {}", live.attempt),
        ));
    }
    if live.state != RunState::Leased {
        return Err(lost(quote, format!("the run is {}", live.state)));
    }
    if live.expires_ms.is_some_and(|e| e < now) {
        return Err(lost(quote, "the lease expired".into()));
    }
    Ok(())
}
