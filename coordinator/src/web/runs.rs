//! The runs of a sweep as the coordinator sees them now — which worker holds each, its epoch
//! and loss and throughput, every attempt and how it ended — for the runs in flight and the run
//! page, and a run's newest checkpoint as a download. The numbers a report shows come from
//! [`super::api`]; these are the operational facts a report leaves out.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use advsweep_core::RunId;

use super::WebState;
use super::api::{built, error, store_error};
use crate::store::{AttemptRecord, RunStatus};

fn attempt_json(a: &AttemptRecord) -> serde_json::Value {
    json!({
        "attempt": a.attempt,
        "worker_id": a.worker_id,
        "outcome": a.outcome.as_str(),
        "reason": a.reason,
        "ended_ms": a.ended_ms,
    })
}

/// A run as the dashboard shows it: identity, state, the worker holding it, its epochs (the
/// learning curve; the last one is where a run in flight stands) and its attempts.
pub fn run_json(r: &RunStatus) -> serde_json::Value {
    json!({
        "run_id": r.run_id.as_str(),
        "model": r.model,
        "defense": r.defense_name,
        "defense_epsilon": r.defense_epsilon,
        "epsilon_space": r.epsilon_space,
        "seed": r.seed,
        "state": r.state.as_str(),
        "attempt": r.attempt,
        "max_attempts": r.max_attempts,
        "worker_id": r.worker_id,
        "worker_name": r.worker_name,
        "error": r.error,
        "epochs_planned": r.epochs_planned,
        "epochs": r.epochs,
        "warnings": r.warnings,
        "attempts": r.attempts.iter().map(attempt_json).collect::<Vec<_>>(),
    })
}

/// `GET /api/v1/sweeps/{sweep}/runs`: every run of the sweep, in file order.
pub async fn runs(State(s): State<WebState>, Path(key): Path<String>) -> Response {
    match built(&s, &key).await {
        Ok(b) => ([(header::CONTENT_TYPE, "application/json")], b.runs_json()).into_response(),
        Err(response) => response,
    }
}

/// The run `run` of the sweep `key` names, or the answer saying why not.
async fn run_of(s: &WebState, key: &str, run: &str) -> Result<RunStatus, Response> {
    let b = built(s, key).await?;
    let id = &b.detail.summary.sweep_id;
    let not_in = || {
        let shown: String = run.chars().take(80).collect();
        error(
            StatusCode::NOT_FOUND,
            format!("sweep {id} has no run {shown:?}"),
        )
    };
    let run_id: RunId = run.parse().map_err(|_| not_in())?;
    b.detail
        .runs
        .iter()
        .find(|r| r.run_id == run_id)
        .cloned()
        .ok_or_else(not_in)
}

/// `GET /api/v1/sweeps/{sweep}/runs/{run}`: one run, with its checkpoint if one is stored.
pub async fn run(State(s): State<WebState>, Path((key, run)): Path<(String, String)>) -> Response {
    let status = match run_of(&s, &key, &run).await {
        Ok(status) => status,
        Err(response) => return response,
    };
    let checkpoint = match s.scheduler.latest_checkpoint(&status.run_id).await {
        Ok(c) => c,
        Err(e) => return store_error(e),
    };
    let mut body = run_json(&status);
    body["checkpoint"] = match checkpoint {
        Some(c) => json!({ "epoch": c.epoch, "bytes": c.bytes, "sha256": c.sha256 }),
        None => serde_json::Value::Null,
    };
    Json(body).into_response()
}

/// `GET /api/v1/sweeps/{sweep}/runs/{run}/checkpoint`: the run's newest stored checkpoint as
/// the coordinator keeps it (safetensors, with the resume keys; `advsweep export weights`
/// writes the plain `state_dict`).
pub async fn checkpoint(
    State(s): State<WebState>,
    Path((key, run)): Path<(String, String)>,
) -> Response {
    let status = match run_of(&s, &key, &run).await {
        Ok(status) => status,
        Err(response) => return response,
    };
    let info = match s.scheduler.latest_checkpoint(&status.run_id).await {
        Ok(Some(info)) => info,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("run {} has no stored checkpoint", status.run_id),
            );
        }
        Err(e) => return store_error(e),
    };
    let file = match tokio::fs::File::open(&info.path).await {
        Ok(file) => file,
        Err(e) => {
            tracing::error!(path = %info.path.display(), error = %e, "dashboard: a recorded checkpoint is unreadable");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("run {}'s checkpoint is unreadable", status.run_id),
            );
        }
    };
    let name = format!(
        "{}-{}-s{}-epoch{}.safetensors",
        status.model, status.defense_name, status.seed, info.epoch
    )
    .replace(
        |c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "_",
    );
    let stream = tokio_util::io::ReaderStream::new(file);
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, info.bytes.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
