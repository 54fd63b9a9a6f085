//! Shared helpers for the end-to-end tests: a real coordinator on 127.0.0.1:0 in this process
//! and real `advsweep-worker` / `advsweep` processes from the same target directory.
//!
//! The binaries are found next to the test executable (`target/<profile>/`); the README's test
//! command builds them (`cargo build --workspace --bins`) before `cargo test`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub mod pki;

use advsweep_coordinator::grpc::{Coordinator, ServeOptions, serve};
use advsweep_coordinator::scheduler::{LeaseSettings, Scheduler};
use advsweep_coordinator::store::SqliteStore;

/// An id as the wire and the tests hold it (a `String`), as the typed id (`RunId`, `SweepId`,
/// …) the coordinator's store takes.
pub fn typed<T>(id: &str) -> T
where
    T: std::str::FromStr,
    T::Err: std::fmt::Debug,
{
    id.parse().expect("a well-formed id")
}

/// A binary of this workspace, from the target directory the tests were built into.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build the binaries first (cargo build --workspace --bins), \
         as the README's test command does",
        bin.display()
    );
    bin
}

/// The `advsweep` CLI run in `dir` as a user runs it there: this build's worker binary for
/// `advsweep run`, worker caches under `dir`, and no coordinator address or settings file from
/// the test's environment.
pub fn advsweep_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(workspace_bin("advsweep"))
        .args(args)
        .current_dir(dir)
        .env("ADVSWEEP_WORKER_BIN", workspace_bin("advsweep-worker"))
        .env("XDG_CACHE_HOME", dir.join("worker-cache"))
        .env_remove("ADVSWEEP_COORDINATOR")
        .env_remove("ADVSWEEP_CONFIG")
        .output()
        .expect("advsweep runs")
}

/// The stdout of a process that must have succeeded (its output shown otherwise).
pub fn succeeded(out: std::process::Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loopback port that was free a moment ago (for a process that binds it itself).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// [`free_port`] on 127.0.0.1, as `host:port`.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A finished process's exit status and output, for assertion messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A child process killed (and reaped) when the test lets go of it, pass or fail.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lease timing for failure tests: 200 ms heartbeats, a 2 s TTL and a 100 ms retry base, so
/// that a lost worker's lease expires within seconds.
pub fn short_leases() -> LeaseSettings {
    LeaseSettings {
        heartbeat_interval: Duration::from_millis(200),
        lease_ttl: Duration::from_secs(2),
        retry_base: Duration::from_millis(100),
        ..LeaseSettings::default()
    }
}

/// A coordinator serving on an ephemeral loopback port until dropped.
pub struct TestCoordinator {
    pub url: String,
    pub store: Arc<SqliteStore>,
    pub state_dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestCoordinator {
    pub async fn start() -> Self {
        Self::start_with(LeaseSettings {
            heartbeat_interval: Duration::from_millis(500),
            lease_ttl: Duration::from_secs(20),
            ..LeaseSettings::default()
        })
        .await
    }

    /// A coordinator with the given lease timing (short TTLs for failure tests).
    pub async fn start_with(settings: LeaseSettings) -> Self {
        Self::start_on("127.0.0.1:0", settings).await
    }

    /// A coordinator listening on `addr` (e.g. a veth address for partition tests).
    pub async fn start_on(addr: &str, settings: LeaseSettings) -> Self {
        Self::start_serving(addr, settings, ServeOptions::default()).await
    }

    /// A coordinator with TLS, tokens or limits; its `url` is https:// when TLS is on.
    pub async fn start_serving(addr: &str, settings: LeaseSettings, options: ServeOptions) -> Self {
        let state_dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SqliteStore::open(state_dir.path()).expect("store opens"));
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{}", listener.local_addr().expect("local addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(
            Coordinator::new(Scheduler::new(Arc::clone(&store) as _, settings))
                .with_options(options),
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        TestCoordinator {
            url,
            store,
            state_dir,
            stop: Some(stop),
        }
    }
}

impl TestCoordinator {
    /// Stops serving (its port closes) and keeps the state directory for the test to read: a
    /// coordinator that went away under its workers.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for TestCoordinator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a real `advsweep-worker` on the CPU (one thread) against `url`, logging to `log`;
/// `launcher` runs it through another program first (e.g. `ip netns exec NS`).
pub fn spawn_worker_via(
    launcher: &[&str],
    url: &str,
    log: &std::path::Path,
    extra: &[&str],
) -> tokio::process::Child {
    let bin = workspace_bin("advsweep-worker");
    let mut command = match launcher.split_first() {
        None => tokio::process::Command::new(&bin),
        Some((program, args)) => {
            let mut c = tokio::process::Command::new(program);
            c.args(args).arg(&bin);
            c
        }
    };
    command
        .args(["--coordinator", url, "--device", "cpu", "--threads", "1"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("worker log"))
        .kill_on_drop(true)
        .spawn()
        .expect("worker starts")
}

/// [`spawn_worker_via`] without a launcher.
pub fn spawn_worker(url: &str, log: &std::path::Path, extra: &[&str]) -> tokio::process::Child {
    spawn_worker_via(&[], url, log, extra)
}

/// A sweep that trains the basic model for `epochs` epochs on 3000 synthetic images (long
/// enough to interrupt, short enough to finish) and evaluates it clean and under FGSM at 8/255;
/// `grid_extra` is added to its `[grid]` table (e.g. `seeds = [0, 1]`).
pub fn training_sweep(name: &str, epochs: u32, grid_extra: &str) -> String {
    format!(
        r#"
version = 1
name = "{name}"
[data]
source = "synthetic"
train_size = 3000
test_size = 200
[training]
epochs = {epochs}
batch_size = 100
learning_rate = 0.05
[evaluation]
limit = 200
[grid]
models = ["basic"]
defenses = ["standard"]
attacks = ["none", "fgsm"]
epsilons = ["8/255"]
{grid_extra}"#
    )
}

/// A sweep whose one run trains the basic model for `epochs` epochs on 4000 synthetic images:
/// far longer than a test waits, for the tests that interrupt it.
pub fn long_sweep(epochs: u32) -> String {
    format!(
        r#"
version = 1
name = "long"
[data]
source = "synthetic"
train_size = 4000
test_size = 100
[training]
epochs = {epochs}
[grid]
models = ["basic"]
defenses = ["standard"]
attacks = ["none"]
epsilons = [0.0]
"#
    )
}

/// What a process wrote to its log file so far (empty when there is none yet).
pub fn log_text(log: &std::path::Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Calls `probe` every `every` until it gives a value, which it returns; panics with
/// `failure()` when `within` has passed first.
pub async fn poll_until<T>(
    within: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
    failure: impl Fn() -> String,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "{}", failure());
        tokio::time::sleep(every).await;
    }
}

/// `work`'s output if it comes within `limit`; otherwise panics with `what` and `log`.
pub async fn within<T>(
    limit: Duration,
    work: impl std::future::Future<Output = T>,
    what: &str,
    log: &std::path::Path,
) -> T {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| panic!("{what}:\n{}", log_text(log)))
}

/// Waits up to `within` for `child` to exit (panicking with `what` when it does not); returns
/// its exit status and its `log`.
pub async fn wait_for_exit(
    child: &mut tokio::process::Child,
    within: Duration,
    what: &str,
    log: &std::path::Path,
) -> (std::process::ExitStatus, String) {
    let status = tokio::time::timeout(within, child.wait())
        .await
        .expect(what)
        .expect("status");
    (status, log_text(log))
}

/// Starts a second worker (logging to `worker-b.log` in `c`'s state directory) that takes an
/// interrupted run over and finishes the sweep (`what` says so when it does not in 3 minutes);
/// checks that it exited cleanly and resumed from a checkpoint, and returns its log.
pub async fn second_worker_resumes(c: &TestCoordinator, what: &str) -> String {
    let log_b = c.state_dir.path().join("worker-b.log");
    let mut b = spawn_worker(&c.url, &log_b, &["--exit-when-idle"]);
    let (status, text_b) = wait_for_exit(&mut b, Duration::from_secs(180), what, &log_b).await;
    assert!(status.success(), "{text_b}");
    assert!(text_b.contains("resuming from checkpoint"), "{text_b}");
    text_b
}

/// Submits a sweep file's text to the coordinator at `url`; returns the sweep id.
pub async fn submit(url: &str, toml: &str) -> String {
    use advsweep_proto::v1 as pb;
    let mut client =
        advsweep_proto::v1::sweep_service_client::SweepServiceClient::connect(url.to_owned())
            .await
            .expect("connect");
    client
        .submit_sweep(pb::SubmitSweepRequest {
            sweep_toml: toml.into(),
            overrides: Default::default(),
            ..Default::default()
        })
        .await
        .expect("submit")
        .into_inner()
        .sweep_id
}
