//! Refused worker calls, made visible: a stale report (`LEASE_LOST`, fencing at work) and a
//! call quoting another worker's lease (`NOT_LEASE_HOLDER`) are counted in `/metrics` and
//! logged at WARN, at most once per peer every few seconds (a flood of refusals costs a
//! counter, not the log). Lease ids never appear: only a digest.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tonic::Status;
use tracing::warn;

use super::caller::{Caller, RateLimit};
use super::status_of;
use crate::metrics::Metrics;
use crate::store::StoreError;
use crate::store::error::NO_RUN;
use advsweep_core::RunId;

#[derive(Debug)]
pub struct Refusals {
    metrics: Arc<Metrics>,
    stale: RateLimit,
    foreign: RateLimit,
}

impl Refusals {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Refusals {
            metrics,
            stale: RateLimit::default(),
            foreign: RateLimit::default(),
        }
    }

    /// The status answering `error` for `rpc`, counted and (rate-limited) logged when it is a
    /// refusal worth seeing.
    pub fn status(&self, rpc: &'static str, caller: &Caller, error: StoreError) -> Status {
        let peer = caller.peer.map(|p| p.to_string());
        match &error {
            StoreError::LeaseLost {
                run_id,
                attempt,
                why,
                ..
            } => {
                self.metrics.stale_reports.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = self.stale.admit(caller.peer) {
                    warn!(
                        rpc,
                        peer,
                        run_id = run_id.as_str(),
                        attempt,
                        why,
                        suppressed,
                        "stale report refused: its lease is no longer held"
                    );
                }
            }
            StoreError::NotLeaseHolder {
                run_id,
                worker_id,
                why,
            } => {
                self.metrics
                    .foreign_lease_refusals
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = self.foreign.admit(caller.peer) {
                    warn!(
                        rpc,
                        peer,
                        run_id = run_id.as_ref().map_or(NO_RUN, RunId::as_str),
                        worker_id,
                        why,
                        suppressed,
                        "call refused: it quotes a lease held by another worker"
                    );
                }
            }
            _ => {}
        }
        status_of(error)
    }
}

#[cfg(test)]
mod tests {
    use advsweep_core::LeaseId;

    use super::*;

    #[test]
    fn refusals_are_counted_in_metrics() {
        let metrics = Arc::new(Metrics::default());
        let refusals = Refusals::new(Arc::clone(&metrics));
        let caller = Caller {
            peer: Some("10.0.0.9:4000".parse().expect("addr")),
            cert_sha256: None,
        };
        let run = RunId::new("r-0000000000000001").expect("a run id");
        for _ in 0..3 {
            let stale = refusals.status(
                "CompleteCell",
                &caller,
                StoreError::LeaseLost {
                    run_id: run.clone(),
                    lease_id: LeaseId::new("l-secret").expect("a lease id"),
                    attempt: 1,
                    why: "the lease expired".into(),
                },
            );
            assert_eq!(stale.code(), tonic::Code::FailedPrecondition);
            assert!(!stale.message().contains("l-secret"), "{}", stale.message());
        }
        let foreign = refusals.status(
            "Heartbeat",
            &caller,
            crate::scheduler::fencing::not_holder(Some(&run), "w-b", "another worker's lease"),
        );
        assert_eq!(foreign.code(), tonic::Code::PermissionDenied);
        let text = metrics.render(Err(StoreError::Invalid("no store in this test".into())));
        assert!(text.contains("advsweep_stale_reports_total 3"), "{text}");
        assert!(
            text.contains("advsweep_foreign_lease_refusals_total 1"),
            "{text}"
        );
    }
}
