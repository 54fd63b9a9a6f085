//! Who may read the dashboard: with client tokens configured (`client_tokens`), a request
//! must present one — `Authorization: Bearer <token>` (scripts, `curl`) or the
//! `advsweep_token` cookie (a browser) — checked like the gRPC `SweepService`'s (digests
//! compared in constant time); without tokens, everyone on the listening address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::WebState;
use super::api::error;

/// One-time sign-in links: `advsweep run`'s embedded coordinator has a fresh random client
/// token nobody typed, so it prints `/signin/CODE` instead; the first visit trades the code for
/// the token's cookie and the code is gone (a link left in a scrollback is worth nothing).
#[derive(Debug, Clone, Default)]
pub struct SignInLinks(Arc<Mutex<HashMap<String, String>>>);

impl SignInLinks {
    /// Lets `code` sign a browser in once with `token`.
    pub fn add(&self, code: String, token: String) {
        if let Ok(mut links) = self.0.lock() {
            links.insert(code, token);
        }
    }

    /// The token of `code`, once.
    pub fn take(&self, code: &str) -> Option<String> {
        self.0.lock().ok()?.remove(code)
    }
}

/// The cookie a browser presents its token in.
pub const TOKEN_COOKIE: &str = "advsweep_token";

/// The token a request presents: its bearer header, else its cookie.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    bearer.or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == TOKEN_COOKIE)
            .map(|(_, token)| token.trim())
    })
}

pub async fn require_client_token(
    State(state): State<WebState>,
    request: Request,
    next: Next,
) -> Response {
    match state.auth.admits_client(presented(request.headers())) {
        Ok(()) => next.run(request).await,
        Err(why) => {
            tracing::warn!(path = %request.uri().path(), why, "dashboard request refused");
            error(StatusCode::UNAUTHORIZED, why)
        }
    }
}

/// What a gRPC client that dialled an HTTP port is told (as a gRPC status, `UNIMPLEMENTED`, so
/// the CLI prints it instead of a protocol error).
const NOT_GRPC: &str = "this is the coordinator's HTTP port (metrics port or dashboard), not gRPC; \
                        use the port it serves gRPC on, its `listen` address";

/// Answers a gRPC call (`content-type: application/grpc…`) that reached an HTTP port with a
/// gRPC status saying so; every other request passes.
pub async fn refuse_grpc(request: Request, next: Next) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !grpc {
        return next.run(request).await;
    }
    (
        StatusCode::OK,
        [
            ("content-type", "application/grpc"),
            ("grpc-status", "12"),
            ("grpc-message", NOT_GRPC),
        ],
    )
        .into_response()
}
