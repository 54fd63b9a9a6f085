//! A sweep's live changes as server-sent events: the browser keeps one connection open and the
//! coordinator pushes the sweep's summary (`event: summary`) whenever it changes — woken by the
//! same notifications as `advsweep watch` — and `event: done` once it has settled, instead of
//! the page polling every row.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio_stream::wrappers::ReceiverStream;

use super::WebState;
use super::api::{find, store_error, summary_json};

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
    let first = match s.scheduler.sweep_summary(&id).await {
        Ok(summary) => summary,
        Err(e) => return store_error(e),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(16);
    let mut changed = s.changes.subscribe();
    tokio::spawn(async move {
        let mut last = None;
        let mut next = Some(first);
        loop {
            let current = match next.take() {
                Some(summary) => summary,
                None => match s.scheduler.sweep_summary(&id).await {
                    Ok(summary) => summary,
                    Err(_) => return,
                },
            };
            if last.as_ref() != Some(&current) {
                let event = Event::default()
                    .event("summary")
                    .data(summary_json(&current).to_string());
                if tx.send(Ok(event)).await.is_err() {
                    return; // the browser went away
                }
                if current.state.is_terminal() {
                    let _ = tx.send(Ok(Event::default().event("done").data("{}"))).await;
                    return;
                }
                last = Some(current);
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
