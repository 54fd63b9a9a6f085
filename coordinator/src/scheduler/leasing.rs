//! Leasing rules: a lease is granted on a whole run (train once, evaluate all its pending
//! cells), the oldest ready run first; it lives for the policy's TTL unless heartbeats renew
//! it, and one that lapses ends its attempt as [`EXPIRED_REASON`] (a failed attempt, retried
//! with back-off: [`super::retry`]). When no run is ready the worker is told when to ask
//! again.

use super::policy::LeaseSettings;
use crate::store::records::LeaseOutcome;

/// Why an expired lease's attempt ended.
pub const EXPIRED_REASON: &str = "no heartbeat within the lease TTL (worker died or hung)";

/// Shortest and longest wait a worker is told to take when no run is ready (ms).
const WAIT_MS: (i64, i64) = (50, 1000);

/// When a lease granted or renewed at `now` expires.
pub fn expires_at(policy: &LeaseSettings, now: i64) -> i64 {
    now.saturating_add(LeaseSettings::ms(policy.lease_ttl))
}

/// The answer when no run is ready at `now`: idle when nothing is left to do
/// (`next_ready` is `None`), else wait until the next run is ready, within [`WAIT_MS`].
pub fn nothing_ready(next_ready: Option<i64>, now: i64) -> LeaseOutcome {
    match next_ready {
        None => LeaseOutcome::Idle,
        Some(at) => LeaseOutcome::Wait {
            retry_after_ms: u64::try_from(at.saturating_sub(now).clamp(WAIT_MS.0, WAIT_MS.1))
                .unwrap_or(1000),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_bounded_and_idle_means_nothing_left() {
        assert!(matches!(nothing_ready(None, 5), LeaseOutcome::Idle));
        let wait = |at| match nothing_ready(Some(at), 1_000) {
            LeaseOutcome::Wait { retry_after_ms } => retry_after_ms,
            other => panic!("{other:?}"),
        };
        assert_eq!(wait(1_000), 50);
        assert_eq!(wait(1_300), 300);
        assert_eq!(wait(90_000), 1000);
    }
}
