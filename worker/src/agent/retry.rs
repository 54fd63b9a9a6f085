//! Calling the coordinator through transport failures: which gRPC statuses are worth another
//! try ([`is_transient`]), which mean the lease is no longer ours ([`lease_gone`]) or that the
//! coordinator forgot this worker ([`must_register`]) — read from the refusal reason in the
//! status details (`advsweep_core::refusal`), or from the codes of an older coordinator — and
//! the capped exponential back-off that retries them ([`call`]).
//!
//! Kept apart from the lease loop and the per-lease reporting so that the retry policy, and the
//! meaning the worker gives to status codes, is read and changed in one place.

use std::future::Future;
use std::time::{Duration, Instant};

use advsweep_core::refusal::{self, Refusal};
use advsweep_proto::v1::worker_service_client::WorkerServiceClient;
use advsweep_settings::AuthChannel;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use tracing::warn;

/// The worker's client of `WorkerService`, bearer token attached.
pub(super) type Client = WorkerServiceClient<AuthChannel>;

/// An RPC future that owns its client clone and request copy (tonic's generated methods
/// borrow the client mutably), for use in retry closures.
macro_rules! rpc {
    ($client:expr, $method:ident, $request:expr) => {{
        let mut client = $client.clone();
        let request = $request.clone();
        async move { client.$method(request).await }
    }};
}
pub(super) use rpc;

/// How long a report keeps being retried through transport failures: long enough to ride out a
/// coordinator restart (its state is durable), after which the lease may have expired anyway.
const RPC_RETRY_WINDOW: Duration = Duration::from_secs(60);
/// The first wait after a failed call; each further failure doubles it.
pub(super) const RPC_FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two tries of one report.
const RPC_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Transport-level failures worth another try (the contract's rule, shared with the load bench).
pub(super) use advsweep_proto::is_transient;

/// The refusal reason a coordinator put in the status details (`google.rpc.ErrorInfo` in
/// advsweep's domain), if any: what the worker acts on. `None` from a coordinator built before
/// the reasons existed, or for a reason this build does not know.
fn refusal(status: &Status) -> Option<Refusal> {
    let info = status.get_details_error_info()?;
    (info.domain == refusal::DOMAIN)
        .then(|| Refusal::parse(&info.reason))
        .flatten()
}

/// Whether a status carries no advsweep error details at all (an older coordinator): then the
/// code is all there is to go on.
fn without_reason(status: &Status) -> bool {
    status.get_details_error_info().is_none()
}

/// The coordinator no longer considers this lease ours: the lease is lost, held by another
/// worker as far as the coordinator can tell, or the coordinator does not know this worker at
/// all. From an older coordinator, read from the codes it used.
pub(super) fn lease_gone(status: &Status) -> bool {
    match refusal(status) {
        Some(Refusal::LeaseLost | Refusal::NotLeaseHolder | Refusal::WorkerUnknown) => true,
        None => {
            without_reason(status)
                && matches!(
                    status.code(),
                    Code::FailedPrecondition | Code::NotFound | Code::Unauthenticated
                )
        }
    }
}

/// The coordinator does not know this worker (it restarted on a fresh state directory):
/// register again. From an older coordinator, read from the codes it used.
pub(super) fn must_register(status: &Status) -> bool {
    match refusal(status) {
        Some(Refusal::WorkerUnknown) => true,
        Some(Refusal::LeaseLost | Refusal::NotLeaseHolder) => false,
        None => {
            without_reason(status)
                && matches!(
                    status.code(),
                    Code::NotFound | Code::Unauthenticated | Code::FailedPrecondition
                )
        }
    }
}

/// Calls an RPC, retrying transient failures with exponential backoff (capped) for up to
/// [`RPC_RETRY_WINDOW`]. Reports are idempotent on the coordinator, so a retry after a lost
/// response cannot duplicate anything.
pub(super) async fn call<T, F, Fut>(rpc: &'static str, mut f: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let mut delay = RPC_FIRST_BACKOFF;
    let mut attempt = 1;
    let started = Instant::now();
    loop {
        match f().await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) if is_transient(&status) && started.elapsed() < RPC_RETRY_WINDOW => {
                warn!(
                    rpc,
                    attempt,
                    code = ?status.code(),
                    message = status.message(),
                    "RPC failed; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RPC_MAX_BACKOFF);
                attempt += 1;
            }
            Err(status) => return Err(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn transient_and_gone_codes() {
        assert!(is_transient(&Status::unavailable("down")));
        assert!(!is_transient(&Status::invalid_argument("bad")));
        assert!(lease_gone(&Status::failed_precondition("expired")));
        assert!(lease_gone(&Status::not_found("no such lease")));
        assert!(!lease_gone(&Status::unavailable("down")));
    }

    fn refused(code: Code, reason: &str, domain: &str) -> Status {
        Status::with_error_details(
            code,
            "refused",
            ErrorDetails::with_error_info(reason, domain, HashMap::new()),
        )
    }

    #[test]
    fn reasons_decide_over_codes() {
        let unknown = refused(
            Code::Unauthenticated,
            Refusal::WorkerUnknown.as_str(),
            refusal::DOMAIN,
        );
        assert!(must_register(&unknown) && lease_gone(&unknown));
        let lost = refused(
            Code::FailedPrecondition,
            Refusal::LeaseLost.as_str(),
            refusal::DOMAIN,
        );
        assert!(lease_gone(&lost) && !must_register(&lost));
        // Another worker's lease (or a certificate that is not ours): drop the run, like a
        // lost lease; a bare PERMISSION_DENIED (a token of the wrong role) is not acted on.
        let elsewhere = refused(
            Code::PermissionDenied,
            Refusal::NotLeaseHolder.as_str(),
            refusal::DOMAIN,
        );
        assert!(lease_gone(&elsewhere) && !must_register(&elsewhere));
        assert!(!lease_gone(&Status::permission_denied("wrong role")));
        // A reason from elsewhere, or one this build does not know, is not acted on.
        let foreign = refused(Code::FailedPrecondition, "LEASE_LOST", "example.com");
        assert!(!lease_gone(&foreign) && !must_register(&foreign));
        let newer = refused(Code::FailedPrecondition, "SOMETHING_NEWER", refusal::DOMAIN);
        assert!(!lease_gone(&newer) && !must_register(&newer));
    }

    #[test]
    fn an_older_coordinator_is_read_by_its_codes() {
        assert!(must_register(&Status::unauthenticated("unknown worker")));
        assert!(must_register(&Status::not_found("unknown worker")));
        assert!(!must_register(&Status::unavailable("down")));
        assert!(!must_register(&Status::invalid_argument("bad")));
    }
}
