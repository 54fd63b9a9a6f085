//! Calling the coordinator through transport failures: which gRPC statuses are worth another
//! try ([`is_transient`]), which mean the lease is no longer ours ([`lease_gone`]), and the
//! capped exponential back-off that retries them ([`call`]).
//!
//! Kept apart from the lease loop and the per-lease reporting so that the retry policy, and the
//! meaning the worker gives to status codes, is read and changed in one place.

use std::future::Future;
use std::time::{Duration, Instant};

use advsweep_proto::v1::worker_service_client::WorkerServiceClient;
use advsweep_settings::AuthChannel;
use tonic::{Code, Status};
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

/// Transport-level failures worth another try.
pub(super) fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
    )
}

/// The coordinator no longer considers this lease ours.
pub(super) fn lease_gone(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::FailedPrecondition | Code::NotFound | Code::Unauthenticated
    )
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
    use super::*;

    #[test]
    fn transient_and_gone_codes() {
        assert!(is_transient(&Status::unavailable("down")));
        assert!(!is_transient(&Status::invalid_argument("bad")));
        assert!(lease_gone(&Status::failed_precondition("expired")));
        assert!(lease_gone(&Status::not_found("no such lease")));
        assert!(!lease_gone(&Status::unavailable("down")));
    }
}
