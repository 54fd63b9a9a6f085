//! The dashboard's one action: "retry failed cells" (`POST /api/v1/sweeps/{sweep}/retry`), what
//! `advsweep retry SWEEP` does. The dashboard is read-only unless the coordinator has client
//! tokens: only then does a request prove who sent it, so without tokens the action is refused
//! (403) and the page does not offer it. A browser's request must also carry
//! `X-Advsweep-Action: retry`, a header a page on another site cannot add without the
//! coordinator's consent (CORS), on top of the `SameSite=Strict` cookie.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::WebState;
use super::api::{error, find, store_error};

/// The header an action request carries, and its value for retry.
pub const ACTION_HEADER: &str = "x-advsweep-action";

/// `GET /api/v1/access`: what this caller may do on the page.
pub async fn access(State(s): State<WebState>) -> Response {
    Json(json!({
        "tokens": s.auth.tokens_required(),
        "actions": if s.auth.tokens_required() { vec!["retry"] } else { vec![] },
    }))
    .into_response()
}

pub async fn retry(
    State(s): State<WebState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !s.auth.tokens_required() {
        return error(
            StatusCode::FORBIDDEN,
            "the dashboard is read-only: this coordinator has no client tokens, so no request \
             can prove who sent it (set client_tokens_file to allow retry from the page, or run \
             `advsweep retry SWEEP`)",
        );
    }
    if headers.get(ACTION_HEADER).and_then(|v| v.to_str().ok()) != Some("retry") {
        return error(
            StatusCode::FORBIDDEN,
            format!("an action needs the header {ACTION_HEADER}: retry"),
        );
    }
    let id = match find(&s, &key).await {
        Ok(id) => id,
        Err(response) => return response,
    };
    match s.scheduler.retry(&id, &[], false).await {
        Ok(out) => {
            tracing::info!(
                sweep_id = id.as_str(),
                cells = out.cells,
                runs = out.runs,
                "retry requested from the dashboard"
            );
            s.changes.notify();
            Json(json!({ "cells_requeued": out.cells, "runs_requeued": out.runs })).into_response()
        }
        Err(e) => store_error(e),
    }
}
