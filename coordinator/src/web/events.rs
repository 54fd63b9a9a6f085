//! A sweep's live changes as server-sent events: the browser keeps one connection open and the
//! coordinator pushes the sweep's summary (`event: summary`) whenever its counts change, the
//! runs in flight (`event: running`: worker, epoch, loss, images/s) whenever one moves — woken
//! by the same notifications as `advsweep watch` — and `event: done` once it has settled (no cell left to run, no run still held),
//! instead of the page polling every row.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio_stream::wrappers::ReceiverStream;

use super::WebState;
use super::api::{find, store_error, summary_json};
use super::runs::run_json;

/// At most this long between two looks at the sweep when nothing notifies (a lease that
/// expires changes the state without a call).
const REFRESH: Duration = Duration::from_secs(5);

pub async fn stream(State(s): State<WebState>, Path(key): Path<String>) -> Response {
    let id = match find(&s, &key).await {
        Ok(id) => id,
        Err(response) => return response,
    };
    // Fail fast on an unknown sweep instead of opening an empty stream; this first look is
    // also the stream's first event.
    let first = match s.scheduler.sweep_progress(&id).await {
        Ok(progress) => progress,
        Err(e) => return store_error(e),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(16);
    let mut changed = s.changes.subscribe();
    tokio::spawn(async move {
        let mut last = None;
        let mut last_running = None;
        let mut next = Some(first);
        loop {
            let (current, running) = match next.take() {
                Some(progress) => progress,
                None => match s.scheduler.sweep_progress(&id).await {
                    Ok(progress) => progress,
                    Err(_) => return,
                },
            };
            let settled = current.state.is_terminal() && running.is_empty();
            if last.as_ref() != Some(&current) {
                let event = Event::default()
                    .event("summary")
                    .data(summary_json(&current).to_string());
                if tx.send(Ok(event)).await.is_err() {
                    return; // the browser went away
                }
                last = Some(current);
            }
            if last_running.as_ref() != Some(&running) {
                let runs: Vec<_> = running.iter().map(run_json).collect();
                let event = Event::default()
                    .event("running")
                    .data(serde_json::Value::from(runs).to_string());
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
                last_running = Some(running);
            }
            // Settled: every cell finished and no run still held (a run's last cells are done
            // a moment before the run itself is).
            if settled {
                let _ = tx.send(Ok(Event::default().event("done").data("{}"))).await;
                return;
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep(REFRESH) => {}
                _ = tx.closed() => return,
            }
        }
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}
