//! What follows an attempt that ended without success (a reported failure, an expired lease):
//! a retry after an exponential back-off with jitter, or failing the run for good once its
//! attempts run out or the error cannot succeed on retry (bad parameters, missing data).
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
}
