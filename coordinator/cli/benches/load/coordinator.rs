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

    /// CPU seconds (user + system) the coordinator has used so far.
    pub(super) fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.pid()))
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

/// utime + stime of a process from its `/proc/…/stat`, in seconds.
pub(super) fn cpu_seconds(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name (which may contain spaces) end at the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    (ticks(11) + ticks(12)) / clock_ticks()
}

pub(super) fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
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
