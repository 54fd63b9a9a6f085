//! The dashboard's JSON API and report files: the sweeps, one sweep's report (shards merged,
//! exactly what `advsweep report` writes), its files, and the Prometheus text.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use advsweep_core::{StateCounts, SweepId};
use std::sync::Arc;

use advsweep_report::{Layout, Pivot, export};

use super::WebState;
use super::views::{BuildError, Built};
use crate::store::{StoreError, SweepSummary};

/// An error answer: `{"error": why}` with `status`.
pub fn error(status: StatusCode, why: impl Into<String>) -> Response {
    (status, Json(json!({ "error": why.into() }))).into_response()
}

/// A store error as an answer: an unknown sweep is 404, anything else 500 (logged).
pub fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::SweepNotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        other => {
            tracing::error!(error = %other, "dashboard: reading the state failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reading the state failed",
            )
        }
    }
}

pub async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such page (the API: /api/v1/sweeps, /api/v1/sweeps/SWEEP, \
         /api/v1/sweeps/SWEEP/files/FILE, /api/v1/sweeps/SWEEP/events, \
         /api/v1/sweeps/SWEEP/runs[/RUN[/checkpoint]], POST /api/v1/sweeps/SWEEP/retry; \
         /metrics)",
    )
}

pub async fn metrics(State(s): State<WebState>) -> Response {
    let body = s.metrics.render(s.scheduler.gauges().await);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

fn counts(c: &StateCounts) -> serde_json::Value {
    json!({
        "pending": c.pending, "running": c.running, "done": c.done,
        "failed": c.failed, "cancelled": c.cancelled, "total": c.total(),
    })
}

/// Seconds until the sweep's unfinished cells are done at the rate its cells have finished so
/// far (from its submission to `now_ms`); `None` once settled or before any cell finished.
pub fn eta_seconds(s: &SweepSummary, now_ms: i64) -> Option<f64> {
    let c = &s.cells;
    let finished = c.done + c.failed + c.cancelled;
    let left = c.pending + c.running;
    if s.state.is_terminal() || finished == 0 || left == 0 {
        return None;
    }
    let elapsed = (now_ms - s.created_ms).max(0) as f64 / 1000.0;
    Some(elapsed * left as f64 / finished as f64)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A sweep as the sweeps list shows it.
pub fn summary_json(s: &SweepSummary) -> serde_json::Value {
    json!({
        "eta_seconds": eta_seconds(s, now_ms()),
        "sweep_id": s.sweep_id.as_str(),
        "name": s.name,
        "description": s.description,
        "state": s.state.as_str(),
        "runs": counts(&s.runs),
        "cells": counts(&s.cells),
        "created_ms": s.created_ms,
    })
}

pub async fn sweeps(State(s): State<WebState>) -> Response {
    match s.scheduler.list_sweeps().await {
        Ok(list) => Json(json!({
            "sweeps": list.iter().map(summary_json).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(e) => store_error(e),
    }
}

/// The sweep `key` names: its id, else the newest sweep of that name.
pub async fn find(s: &WebState, key: &str) -> Result<SweepId, Response> {
    if let Ok(id) = key.parse::<SweepId>() {
        return Ok(id);
    }
    let list = s.scheduler.list_sweeps().await.map_err(store_error)?;
    list.into_iter()
        .filter(|x| x.name == key)
        .max_by_key(|x| x.created_ms)
        .map(|x| x.sweep_id)
        .ok_or_else(|| {
            let shown: String = key.chars().take(80).collect();
            error(
                StatusCode::NOT_FOUND,
                format!("no sweep has the id or name {shown:?}"),
            )
        })
}

/// The sweep `key` names, its detail and report (made as `advsweep report` makes it), shared
/// with every page open on it ([`super::views`]).
pub async fn built(s: &WebState, key: &str) -> Result<Arc<Built>, Response> {
    let id = find(s, key).await?;
    s.views
        .built(&s.scheduler, &s.changes, &id)
        .await
        .map_err(|e| match e {
            BuildError::Store(e) => store_error(e),
            BuildError::Unreadable => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the stored sweep is unreadable",
            ),
        })
}

/// Whether the request accepts a gzipped answer.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

pub async fn sweep(
    State(s): State<WebState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let b = match built(&s, &key).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    if accepts_gzip(&headers) {
        (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CONTENT_ENCODING, "gzip"),
                (header::VARY, "accept-encoding"),
            ],
            b.report_json_gzip(),
        )
            .into_response()
    } else {
        (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::VARY, "accept-encoding"),
            ],
            b.report_json(),
        )
            .into_response()
    }
}

/// The pivot table's layout (`table.csv`, `table.md`), as `advsweep report` takes it.
#[derive(Debug, Deserialize)]
pub struct TableQuery {
    rows: Option<String>,
    cols: Option<String>,
    metric: Option<String>,
}

/// The report files a sweep page links to.
pub const FILES: [&str; 5] = [
    "table.csv",
    "table.md",
    "cells.csv",
    "epochs.csv",
    "sweep.json",
];

pub async fn file(
    State(s): State<WebState>,
    Path((key, name)): Path<(String, String)>,
    query: Result<Query<TableQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !FILES.contains(&name.as_str()) {
        let shown: String = name.chars().take(80).collect();
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "{shown:?} is not a report file (one of {})",
                FILES.join(", ")
            ),
        );
    }
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let defaults = Layout::default();
    let names =
        |dims: &[advsweep_report::Dim]| dims.iter().map(|d| d.name()).collect::<Vec<_>>().join(",");
    let layout = match Layout::parse(
        q.rows.as_deref().unwrap_or(&names(&defaults.rows)),
        q.cols.as_deref().unwrap_or(&names(&defaults.columns)),
        q.metric.as_deref().unwrap_or(defaults.metric.name()),
    ) {
        Ok(layout) => layout,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let b = match built(&s, &key).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let r = &b.report;
    let key = format!("{name}?{layout:?}");
    let (body, kind) = match name.as_str() {
        "table.csv" => (
            b.file(key, || Pivot::new(&r.cells, layout).csv()),
            "text/csv",
        ),
        "table.md" => (
            b.file(key, || Pivot::new(&r.cells, layout).markdown()),
            "text/markdown",
        ),
        "cells.csv" => (b.file(key, || export::cells_csv(r)), "text/csv"),
        "epochs.csv" => (b.file(key, || export::epochs_csv(r)), "text/csv"),
        _ => (b.report_json(), "application/json"),
    };
    let disposition = format!("attachment; filename=\"{}-{name}\"", r.name);
    (
        [
            (header::CONTENT_TYPE, format!("{kind}; charset=utf-8")),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use advsweep_core::SweepState;

    fn summary(state: SweepState, done: u32, pending: u32) -> SweepSummary {
        SweepSummary {
            sweep_id: "s-0123456789abcdef".parse().expect("id"),
            name: "eta".into(),
            description: String::new(),
            state,
            runs: StateCounts::default(),
            cells: StateCounts {
                done,
                pending,
                ..StateCounts::default()
            },
            created_ms: 1_000_000,
        }
    }

    #[test]
    fn the_eta_extrapolates_the_rate_so_far() {
        // 10 cells done in 100 s, 30 left: 300 s more.
        let s = summary(SweepState::Running, 10, 30);
        assert_eq!(eta_seconds(&s, 1_100_000), Some(300.0));
        // Nothing finished yet, or nothing left, or settled: no estimate.
        assert_eq!(
            eta_seconds(&summary(SweepState::Running, 0, 5), 1_100_000),
            None
        );
        assert_eq!(
            eta_seconds(&summary(SweepState::Done, 10, 0), 1_100_000),
            None
        );
    }
}
