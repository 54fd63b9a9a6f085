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
//! - A connection that spoke must keep reading: one that goes `read_idle` without a byte is
//!   closed. This shuts out the slow variant of the attack (one byte, then silence, which would
//!   otherwise hold a slot in the HTTP/2 or TLS handshake for ever). A live peer is never idle
//!   that long: the server PINGs every connection that has been quiet for the keepalive
//!   interval, even between calls, and the peer's PING ACK is a read; `serve` sets `read_idle`
//!   to twice the keepalive interval plus `first_bytes_timeout`.
//!
//! Connections that spoke are handed to tonic, whose HTTP/2 keepalive closes dead peers and
//! whose `max_concurrent_streams` bounds the calls per connection (`server.rs`).

use std::collections::BTreeMap;
use std::future::Future as _;
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
use tokio::time::Sleep;
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
/// tonic drops it, and fails its reads once it has gone `read_idle` without a byte.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    read_idle: Duration,
    read_deadline: Pin<Box<Sleep>>,
    metrics: Arc<Metrics>,
}

impl Conn {
    fn new(
        stream: TcpStream,
        slot: OwnedSemaphorePermit,
        read_idle: Duration,
        metrics: Arc<Metrics>,
    ) -> Conn {
        Conn {
            stream,
            _slot: slot,
            read_idle,
            read_deadline: Box::pin(tokio::time::sleep(read_idle)),
            metrics,
        }
    }
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
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    let next = tokio::time::Instant::now() + self.read_idle;
                    self.read_deadline.as_mut().reset(next);
                }
                Poll::Ready(result)
            }
            Poll::Pending => match self.read_deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.metrics
                        .connections_idle_closed
                        .fetch_add(1, Ordering::Relaxed);
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no byte read for {:?}", self.read_idle),
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
        }
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

/// File descriptors kept free of connections: the database and its journal, checkpoint files
/// being written or streamed, the metrics listener and its clients, logs.
pub const RESERVED_DESCRIPTORS: u64 = 96;

/// The process's soft limit on open files (`ulimit -n`), from `/proc/self/limits`; `None` where
/// that file is missing (not Linux) or says "unlimited".
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl ConnectionLimits {
    /// These limits with `max_connections` lowered, if need be, so that the connections and
    /// `RESERVED_DESCRIPTORS` fit under `open_files`: at the limit a new connection then
    /// evicts a silent one instead of failing `accept`, and the store can still open files.
    pub fn within_open_files(self, open_files: Option<u64>) -> ConnectionLimits {
        let Some(open_files) = open_files else {
            return self;
        };
        let room = open_files.saturating_sub(RESERVED_DESCRIPTORS).max(1);
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        ConnectionLimits {
            max_connections: self.max_connections.min(room),
            ..self
        }
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
    read_idle: Duration,
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
                    // Let connections accepted a moment ago that have already spoken (a
                    // probe's preface is in flight) leave the silent set before the oldest
                    // silent one is chosen.
                    tokio::task::yield_now().await;
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
                    let conn = Conn::new(stream, slot, read_idle, Arc::clone(&metrics));
                    let _ = tx.send(Ok(conn)).await;
                } else {
                    metrics.connections_silent.fetch_add(1, Ordering::Relaxed);
                }
            });
            held.insert(id, handle);
        }
    });
    (ReceiverStream::new(rx), task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections,
            first_bytes_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn max_connections_leave_room_under_the_open_files_limit() {
        assert_eq!(
            limits(768).within_open_files(Some(256)).max_connections,
            160
        );
        assert_eq!(
            limits(768).within_open_files(Some(1 << 20)).max_connections,
            768
        );
        assert_eq!(limits(768).within_open_files(None).max_connections, 768);
        // A limit too small for the reserve still admits one connection at a time.
        assert_eq!(limits(768).within_open_files(Some(50)).max_connections, 1);
    }

    #[test]
    fn this_process_has_a_readable_open_files_limit() {
        let limit = open_files_limit().expect("Max open files in /proc/self/limits");
        assert!(limit >= 64, "{limit}");
    }
}
