//! Summaries of a repeat's measurements, and the store's own counts to check them against.

use super::*;

pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub(super) fn median(mut xs: Vec<f64>) -> f64 {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

pub(super) fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Counts from `state.sqlite` after the run.
pub(super) fn store_counts(state_dir: &Path) -> HashMap<&'static str, i64> {
    let conn = rusqlite::Connection::open_with_flags(
        state_dir.join("state.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open state.sqlite");
    let q = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
    let done = CellState::Done.as_str();
    let run_done = RunState::Done.as_str();
    let outcome_done = AttemptOutcome::Done.as_str();
    HashMap::from([
        ("cells", q("SELECT COUNT(*) FROM cells")),
        (
            "cells_done",
            q(&format!(
                "SELECT COUNT(*) FROM cells WHERE state = '{done}' AND result_json IS NOT NULL"
            )),
        ),
        ("runs", q("SELECT COUNT(*) FROM runs")),
        (
            "runs_done",
            q(&format!(
                "SELECT COUNT(*) FROM runs WHERE state = '{run_done}'"
            )),
        ),
        (
            "runs_leased_more_than_once",
            q("SELECT COUNT(*) FROM runs WHERE attempt > 1"),
        ),
        (
            "attempts_not_done",
            q(&format!(
                "SELECT COUNT(*) FROM attempts WHERE outcome != '{outcome_done}'"
            )),
        ),
        ("epoch_points", q("SELECT COUNT(*) FROM epochs")),
    ])
}
