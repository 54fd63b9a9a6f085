//! The dashboard's pages: one HTML page and its scripts (the page's, the charts') and style, compiled into the binary
//! (nothing from a CDN: it works offline), and the sign-in form's `POST /login`, which checks a
//! client token and hands it back as an `HttpOnly` cookie. The pages themselves hold no data:
//! everything shown comes from the token-guarded API.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::WebState;
use super::access::TOKEN_COOKIE;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const CHARTS: &str = include_str!("assets/charts.js");
const STYLE: &str = include_str!("assets/app.css");

/// Only this origin's scripts, styles, fetches and event streams.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `/` and `/sweeps/{sweep}`: the page, whose script reads the path.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn charts() -> Response {
    asset("text/javascript; charset=utf-8", CHARTS)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

#[derive(Debug, Deserialize)]
pub struct Login {
    token: String,
}

/// A token a cookie can carry as it is (the token files' tokens are such).
fn cookie_safe(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 4096
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'))
}

/// The sign-in cookie for `token`.
fn token_cookie(token: &str) -> String {
    format!("{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/")
}

#[derive(Debug, Deserialize)]
pub struct SignInTarget {
    to: Option<String>,
}

/// Where a sign-in link may send the browser: a page of this dashboard (`/` or `/sweeps/…`
/// with an id's characters), never another site.
fn safe_target(to: Option<&str>) -> &str {
    match to {
        Some(path)
            if path.starts_with("/sweeps/")
                && path[1..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_')) =>
        {
            path
        }
        _ => "/",
    }
}

/// `GET /signin/{code}?to=/sweeps/…`: a one-time link ([`super::access::SignInLinks`]) signs
/// the browser in and goes on to `to`; a used or unknown code goes to the sign-in form.
pub async fn sign_in_link(
    State(state): State<WebState>,
    Path(code): Path<String>,
    Query(target): Query<SignInTarget>,
) -> Response {
    let Some(token) = state.links.take(&code) else {
        tracing::warn!("dashboard: an unknown or used sign-in link");
        return Redirect::to("/?refused").into_response();
    };
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, token_cookie(&token)),
            (
                header::LOCATION,
                safe_target(target.to.as_deref()).to_owned(),
            ),
        ],
    )
        .into_response()
}

/// `POST /login` (`token=…`): a client token comes back as the `advsweep_token` cookie and the
/// browser goes to `/`; any other token back to the form, marked refused.
pub async fn login(State(state): State<WebState>, Form(form): Form<Login>) -> Response {
    let token = form.token.trim();
    if !cookie_safe(token) || state.auth.admits_client(Some(token)).is_err() {
        tracing::warn!("dashboard sign-in refused");
        return Redirect::to("/?refused").into_response();
    }
    let cookie = token_cookie(token);
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/".to_owned()),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::safe_target;

    #[test]
    fn a_sign_in_link_only_leads_to_this_dashboards_pages() {
        assert_eq!(safe_target(Some("/sweeps/s-0123")), "/sweeps/s-0123");
        for elsewhere in [
            None,
            Some("https://evil.example/"),
            Some("//evil.example/sweeps/"),
            Some("/sweeps/../../x"),
            Some("/sweeps/a?b"),
            Some("/api/v1/sweeps"),
        ] {
            assert_eq!(safe_target(elsewhere), "/", "{elsewhere:?}");
        }
    }
}
