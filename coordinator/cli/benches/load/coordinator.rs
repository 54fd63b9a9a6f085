//! The coordinator process a load repeat runs against, and connecting to it.

use super::*;

/// One coordinator process on a fresh state directory.
pub(super) struct Coordinator {
    pub(super) child: Child,
    pub(super) addr: String,
    pub(super) metrics_addr: String,
    /// The dashboard's address (`--http-listen`), when it serves one.
    pub(super) http_addr: Option<std::net::SocketAddr>,
    pub(super) state_dir: PathBuf,
}

impl Coordinator {
    /// `dashboard`: also serve the dashboard (`--http-listen` on a free loopback port).
    pub(super) fn start(dir: &Path, dashboard: bool) -> Coordinator {
        let port = free_port();
        let metrics_port = free_port();
        let http_addr =
            dashboard.then(|| std::net::SocketAddr::from(([127, 0, 0, 1], free_port())));
        let state_dir = dir.join("state");
        let log = std::fs::File::create(dir.join("coordinator.log")).expect("log file");
        let mut command = Command::new(coordinator_bin());
        command.arg("coordinator");
        if let Some(http) = http_addr {
            command.arg("--http-listen").arg(http.to_string());
        }
        let child = command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn advsweep coordinator");
        Coordinator {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            metrics_addr: format!("127.0.0.1:{metrics_port}"),
            http_addr,
            state_dir,
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// VmHWM (peak resident set) in bytes.
    pub(super) fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("coordinator /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// The CPU time the coordinator's threads have used so far.
    pub(super) fn cpu(&self) -> ThreadsCpu {
        ThreadsCpu::read(&self.pid().to_string(), None)
    }

    /// The coordinator's own counters from `GET /metrics`.
    pub(super) fn counters(&self) -> HashMap<String, f64> {
        let mut stream = std::net::TcpStream::connect(&self.metrics_addr).expect("metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .expect("metrics request");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("metrics response");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    }

    pub(super) fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The coordinator binary: this build's, or `ADVSWEEP_BENCH_BIN` (to compare builds A/B on the
/// same machine state).
pub(super) fn coordinator_bin() -> PathBuf {
    std::env::var_os("ADVSWEEP_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_advsweep")))
}

/// CPU time by thread id of a process's threads (or of those called `name`), in nanoseconds,
/// from each thread's `schedstat`: exact, where `stat`'s utime + stime count 10 ms ticks and a
/// 1,000-cell no-op sweep is over in 25 ms.
#[derive(Debug, Clone, Default)]
pub(super) struct ThreadsCpu(HashMap<String, u64>);

impl ThreadsCpu {
    /// `pid`: a process id, or `self`.
    pub(super) fn read(pid: &str, name: Option<&str>) -> ThreadsCpu {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return ThreadsCpu::default();
        };
        let threads = tasks
            .filter_map(Result::ok)
            .filter(|t| {
                name.is_none_or(|name| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim_end() == name)
                })
            })
            .filter_map(|t| {
                let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
                let ns = stat.split_whitespace().next()?.parse().ok()?;
                Some((t.file_name().to_string_lossy().into_owned(), ns))
            })
            .collect();
        ThreadsCpu(threads)
    }

    /// Seconds the threads alive now used since `earlier` (a thread started since counts from
    /// zero; one that ended since is not counted: the pools' threads end after idling).
    pub(super) fn seconds_since(&self, earlier: &ThreadsCpu) -> f64 {
        let ns: u64 = self
            .0
            .iter()
            .map(|(tid, ns)| ns.saturating_sub(earlier.0.get(tid).copied().unwrap_or(0)))
            .sum();
        ns as f64 / 1e9
    }
}

pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub(super) async fn connect(addr: &str) -> Channel {
    let endpoint = Endpoint::from_shared(addr.to_owned())
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(RPC_TIMEOUT)
        .tcp_nodelay(true);
    let started = Instant::now();
    loop {
        match endpoint.connect().await {
            Ok(channel) => return channel,
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot connect to the coordinator at {addr}: {e}"),
        }
    }
}
