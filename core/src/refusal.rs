//! Why the coordinator refused a worker's call, in a form the worker can act on.
//!
//! A refused call carries a gRPC code people can read and, in the status details, a
//! `google.rpc.ErrorInfo` whose `domain` is [`DOMAIN`] and whose `reason` is one of the
//! spellings below. Workers act on the reason (register again, drop the run) rather than
//! guessing from the code; the code stays what v1 always sent, so a worker built before the
//! reasons existed behaves as it did.

use std::fmt;

/// The `ErrorInfo.domain` of advsweep's refusals.
pub const DOMAIN: &str = "advsweep.dev/v1";

/// A refusal a worker is expected to handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The coordinator does not know the calling worker (it restarted on a fresh state
    /// directory, or forgot a worker that was gone too long): register again, then lease.
    /// Code: `UNAUTHENTICATED`.
    WorkerUnknown,
    /// The lease the call quotes is no longer held (expired, re-granted, or its run was
    /// cancelled): stop working on the run and drop what it produced. Code:
    /// `FAILED_PRECONDITION`.
    LeaseLost,
    /// The quoted lease is held by another worker (the caller quoted a lease granted to a
    /// different worker id, an id that is not registered, or, under mutual TLS, a worker id
    /// registered with another client certificate). A worker that gets it treats it as
    /// [`Refusal::LeaseLost`]: it stops the run and drops what it produced. Code:
    /// `PERMISSION_DENIED`.
    NotLeaseHolder,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [
        Refusal::WorkerUnknown,
        Refusal::LeaseLost,
        Refusal::NotLeaseHolder,
    ];

    /// The `ErrorInfo.reason` spelling (UPPER_SNAKE_CASE, as Google's API guidelines ask).
    pub const fn as_str(self) -> &'static str {
        match self {
            Refusal::WorkerUnknown => "WORKER_UNKNOWN",
            Refusal::LeaseLost => "LEASE_LOST",
            Refusal::NotLeaseHolder => "NOT_LEASE_HOLDER",
        }
    }

    /// The refusal spelled `reason`; `None` for a reason this build does not know.
    pub fn parse(reason: &str) -> Option<Refusal> {
        Refusal::ALL.into_iter().find(|r| r.as_str() == reason)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back() {
        for r in Refusal::ALL {
            assert_eq!(Refusal::parse(r.as_str()), Some(r));
        }
        assert_eq!(Refusal::parse("SOMETHING_NEWER"), None);
    }
}
