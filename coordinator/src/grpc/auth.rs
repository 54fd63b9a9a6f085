//! Who may call what: bearer tokens with roles, and the client certificate that mutual TLS
//! asks of workers.
//!
//! A *worker* token may only call `WorkerService` (register, lease, heartbeat, report,
//! checkpoints); a *client* token only `SweepService` (submit, status, watch, retry, cancel)
//! and reflection. gRPC health stays open so that probes work without secrets. A call with no
//! or an unknown token is `UNAUTHENTICATED`; a known token of the other role is
//! `PERMISSION_DENIED`. Tokens are kept only as SHA-256 digests and compared in constant time
//! (every digest is compared, whichever matches), so neither timing nor a memory dump of the
//! policy gives a token away; they are never logged.

use std::sync::Arc;

use advsweep_settings::{CoordinatorSettings, Secret};
use sha2::{Digest, Sha256};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The two kinds of callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Worker,
    Client,
}

impl Role {
    fn service(self) -> &'static str {
        match self {
            Role::Worker => "WorkerService",
            Role::Client => "SweepService",
        }
    }
}

type TokenDigest = [u8; 32];

/// The coordinator's access policy. The default admits every call (no tokens configured).
#[derive(Clone, Default)]
pub struct Auth {
    worker: Arc<[TokenDigest]>,
    client: Arc<[TokenDigest]>,
    worker_cert_required: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("worker_tokens", &self.worker.len())
            .field("client_tokens", &self.client.len())
            .field("worker_cert_required", &self.worker_cert_required)
            .finish()
    }
}

fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// Equal digests, in time independent of where they differ.
fn same(a: &TokenDigest, b: &TokenDigest) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Whether `presented` is in `known`, comparing against every entry.
fn known(known: &[TokenDigest], presented: &TokenDigest) -> bool {
    known
        .iter()
        .fold(false, |hit, candidate| hit | same(candidate, presented))
}

impl Auth {
    pub fn new(
        worker_tokens: &[Secret],
        client_tokens: &[Secret],
        worker_cert_required: bool,
    ) -> Self {
        let digests = |tokens: &[Secret]| -> Arc<[TokenDigest]> {
            tokens.iter().map(|t| digest(t.expose())).collect()
        };
        Auth {
            worker: digests(worker_tokens),
            client: digests(client_tokens),
            worker_cert_required,
        }
    }

    /// The policy a coordinator's settings describe.
    pub fn from_settings(settings: &CoordinatorSettings) -> Self {
        Auth::new(
            &settings.worker_tokens,
            &settings.client_tokens,
            settings.worker_cert_required(),
        )
    }

    pub fn tokens_required(&self) -> bool {
        !self.worker.is_empty() || !self.client.is_empty()
    }

    /// Whether a dashboard request presenting `token` may read: always without tokens; with
    /// them, only a client token (a worker's is not enough). `Err` says why not.
    pub fn admits_client(&self, token: Option<&str>) -> Result<(), &'static str> {
        if !self.tokens_required() {
            return Ok(());
        }
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(
                "this coordinator needs a client token: `Authorization: Bearer <token>` \
                        or the advsweep_token cookie",
            );
        };
        let presented = digest(token);
        if known(&self.client, &presented) {
            Ok(())
        } else if known(&self.worker, &presented) {
            Err("a worker token may not read the dashboard; use a client token")
        } else {
            Err("unknown token")
        }
    }

    /// The interceptor guarding one service.
    pub fn guard(&self, role: Role) -> Guard {
        Guard {
            auth: self.clone(),
            role,
        }
    }

    fn check<T>(&self, role: Role, request: &Request<T>) -> Result<(), Status> {
        if role == Role::Worker
            && self.worker_cert_required
            && request.peer_certs().is_none_or(|certs| certs.is_empty())
        {
            return Err(Status::unauthenticated(
                "worker calls need a client certificate signed by the coordinator's \
                 tls_client_ca (mutual TLS)",
            ));
        }
        if !self.tokens_required() {
            return Ok(());
        }
        let presented = bearer_token(request)?;
        let presented = digest(presented);
        let as_worker = known(&self.worker, &presented);
        let as_client = known(&self.client, &presented);
        let allowed = match role {
            Role::Worker => as_worker,
            Role::Client => as_client,
        };
        if allowed {
            Ok(())
        } else if as_worker || as_client {
            tracing::warn!(
                service = role.service(),
                "call with a token of the other role refused"
            );
            Err(Status::permission_denied(format!(
                "this token's role may not call {}",
                role.service()
            )))
        } else {
            tracing::warn!(
                service = role.service(),
                "call with an unknown token refused"
            );
            Err(Status::unauthenticated("unknown bearer token"))
        }
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer_token<T>(request: &Request<T>) -> Result<&str, Status> {
    let value = request.metadata().get("authorization").ok_or_else(|| {
        Status::unauthenticated("missing bearer token (`authorization: Bearer <token>`)")
    })?;
    let text = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not ASCII"))?;
    let (scheme, token) = text.split_once(' ').ok_or_else(|| {
        Status::unauthenticated("the authorization header is not `Bearer <token>`")
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Status::unauthenticated(
            "the authorization header is not `Bearer <token>`",
        ));
    }
    Ok(token.trim())
}

/// Checks every call of one service against the policy.
#[derive(Debug, Clone)]
pub struct Guard {
    auth: Auth,
    role: Role,
}

impl Interceptor for Guard {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.auth.check(self.role, &request)?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const W: &str = "worker-token-0123456789";
    const C: &str = "client-token-0123456789";

    fn call(auth: &Auth, role: Role, header: Option<&str>) -> Result<(), Code> {
        let mut request = Request::new(());
        if let Some(h) = header {
            request
                .metadata_mut()
                .insert("authorization", h.parse().expect("ascii header"));
        }
        auth.guard(role)
            .call(request)
            .map(|_| ())
            .map_err(|s| s.code())
    }

    #[test]
    fn roles_are_kept_apart() {
        let auth = Auth::new(&[Secret::new(W)], &[Secret::new(C)], false);
        assert_eq!(
            call(&auth, Role::Worker, Some(&format!("Bearer {W}"))),
            Ok(())
        );
        assert_eq!(
            call(&auth, Role::Client, Some(&format!("bearer {C}"))),
            Ok(())
        );
        assert_eq!(
            call(&auth, Role::Worker, Some(&format!("Bearer {C}"))),
            Err(Code::PermissionDenied)
        );
        assert_eq!(
            call(&auth, Role::Client, Some(&format!("Bearer {W}"))),
            Err(Code::PermissionDenied)
        );
        for bad in [
            None,
            Some("Bearer nope-nope-nope-nope"),
            Some(W),
            Some("Basic abc"),
            Some("Bearer "),
        ] {
            assert_eq!(
                call(&auth, Role::Client, bad),
                Err(Code::Unauthenticated),
                "{bad:?}"
            );
        }
        assert!(!format!("{auth:?}").contains(W));
    }

    #[test]
    fn no_tokens_admits_everyone_but_mtls_still_asks_workers_for_a_certificate() {
        let open = Auth::default();
        assert_eq!(call(&open, Role::Worker, None), Ok(()));
        let mtls = Auth::new(&[], &[], true);
        assert_eq!(call(&mtls, Role::Worker, None), Err(Code::Unauthenticated));
        assert_eq!(call(&mtls, Role::Client, None), Ok(()));
    }
}
