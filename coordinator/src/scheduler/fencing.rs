//! Fencing: whether a quoted lease is the live lease of its run, and whether the caller is the
//! worker it was granted to.
//!
//! Every report a worker makes carries its [`LeaseRef`]. A quote for an attempt that another
//! worker holds is refused as [`StoreError::NotLeaseHolder`] (`PERMISSION_DENIED`): a lease id
//! is a secret, but one seen in a log line or in plaintext traffic must not let a second worker
//! (or an unregistered id) report under it, and the forged id must never be what an attempt
//! records. A quote whose lease id or attempt no longer matches the run's record, whose run is
//! no longer leased, or whose lease has expired is refused as [`StoreError::LeaseLost`], so a
//! worker that lost its lease can never overwrite or duplicate a result. The store calls
//! [`check`] inside the transition it fences.

use advsweep_core::{RunId, RunState};

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

/// The refusal of a caller that is not the worker a lease was granted to, on `run_id` (`None`:
/// a lease request, about no run yet).
pub fn not_holder(run_id: Option<&RunId>, worker_id: &str, why: &str) -> StoreError {
    StoreError::NotLeaseHolder {
        run_id: run_id.cloned(),
        worker_id: worker_id.to_owned(),
        why: why.to_owned(),
    }
}

/// Fails when `quote` names the run's current attempt but another worker holds it. A quote for
/// an older attempt passes (fencing then refuses it as lost, or it is a repeated report of a
/// finished one): who held an attempt that is over no longer matters.
pub fn check_holder(live: Option<&LeaseRecord>, quote: &LeaseRef) -> Result<(), StoreError> {
    match live {
        Some(live)
            if live.attempt == quote.attempt
                && live
                    .worker_id
                    .as_deref()
                    .is_some_and(|holder| holder != quote.worker_id) =>
        {
            Err(not_holder(
                Some(&quote.run_id),
                &quote.worker_id,
                "the lease was granted to another worker",
            ))
        }
        _ => Ok(()),
    }
}

/// Fails unless `quote` is the live lease recorded in `live` (`None`: no such run) at `now`,
/// quoted by the worker it was granted to.
pub fn check(live: Option<&LeaseRecord>, quote: &LeaseRef, now: i64) -> Result<(), StoreError> {
    check_holder(live, quote)?;
    let Some(live) = live else {
        return Err(lost(quote, "no such run".into()));
    };
    if live.attempt != quote.attempt || live.lease_id.as_ref() != Some(&quote.lease_id) {
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

/// Fails unless `worker_id` holds the live lease of `run_id` (recorded in `live`): what a
/// checkpoint download, which quotes no lease, must show.
pub fn check_download(
    live: Option<&LeaseRecord>,
    run_id: &RunId,
    worker_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    let held = live.is_some_and(|l| {
        l.state == RunState::Leased
            && l.worker_id.as_deref() == Some(worker_id)
            && l.expires_ms.is_none_or(|e| e >= now)
    });
    if held {
        Ok(())
    } else {
        Err(not_holder(
            Some(run_id),
            worker_id,
            "checkpoints are sent only to the worker holding the run's lease",
        ))
    }
}

#[cfg(test)]
mod tests {
    use advsweep_core::LeaseId;

    use super::*;

    fn run() -> RunId {
        RunId::new("r-0000000000000001").expect("a run id")
    }

    fn live(worker: &str) -> LeaseRecord {
        LeaseRecord {
            state: RunState::Leased,
            lease_id: Some(LeaseId::new("l-secret").expect("a lease id")),
            attempt: 3,
            expires_ms: Some(1_000),
            worker_id: Some(worker.into()),
        }
    }

    fn quote(worker: &str, attempt: u32) -> LeaseRef {
        LeaseRef {
            worker_id: worker.into(),
            run_id: run(),
            lease_id: LeaseId::new("l-secret").expect("a lease id"),
            attempt,
        }
    }

    #[test]
    fn only_the_holder_may_quote_a_live_lease() {
        let a = live("w-a");
        assert!(check(Some(&a), &quote("w-a", 3), 500).is_ok());
        for forger in ["w-b", "w-never-registered"] {
            assert!(matches!(
                check(Some(&a), &quote(forger, 3), 500),
                Err(StoreError::NotLeaseHolder { .. })
            ));
        }
        // An older attempt is simply lost, whoever quotes it.
        assert!(matches!(
            check(Some(&a), &quote("w-b", 2), 500),
            Err(StoreError::LeaseLost { .. })
        ));
        assert!(matches!(
            check(Some(&a), &quote("w-a", 3), 1_001),
            Err(StoreError::LeaseLost { .. })
        ));
    }

    #[test]
    fn lease_ids_stay_out_of_messages() {
        let err = check(None, &quote("w-a", 3), 0).expect_err("no run");
        assert!(!err.to_string().contains("l-secret"), "{err}");
    }

    #[test]
    fn downloads_go_to_the_holder_only() {
        let a = live("w-a");
        assert!(check_download(Some(&a), &run(), "w-a", 500).is_ok());
        assert!(check_download(Some(&a), &run(), "w-b", 500).is_err());
        assert!(check_download(Some(&a), &run(), "w-a", 1_001).is_err());
        assert!(check_download(None, &run(), "w-a", 0).is_err());
    }
}
