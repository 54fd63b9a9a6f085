//! A sweep's live changes as server-sent events: the browser keeps one connection open and the
//! coordinator pushes the sweep's summary (`event: summary`) whenever its counts change, the
//! runs in flight (`event: running`: worker, epoch, loss, images/s) whenever one moves, and
//! `event: done` once it has settled (no cell left to run, no run still held), instead of the
//! page polling every row. Every stream of a sweep follows the same progress feed
//! ([`super::views`]): fifty open pages cost one read per change, not fifty.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio_stream::wrappers::ReceiverStream;

use std::sync::Arc;

use super::WebState;
use super::api::{find, store_error};
use super::views::Progress;

pub async fn stream(State(s): State<WebState>, Path(key): Path<String>) -> Response {
    let id = match find(&s, &key).await {
        Ok(id) => id,
        Err(response) => return response,
    };
    // Fail fast on an unknown sweep instead of opening an empty stream.
    if let Err(e) = s.scheduler.sweep_summary(&id).await {
        return store_error(e);
    }
    let mut feed = s.views.progress(&s.scheduler, &s.changes, &id);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(16);
    tokio::spawn(async move {
        let mut last_summary: Option<Arc<Progress>> = None;
        let mut last_running: Option<Arc<Progress>> = None;
        let mut seen_any = false;
        loop {
            let progress = feed.borrow_and_update().clone();
            match progress {
                Some(p) => {
                    seen_any = true;
                    if last_summary.as_ref().is_none_or(|l| l.summary != p.summary) {
                        let event = Event::default().event("summary").data(&p.summary_json);
                        if tx.send(Ok(event)).await.is_err() {
                            return; // the browser went away
                        }
                        last_summary = Some(Arc::clone(&p));
                    }
                    if last_running.as_ref().is_none_or(|l| l.running != p.running) {
                        let event = Event::default().event("running").data(&p.running_json);
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                        last_running = Some(Arc::clone(&p));
                    }
                    if p.settled() {
                        let _ = tx.send(Ok(Event::default().event("done").data("{}"))).await;
                        return;
                    }
                }
                // The sweep could not be read any more: end the stream (the browser retries).
                None if seen_any => return,
                None => {}
            }
            tokio::select! {
                changed = feed.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}
