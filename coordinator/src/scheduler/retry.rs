//! What follows an attempt that ended without success: a retry after an exponential back-off
//! with jitter, or failing the run for good.
//!
//! Two budgets, counted apart since the run was last submitted or retried:
//! - **errors** the worker reported ([`after_failure`]): up to the sweep's `max_attempts`, and
//!   at once when the error cannot succeed on retry (bad parameters, missing data);
//! - **expired leases** ([`after_expiry`]): the worker vanished (kill -9, a node lost without
//!   SIGTERM, a network partition), which is usually the node's fault, not the run's. They
//!   have their own, larger budget ([`LeaseSettings::max_expiries`]), and a run is taken for
//!   poisonous — failed at once — only when its attempts died on
//!   [`LeaseSettings::poison_workers`] distinct workers (a run that kills whatever runs it,
//!   e.g. by running out of memory).
//!
//! Preemption ([`crate::store::StateStore::release_run`]) is not a failure and never comes here.

use advsweep_core::AttemptOutcome;

use super::policy::LeaseSettings;

/// An attempt that ended without success, as the store read it.
#[derive(Debug, Clone, Copy)]
pub struct FailedAttempt<'a> {
    pub attempt: u32,
    /// `Failed` (reported by the worker) or `Expired` (no heartbeat).
    pub outcome: AttemptOutcome,
    pub reason: &'a str,
    pub retryable: bool,
    /// Failed attempts since the last submit/retry, this one included.
    pub failures: u32,
    pub max_attempts: u32,
}

/// The decision for a run whose attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    /// Back to `pending`, leasable from `at` (ms since the epoch); `error` is shown meanwhile.
    Retry { at: i64, error: String },
    /// `failed`, with its pending cells, for good.
    Fail { error: String },
}

/// Decides what becomes of a run after `failed`, at `now`.
pub fn after_failure(policy: &LeaseSettings, failed: FailedAttempt<'_>, now: i64) -> AfterFailure {
    let FailedAttempt {
        attempt,
        outcome,
        reason,
        retryable,
        failures,
        max_attempts,
    } = failed;
    let error = format!("attempt {attempt} {outcome}: {reason}");
    if retryable && failures < max_attempts {
        AfterFailure::Retry {
            at: now + policy.backoff_ms(failures),
            error,
        }
    } else if retryable {
        AfterFailure::Fail {
            error: format!("{error} (gave up after {failures} failed attempts)"),
        }
    } else {
        AfterFailure::Fail {
            error: format!("{error} (not retryable)"),
        }
    }
}

/// An attempt whose lease expired, as the store read it.
#[derive(Debug, Clone, Copy)]
pub struct ExpiredAttempt {
    pub attempt: u32,
    /// Expired attempts since the last submit/retry, this one included.
    pub expiries: u32,
    /// Distinct workers those expired attempts ran on.
    pub workers: u32,
}

/// Decides what becomes of a run after its lease expired, at `now`.
pub fn after_expiry(
    policy: &LeaseSettings,
    expired: ExpiredAttempt,
    reason: &str,
    now: i64,
) -> AfterFailure {
    let ExpiredAttempt {
        attempt,
        expiries,
        workers,
    } = expired;
    let error = format!("attempt {attempt} {}: {reason}", AttemptOutcome::Expired);
    if workers >= policy.poison_workers.max(1) {
        AfterFailure::Fail {
            error: format!(
                "{error} (gave up: its attempts died on {workers} different workers, so the run \
                 itself is the likely cause, e.g. running out of memory)"
            ),
        }
    } else if expiries >= policy.max_expiries.max(1) {
        AfterFailure::Fail {
            error: format!("{error} (gave up after {expiries} expired leases)"),
        }
    } else {
        AfterFailure::Retry {
            at: now + policy.backoff_ms(expiries),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn failed(failures: u32, retryable: bool) -> FailedAttempt<'static> {
        FailedAttempt {
            attempt: failures,
            outcome: AttemptOutcome::Failed,
            reason: "CUDA OOM",
            retryable,
            failures,
            max_attempts: 3,
        }
    }

    #[test]
    fn retries_with_backoff_until_attempts_run_out() {
        let policy = LeaseSettings {
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(120),
            ..LeaseSettings::default()
        };
        let AfterFailure::Retry { at, error } = after_failure(&policy, failed(2, true), 1_000)
        else {
            panic!("a second failure of three is retried");
        };
        // 2 s doubled once, ±25 %.
        assert!((1_000 + 3_000..=1_000 + 5_000).contains(&at), "{at}");
        assert_eq!(error, "attempt 2 failed: CUDA OOM");
        assert_eq!(
            after_failure(&policy, failed(3, true), 0),
            AfterFailure::Fail {
                error: "attempt 3 failed: CUDA OOM (gave up after 3 failed attempts)".into()
            }
        );
        assert_eq!(
            after_failure(&policy, failed(1, false), 0),
            AfterFailure::Fail {
                error: "attempt 1 failed: CUDA OOM (not retryable)".into()
            }
        );
    }

    #[test]
    fn lost_workers_have_their_own_budget_and_poison_takes_distinct_workers() {
        let policy = LeaseSettings::default();
        let expired = |expiries, workers| ExpiredAttempt {
            attempt: expiries,
            expiries,
            workers,
        };
        // One flaky node losing the run again and again: retried well past max_attempts.
        for n in 1..policy.max_expiries {
            assert!(
                matches!(
                    after_expiry(&policy, expired(n, 1), "gone", 0),
                    AfterFailure::Retry { .. }
                ),
                "{n}"
            );
        }
        assert!(matches!(
            after_expiry(&policy, expired(policy.max_expiries, 1), "gone", 0),
            AfterFailure::Fail { .. }
        ));
        // Two distinct workers lost: still the nodes' fault; three: the run's.
        assert!(matches!(
            after_expiry(&policy, expired(2, 2), "gone", 0),
            AfterFailure::Retry { .. }
        ));
        let AfterFailure::Fail { error } = after_expiry(&policy, expired(3, 3), "gone", 0) else {
            panic!("a run that died on three workers is poisonous");
        };
        assert!(error.contains("3 different workers"), "{error}");
    }
}
