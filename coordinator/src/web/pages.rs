//! The dashboard's pages: one HTML page and its scripts (the page's, the charts') and style, compiled into the binary
//! (nothing from a CDN: it works offline), and the sign-in form's `POST /login`, which checks a
//! client token and hands it back as an `HttpOnly` cookie. The pages themselves hold no data:
//! everything shown comes from the token-guarded API.

use axum::Form;
use axum::extract::State;
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

/// `POST /login` (`token=…`): a client token comes back as the `advsweep_token` cookie and the
/// browser goes to `/`; any other token back to the form, marked refused.
pub async fn login(State(state): State<WebState>, Form(form): Form<Login>) -> Response {
    let token = form.token.trim();
    if !cookie_safe(token) || state.auth.admits_client(Some(token)).is_err() {
        tracing::warn!("dashboard sign-in refused");
        return Redirect::to("/?refused").into_response();
    }
    let cookie = format!("{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/".to_owned()),
        ],
    )
        .into_response()
}
