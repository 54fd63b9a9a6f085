//! Simulated dashboard pages (`--dashboard-clients N`): each one behaves like a sweep page left
//! open in a browser (coordinator/src/web/assets/app.js, `sweepPage`), over plain HTTP/1.1 on
//! loopback with a minimal client of our own (keep-alive, `Content-Length` and chunked bodies;
//! no new crates):
//!
//! - page load: `GET /api/v1/sweeps/{id}` (the report JSON) and `/api/v1/access`, then
//!   `files/table.md` (the page's default layout) and `/runs`, one after the other on one
//!   kept-alive connection, as `fetch` reuses one;
//! - then the event stream `GET /api/v1/sweeps/{id}/events` on a connection of its own, read
//!   and parsed as it arrives (`event: summary` and `event: running`, whose JSON is parsed as
//!   the page does, and `event: done`, after which the page closes the stream);
//! - on every `summary` or `running` event the page's `refresh`: `table.md`, `/runs` and the
//!   report, one after the other, coalesced like `coalesced(…, 2000)`: 2 s after the first
//!   event that finds the page idle, every event in between folded into it (an event during a
//!   refresh makes one more, 2 s after it ended); at once for a summary of a settled sweep.
//!
//! A page counts the events and fetches it made, the bytes, the latency of each fetch, and any
//! error: a status other than 200, a body that does not parse, a stream that ends or stalls
//! without `done`, a connection that fails. `done` must come within [`DONE_TIMEOUT`] of the
//! workers' last `CompleteRun`, and the last summary must show every cell done.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, watch};

use super::*;

/// The page's `coalesced(refresh, …)` period on a sweep of up to 1,000 cells.
pub(super) const THROTTLE: Duration = Duration::from_secs(2);

/// The page's refresh period on a sweep of `cells` cells: 2 s up to 1,000 cells, then 2 s
/// more per 1,000 (app.js `refreshEvery`: a large sweep's report is not fetched anew every 2 s).
pub(super) fn throttle_for(cells: usize) -> Duration {
    THROTTLE.mul_f64((cells as f64 / 1000.0).max(1.0))
}
/// How long after its load a page takes the stream's events for what it loaded (app.js).
pub(super) const FRESH: Duration = Duration::from_secs(1);
/// The longest one GET may take (the connection, the head and the whole body).
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after the workers' last `CompleteRun` a page may wait for `done`.
pub(super) const DONE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a page fetches besides the event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fetch {
    Report,
    Access,
    Table,
    Runs,
}

impl Fetch {
    pub(super) const ALL: [Fetch; 4] = [Fetch::Report, Fetch::Access, Fetch::Table, Fetch::Runs];

    pub(super) fn name(self) -> &'static str {
        match self {
            Fetch::Report => "report",
            Fetch::Access => "access",
            Fetch::Table => "table_md",
            Fetch::Runs => "runs",
        }
    }

    fn path(self, sweep: &str) -> String {
        match self {
            Fetch::Report => format!("/api/v1/sweeps/{sweep}"),
            Fetch::Access => "/api/v1/access".to_owned(),
            // The page's default layout (rows attack,epsilon; columns model,defense; the first
            // metric), encoded as URLSearchParams encodes it.
            Fetch::Table => format!(
                "/api/v1/sweeps/{sweep}/files/table.md?rows=attack%2Cepsilon&cols=model%2Cdefense&metric=accuracy"
            ),
            Fetch::Runs => format!("/api/v1/sweeps/{sweep}/runs"),
        }
    }

    /// Checks a body as the page reads it (JSON parsed; the table as text).
    fn check(self, body: &[u8]) -> Result<(), String> {
        match self {
            Fetch::Table => std::str::from_utf8(body)
                .map_err(|e| format!("table.md is not UTF-8: {e}"))
                .and_then(|t| {
                    if t.trim().is_empty() {
                        Err("table.md is empty".to_owned())
                    } else {
                        Ok(())
                    }
                }),
            Fetch::Runs => {
                let v: Value = serde_json::from_slice(body).map_err(|e| format!("runs: {e}"))?;
                match v["runs"].as_array() {
                    Some(_) => Ok(()),
                    None => Err("runs: no \"runs\" array".to_owned()),
                }
            }
            Fetch::Report | Fetch::Access => {
                let v: Value =
                    serde_json::from_slice(body).map_err(|e| format!("{}: {e}", self.name()))?;
                if v.is_object() {
                    Ok(())
                } else {
                    Err(format!("{}: not a JSON object", self.name()))
                }
            }
        }
    }
}

/// What one page saw and did.
#[derive(Debug, Default)]
pub(super) struct PageStats {
    pub(super) summaries: u64,
    pub(super) running: u64,
    /// When `done` arrived.
    pub(super) done: Option<Instant>,
    /// `done` and `total` of the last summary's cells.
    pub(super) last_cells: Option<(u64, u64)>,
    pub(super) keep_alives: u64,
    /// Refreshes (each three fetches) after the page load.
    pub(super) refreshes: u64,
    /// Fetches by kind, in [`Fetch::ALL`] order.
    pub(super) fetches: [u64; 4],
    /// Seconds per fetch, by kind.
    pub(super) latency: [Vec<f64>; 4],
    /// When each fetch was sent.
    pub(super) fetch_started: Vec<Instant>,
    pub(super) bytes: u64,
    pub(super) event_bytes: u64,
    /// Kept-alive connections found closed and opened again.
    pub(super) reconnects: u64,
    pub(super) errors: Vec<String>,
}

impl PageStats {
    fn merge(&mut self, other: PageStats) {
        self.summaries += other.summaries;
        self.running += other.running;
        self.done = self.done.or(other.done);
        self.last_cells = other.last_cells.or(self.last_cells);
        self.keep_alives += other.keep_alives;
        self.refreshes += other.refreshes;
        for i in 0..4 {
            self.fetches[i] += other.fetches[i];
            self.latency[i].extend_from_slice(&other.latency[i]);
        }
        self.fetch_started.extend(other.fetch_started);
        self.bytes += other.bytes;
        self.event_bytes += other.event_bytes;
        self.reconnects += other.reconnects;
        self.errors.extend(other.errors);
    }
}

/// Waits until the deadline is set and has passed.
async fn expired(mut deadline: watch::Receiver<Option<Instant>>) {
    let at = deadline
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|at| *at);
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        // The bench dropped the sender: no deadline.
        None => std::future::pending().await,
    }
}

/// One open sweep page. It opens after `open_after`, says `ready` once it has loaded and
/// received the stream's first event (which calls for no refresh: it describes what was just
/// loaded), and ends after `done` (and the refresh that may follow), or with an error. Without
/// `fetches` it only follows the event stream (no page load, no refreshes).
pub(super) async fn page(
    addr: SocketAddr,
    sweep: String,
    open_after: Duration,
    fetches: bool,
    throttle: Duration,
    ready: mpsc::Sender<()>,
    deadline: watch::Receiver<Option<Instant>>,
) -> PageStats {
    tokio::time::sleep(open_after).await;
    let mut stats = PageStats::default();
    let mut http = Http::new(addr);
    for kind in Fetch::ALL.into_iter().filter(|_| fetches) {
        if let Err(e) = fetch(&mut http, kind, &sweep, &mut stats).await {
            stats.errors.push(format!("page load: {e}"));
            return stats;
        }
    }
    let path = format!("/api/v1/sweeps/{sweep}/events");
    let stream = match tokio::time::timeout(FETCH_TIMEOUT, open_stream(addr, &path)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            stats.errors.push(format!("event stream: {e}"));
            return stats;
        }
        Err(_) => {
            stats
                .errors
                .push(format!("event stream: no answer within {FETCH_TIMEOUT:?}"));
            return stats;
        }
    };
    let calls = RefreshCalls::default();
    let (done_tx, done_rx) = watch::channel(false);
    // As app.js: the stream's first events describe what the page just loaded, so they call
    // for no refresh; a page is ready at its first event.
    let (ready_at_event, ready_at_refresh) = (Some(ready), None);
    let mut from_events = PageStats::default();
    let mut from_refreshes = PageStats::default();
    tokio::join!(
        async {
            let r = read_events(
                stream,
                &calls,
                ready_at_event,
                deadline,
                Instant::now(),
                &mut from_events,
            )
            .await;
            if let Err(e) = r {
                from_events.errors.push(format!("event stream: {e}"));
            }
            let _ = done_tx.send(true);
        },
        async {
            if fetches {
                refresh_loop(
                    &mut http,
                    &sweep,
                    &calls,
                    ready_at_refresh,
                    done_rx,
                    throttle,
                    &mut from_refreshes,
                )
                .await;
            }
        },
    );
    stats.merge(from_events);
    stats.merge(from_refreshes);
    stats
}

/// The calls for the page's `refresh` the events make: `later()` (a running sweep's) and
/// `now()` (a settled sweep's).
#[derive(Default)]
struct RefreshCalls {
    later: Notify,
    now: Notify,
}

/// The page's coalesced `refresh`: `throttle` after a `later` call found it idle, at once for a
/// `now` call, until the stream ended and no call is left.
async fn refresh_loop(
    http: &mut Http,
    sweep: &str,
    calls: &RefreshCalls,
    mut ready: Option<mpsc::Sender<()>>,
    mut done: watch::Receiver<bool>,
    throttle: Duration,
    stats: &mut PageStats,
) {
    loop {
        let now = tokio::select! {
            // A call kept from before `done` still runs, as the page's timer still fires.
            biased;
            _ = calls.now.notified() => true,
            _ = calls.later.notified() => false,
            _ = done.wait_for(|d| *d) => return,
        };
        if !now {
            // The calls until then fold into this one; a settled sweep's call cuts the wait.
            let wait = tokio::time::sleep(throttle);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    _ = calls.now.notified() => break,
                    _ = calls.later.notified() => {}
                }
            }
        }
        stats.refreshes += 1;
        for kind in [Fetch::Table, Fetch::Runs, Fetch::Report] {
            if let Err(e) = fetch(http, kind, sweep, stats).await {
                stats.errors.push(format!("refresh: {e}"));
                return;
            }
        }
        if let Some(ready) = ready.take() {
            let _ = ready.send(()).await;
        }
    }
}

async fn fetch(
    http: &mut Http,
    kind: Fetch,
    sweep: &str,
    stats: &mut PageStats,
) -> Result<(), String> {
    let started = Instant::now();
    stats.fetch_started.push(started);
    let (status, body) = tokio::time::timeout(FETCH_TIMEOUT, http.get(&kind.path(sweep), stats))
        .await
        .map_err(|_| format!("{}: no whole answer within {FETCH_TIMEOUT:?}", kind.name()))??;
    let i = kind as usize;
    stats.latency[i].push(started.elapsed().as_secs_f64());
    stats.fetches[i] += 1;
    stats.bytes += body.len() as u64;
    if status != 200 {
        let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        return Err(format!("{}: HTTP {status}: {text}", kind.name()));
    }
    kind.check(&body)
}

/// Reads the event stream until `done`: counts and parses every event, wakes the refresh.
async fn read_events(
    mut body: ChunkedBody,
    calls: &RefreshCalls,
    mut ready: Option<mpsc::Sender<()>>,
    deadline: watch::Receiver<Option<Instant>>,
    opened: Instant,
    stats: &mut PageStats,
) -> Result<(), String> {
    // app.js: no refresh for a running sweep's events in the page's first second.
    let fresh = || opened.elapsed() < FRESH;
    let mut text = String::new();
    let expired = expired(deadline);
    tokio::pin!(expired);
    loop {
        let chunk = tokio::select! {
            chunk = body.next_chunk() => chunk.map_err(|e| format!("reading: {e}"))?,
            _ = &mut expired => {
                return Err(format!(
                    "no `done` within {DONE_TIMEOUT:?} of the last CompleteRun"
                ));
            }
        };
        let Some(chunk) = chunk else {
            return Err("the stream ended without `done`".to_owned());
        };
        stats.event_bytes += chunk.len() as u64;
        text.push_str(std::str::from_utf8(&chunk).map_err(|e| format!("not UTF-8: {e}"))?);
        // An event ends at a blank line (axum writes `\n` line ends).
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (mut name, mut data) = (None::<String>, String::new());
            for line in block.lines() {
                if line.starts_with(':') || line.is_empty() {
                    continue; // a comment: the keep-alive
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => name = Some(value.to_owned()),
                    "data" => {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(value);
                    }
                    _ => {}
                }
            }
            match name.as_deref() {
                Some("summary") => {
                    let v: Value = serde_json::from_str(&data)
                        .map_err(|e| format!("summary is not JSON: {e}: {data}"))?;
                    let cells = &v["cells"];
                    match (cells["done"].as_u64(), cells["total"].as_u64()) {
                        (Some(done), Some(total)) => stats.last_cells = Some((done, total)),
                        _ => return Err(format!("summary without cell counts: {data}")),
                    }
                    stats.summaries += 1;
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(()).await;
                    }
                    if v["state"].as_str() != Some("running") {
                        calls.now.notify_one();
                    } else if !fresh() {
                        calls.later.notify_one();
                    }
                }
                Some("running") => {
                    let v: Value = serde_json::from_str(&data)
                        .map_err(|e| format!("running is not JSON: {e}: {data}"))?;
                    if !v.is_array() {
                        return Err(format!("running is not a list: {data}"));
                    }
                    stats.running += 1;
                    if !fresh() {
                        calls.later.notify_one();
                    }
                }
                Some("done") => {
                    stats.done = Some(Instant::now());
                    return Ok(()); // the page closes the stream
                }
                Some(other) => return Err(format!("unexpected event {other:?}")),
                None if data.is_empty() => stats.keep_alives += 1,
                None => return Err(format!("an event without a name: {data}")),
            }
        }
    }
}

/// A plain HTTP/1.1 client on one kept-alive connection.
struct Http {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Http {
    fn new(addr: SocketAddr) -> Http {
        Http { addr, conn: None }
    }

    /// GET `path`: the status and the whole body. A kept-alive connection that turns out to be
    /// closed is opened again once, as a browser does.
    async fn get(&mut self, path: &str, stats: &mut PageStats) -> Result<(u16, Vec<u8>), String> {
        loop {
            let reused = self.conn.is_some();
            let mut conn = match self.conn.take() {
                Some(conn) => conn,
                None => connect_http(self.addr).await?,
            };
            match request(&mut conn, path, "*/*").await {
                Ok(head) => {
                    let mut body = head
                        .read_body(&mut conn)
                        .await
                        .map_err(|e| format!("GET {path}: reading the body: {e}"))?;
                    if head.gzip {
                        use std::io::Read as _;
                        let mut plain = Vec::with_capacity(body.len() * 8);
                        flate2::read::GzDecoder::new(&body[..])
                            .read_to_end(&mut plain)
                            .map_err(|e| format!("GET {path}: not gzip: {e}"))?;
                        body = plain;
                    }
                    if head.keep_alive {
                        self.conn = Some(conn);
                    }
                    return Ok((head.status, body));
                }
                Err(_) if reused => stats.reconnects += 1,
                Err(e) => return Err(format!("GET {path}: {e}")),
            }
        }
    }
}

async fn connect_http(addr: SocketAddr) -> Result<BufReader<TcpStream>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(BufReader::with_capacity(64 << 10, stream))
}

/// A response's status line and the headers that say how its body is framed.
struct Head {
    status: u16,
    /// `content-encoding: gzip`.
    gzip: bool,
    chunked: bool,
    length: Option<usize>,
    keep_alive: bool,
}

impl Head {
    async fn read_body(&self, conn: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
        if self.chunked {
            let mut body = Vec::new();
            while let Some(chunk) = read_chunk(conn).await? {
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        } else if let Some(n) = self.length {
            let mut body = vec![0; n];
            conn.read_exact(&mut body).await?;
            Ok(body)
        } else {
            let mut body = Vec::new();
            conn.read_to_end(&mut body).await?;
            Ok(body)
        }
    }
}

/// Sends a GET and reads the response's head.
async fn request(
    conn: &mut BufReader<TcpStream>,
    path: &str,
    accept: &str,
) -> std::io::Result<Head> {
    // As a browser: gzip accepted.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: {accept}\r\nAccept-Encoding: gzip\r\n\r\n"
    );
    conn.get_mut().write_all(request.as_bytes()).await?;
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    let mut line = String::new();
    read_line(conn, &mut line, "before an answer").await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("not an HTTP status line: {line:?}")))?;
    let mut head = Head {
        status,
        gzip: false,
        chunked: false,
        length: None,
        keep_alive: line.starts_with("HTTP/1.1"),
    };
    loop {
        line.clear();
        read_line(conn, &mut line, "inside the headers").await?;
        let header = line.trim_end();
        if header.is_empty() {
            return Ok(head);
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(invalid(format!("not a header: {header:?}")));
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => {
                head.length = Some(
                    value
                        .parse()
                        .map_err(|_| invalid(format!("content-length {value:?}")))?,
                );
            }
            "transfer-encoding" => head.chunked = value.eq_ignore_ascii_case("chunked"),
            "content-encoding" => head.gzip = value.eq_ignore_ascii_case("gzip"),
            "connection" => head.keep_alive = !value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
}

/// Reads one line into `line`; a connection closed first is an error saying where (`context`).
async fn read_line(
    conn: &mut BufReader<TcpStream>,
    line: &mut String,
    context: &str,
) -> std::io::Result<()> {
    if conn.read_line(line).await? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the connection closed {context}"),
        ));
    }
    Ok(())
}

/// One chunk of a chunked body; `None` after the last (and its trailers).
async fn read_chunk(conn: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    let mut line = String::new();
    read_line(conn, &mut line, "inside a chunked body").await?;
    let size = line.trim_end().split(';').next().unwrap_or_default();
    let size = usize::from_str_radix(size.trim(), 16)
        .map_err(|_| invalid(format!("not a chunk size: {line:?}")))?;
    if size == 0 {
        loop {
            line.clear();
            if conn.read_line(&mut line).await? == 0 || line.trim_end().is_empty() {
                return Ok(None);
            }
        }
    }
    let mut chunk = vec![0; size];
    conn.read_exact(&mut chunk).await?;
    line.clear();
    conn.read_line(&mut line).await?;
    if !line.trim_end().is_empty() {
        return Err(invalid(format!("no CRLF after a chunk: {line:?}")));
    }
    Ok(Some(chunk))
}

/// The event stream's body, chunk by chunk as the server flushes it.
struct ChunkedBody {
    conn: BufReader<TcpStream>,
    chunked: bool,
}

impl ChunkedBody {
    async fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.chunked {
            read_chunk(&mut self.conn).await
        } else {
            // Without chunked framing the stream is the rest of the connection.
            let mut buf = vec![0; 16 << 10];
            let n = self.conn.read(&mut buf).await?;
            buf.truncate(n);
            Ok((n > 0).then_some(buf))
        }
    }
}

/// Opens the event stream on a connection of its own.
async fn open_stream(addr: SocketAddr, path: &str) -> Result<ChunkedBody, String> {
    let mut conn = connect_http(addr).await?;
    let head = request(&mut conn, path, "text/event-stream")
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    if head.status != 200 {
        let body = head.read_body(&mut conn).await.unwrap_or_default();
        let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        return Err(format!("GET {path}: HTTP {}: {text}", head.status));
    }
    Ok(ChunkedBody {
        conn,
        chunked: head.chunked,
    })
}

/// Gives this process's threads called `name` the lowest priority there is: the `SCHED_IDLE`
/// policy (`chrt --idle -p 0` on each thread id; they run only when no other thread wants the
/// CPU, and any waking thread preempts them at once, where nice 19 may still hold a core for
/// the scheduler's wake-up granularity), else `renice -n 19`; says how many and which.
pub(super) fn renice_threads(name: &str) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    let run = |program: &str, args: &[&str], tid: &std::ffi::OsStr| {
        std::process::Command::new(program)
            .args(args)
            .arg(tid)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let (mut idle, mut niced) = (0, 0);
    for t in tasks.filter_map(Result::ok) {
        let ours =
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name);
        if !ours {
            continue;
        }
        let tid = t.file_name();
        if run("chrt", &["--idle", "-p", "0"], &tid) {
            idle += 1;
        } else if run("renice", &["-n", "19", "-p"], &tid) {
            niced += 1;
        }
    }
    eprintln!(
        "load:   dashboard pages: {idle} thread(s) of {name} at SCHED_IDLE, {niced} at nice 19"
    );
}
