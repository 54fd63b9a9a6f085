//! The timing and retry policy of leases: how long a lease lives, how often workers renew it,
//! how long a failed run waits before its next attempt, and how many lost workers a run may
//! outlive (`scheduler::retry`).

use std::time::Duration;

use crate::store::ids::random_id;

/// Timing and retry policy.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// A lease not renewed within this time is lost and its run re-queued.
    pub lease_ttl: Duration,
    /// How often workers are told to heartbeat (well under the TTL).
    pub heartbeat_interval: Duration,
    /// First retry delay; doubles per failure, with ±25 % jitter, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Expired leases (lost workers) a run may outlive since it was last submitted or retried:
    /// a budget of its own, apart from the sweep's `max_attempts` for reported errors.
    pub max_expiries: u32,
    /// A run whose expired attempts died on this many distinct workers is taken for the cause
    /// (it kills its workers, e.g. out of memory) and failed.
    pub poison_workers: u32,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings {
            lease_ttl: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(120),
            max_expiries: 10,
            poison_workers: 3,
        }
    }
}

impl LeaseSettings {
    pub fn ms(d: Duration) -> i64 {
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }

    /// Delay before attempt `failures + 1` may start.
    pub fn backoff_ms(&self, failures: u32) -> i64 {
        let exp = failures.saturating_sub(1).min(20);
        let raw = Self::ms(self.retry_base).saturating_mul(1 << exp);
        let capped = raw.min(Self::ms(self.retry_max));
        // Jitter in [-25 %, +25 %] from a random id's bits.
        let bits = u64::from_str_radix(&random_id("")[..8], 16).unwrap_or(0);
        let jitter = (bits % 501) as i64 - 250; // per mille, in [-250, 250]
        (capped + capped * jitter / 1000).max(0)
    }
}
