//! The coordinator's own accept loop, so that unauthenticated peers cannot exhaust it (issue
//! 18: idle connections were never closed, and at the file-descriptor limit the accept loop
//! spun on failing `accept4` while health checks went unanswered).
//!
//! - A new connection must send its first bytes within `first_bytes_timeout`; until then it is
//!   held here, not by the HTTP/2 server, and closed when the time is up.
//! - At most `max_connections` are open at once. When all are taken, the oldest connection
//!   that has not spoken yet is closed to make room (a flood of silent sockets cannot lock out
//!   a health probe); if every one has spoken, the new one is closed.
//! - An accept error (out of file descriptors: EMFILE, ENFILE) closes the oldest silent
//!   connection if there is one, and otherwise backs off (5 ms doubling to 1 s) instead of
//!   spinning; it is logged at most once a second.
//!
//! Connections that spoke are handed to tonic, whose HTTP/2 keepalive closes dead peers and
//! whose `max_concurrent_streams` bounds the calls per connection (`server.rs`).

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::metrics::Metrics;

/// How the accept loop limits connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub first_bytes_timeout: Duration,
}

/// An accepted connection that has spoken; holds its place among `max_connections` until
/// tonic drops it.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Connections accepted that have not spoken yet, oldest first.
type Silent = Arc<Mutex<BTreeMap<u64, JoinHandle<()>>>>;

/// Closes the oldest silent connection; `false` when there is none.
async fn evict_oldest(silent: &Silent) -> bool {
    let oldest = silent.lock().unwrap_or_else(|e| e.into_inner()).pop_first();
    match oldest {
        Some((_, task)) => {
            task.abort();
            let _ = task.await; // its socket and slot are released once it is gone
            true
        }
        None => false,
    }
}

/// EMFILE / ENFILE (Linux numbering): the process or the system is out of descriptors.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Accepts on `listener` under `limits`; the stream ends when the server stops reading it.
/// Returns the stream tonic serves and the accept task (abort it after serving).
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
) -> (ReceiverStream<Result<Conn, io::Error>>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let silent: Silent = Arc::default();
    let task = tokio::spawn(async move {
        let mut next_id = 0u64;
        let mut backoff = Duration::ZERO;
        let mut last_log: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => {
                    backoff = Duration::ZERO;
                    stream
                }
                Err(e) => {
                    metrics.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        last_log = Some(Instant::now());
                        tracing::warn!(error = %e, "accept failed; backing off");
                    }
                    if out_of_descriptors(&e) && evict_oldest(&silent).await {
                        metrics.connections_evicted.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            // Without TCP_NODELAY a response written in two pieces (headers, then body) waits
            // for the client's delayed ACK: 40 ms per Lease on Linux.
            let _ = stream.set_nodelay(true);
            let slot = match Arc::clone(&slots).try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    if evict_oldest(&silent).await {
                        metrics.connections_evicted.fetch_add(1, Ordering::Relaxed);
                    }
                    match Arc::clone(&slots).try_acquire_owned() {
                        Ok(slot) => slot,
                        Err(_) => {
                            metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
                            continue; // every connection has spoken: this one is closed
                        }
                    }
                }
            };
            let id = next_id;
            next_id += 1;
            let tx = tx.clone();
            let registry = Arc::clone(&silent);
            let metrics = Arc::clone(&metrics);
            let timeout = limits.first_bytes_timeout;
            // Holds the registry's lock while spawning, so the task cannot finish (and remove
            // itself) before it is registered.
            let mut held = silent.lock().unwrap_or_else(|e| e.into_inner());
            let handle = tokio::spawn(async move {
                let mut probe = [0u8; 1];
                let spoke = matches!(
                    tokio::time::timeout(timeout, stream.peek(&mut probe)).await,
                    Ok(Ok(n)) if n > 0
                );
                registry
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                if spoke {
                    let _ = tx
                        .send(Ok(Conn {
                            stream,
                            _slot: slot,
                        }))
                        .await;
                } else {
                    metrics.connections_silent.fetch_add(1, Ordering::Relaxed);
                }
            });
            held.insert(id, handle);
        }
    });
    (ReceiverStream::new(rx), task)
}
