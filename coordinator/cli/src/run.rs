//! `advsweep run FILE`: the one-machine mode. An embedded coordinator on 127.0.0.1 (real gRPC
//! over TCP), `--workers` local `advsweep-worker` processes, a progress bar, and the results
//! table at the end. `advsweep coordinator` (serve forever) shares the start-up path
//! (`advsweep_coordinator::serve::start`).

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use advsweep_core::SweepState;
use advsweep_proto::v1 as pb;
use anyhow::Context;
use tokio::process::{Child, Command};

use super::run_settings::LocalSettings;
use super::{BadInput, client, connection, progress};
use advsweep_settings::{ClientSettings, ConnectionSettings, RoleSettings, Secret, WorkerSettings};

use advsweep_coordinator::grpc::auth::Auth;
use advsweep_coordinator::grpc::serve;
use advsweep_coordinator::serve::start;
use advsweep_coordinator::sweep::{Overrides, load_plan};

/// How long the progress stream may take to report the sweep's end once every worker has
/// exited, before `run` says the workers gave up too early.
const WORKERS_GONE_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The sweep file (TOML).
    pub file: PathBuf,
    /// Local worker processes, 1–256 (default: one per core, at most 4).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    pub workers: Option<usize>,
    /// Intra-op threads per worker, 1–4096 (default: cores / workers).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096))]
    pub threads: Option<usize>,
    /// Device for the workers: cpu, cuda or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Durable state; finished cells found here are reused, not recomputed.
    #[arg(long, default_value = "advsweep-state", env = "ADVSWEEP_STATE_DIR")]
    pub state_dir: PathBuf,
    /// Replace the data path of the file (CIFAR-10, CIFAR-100 or image folder).
    #[arg(long, env = "ADVSWEEP_CIFAR10_DIR")]
    pub data_path: Option<String>,
    /// The worker binary (default: `advsweep-worker` next to this binary, then on PATH).
    #[arg(long, env = "ADVSWEEP_WORKER_BIN")]
    pub worker_bin: Option<PathBuf>,
    /// A settings file: its [coordinator] table's leases and limits and its [worker] table's
    /// max_consecutive_failures, cell_progress_interval_s, model_cache and shutdown_grace_s
    /// apply to this local cluster (addresses, TLS and tokens stay run's own).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where the live dashboard listens (its one-time sign-in link is printed at the start).
    #[arg(long, default_value = "127.0.0.1:0", conflicts_with = "no_dashboard")]
    pub dashboard: String,
    /// Serve no dashboard.
    #[arg(long)]
    pub no_dashboard: bool,
}
/// A fresh random token for the embedded coordinator of `advsweep run`: its port is on
/// 127.0.0.1, but other users of the machine can reach that too.
fn fresh_token() -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for a session token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn find_worker_bin(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        anyhow::ensure!(
            path.is_file(),
            BadInput(format!("worker binary {} does not exist", path.display()))
        );
        return Ok(path);
    }
    if let Ok(me) = std::env::current_exe()
        && let Some(dir) = me.parent()
    {
        let sibling = dir.join("advsweep-worker");
        if sibling.is_file() {
            return Ok(sibling);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("advsweep-worker");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(BadInput(
        "cannot find the advsweep-worker binary next to advsweep or on PATH; build it \
         (cargo build -p advsweep-worker) or pass --worker-bin"
            .into(),
    )
    .into())
}

/// What every local worker of `advsweep run` is started with.
struct WorkerLaunch<'a> {
    bin: &'a Path,
    /// `ADVSWEEP_<KEY>` settings from `--config`'s [worker] table.
    env: &'a [(String, String)],
    url: &'a str,
    token: &'a str,
    sweep_id: &'a str,
    threads: usize,
    device: &'a str,
    log_format: advsweep_coordinator::telemetry::LogFormat,
}

fn spawn_worker(launch: &WorkerLaunch<'_>, index: usize, log_path: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let log_err = log.try_clone()?;
    let WorkerLaunch {
        bin,
        env,
        url,
        token,
        sweep_id,
        threads,
        device,
        log_format,
    } = *launch;
    let mut command = Command::new(bin);
    // The local worker talks to this embedded coordinator only: none of the user's worker
    // settings (a cluster's URL, TLS files, token) may leak in from the environment.
    command.env_remove(advsweep_settings::load::CONFIG_ENV);
    for key in <WorkerSettings as RoleSettings>::keys() {
        command.env_remove(format!(
            "{}{}",
            advsweep_settings::load::ENV_PREFIX,
            key.to_uppercase()
        ));
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command
        .env("ADVSWEEP_TOKEN", token)
        .arg("--coordinator")
        .arg(url)
        .arg("--name")
        .arg(format!("local-{index}"))
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--device")
        .arg(device)
        .arg("--exit-when-idle")
        // Should `run` die without stopping it (SIGKILL, the OOM killer), the worker stops as
        // on SIGTERM: it does not outlive the embedded coordinator it works for.
        .arg("--stop-with-parent")
        .arg("--sweep")
        .arg(sweep_id)
        .arg("--log-format")
        .arg(log_format.as_str())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))
}

/// Last lines of a worker log, for error messages (from its last 64 KiB: a log may be huge).
fn tail(path: &Path, lines: usize) -> String {
    let text = advsweep_settings::files::read_tail(path, 64 << 10).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub async fn run(
    args: RunArgs,
    log_format: advsweep_coordinator::telemetry::LogFormat,
) -> anyhow::Result<ExitCode> {
    // Validate everything before touching the state directory: a bad file writes nothing.
    let overrides = Overrides {
        data_path: args.data_path.clone(),
        ..Overrides::default()
    };
    let plan = load_plan(&args.file, &overrides).map_err(|e| BadInput(e.to_string()))?;
    // The local workers would fail every run on missing data: refuse before starting.
    let missing = super::data_check::problems(&plan);
    if !missing.is_empty() {
        return Err(BadInput(format!("{}: {}", args.file.display(), missing.join("; "))).into());
    }
    let local = LocalSettings::load(args.config.as_deref())?;
    let worker_bin = find_worker_bin(args.worker_bin.clone())?;
    let (workers, threads) = local_sizing(args.workers, args.threads, plan.runs.len());

    let logs = args.state_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    advsweep_coordinator::telemetry::init_file(&logs.join("coordinator.log"), log_format);
    let dashboard = (!args.no_dashboard).then_some(args.dashboard.as_str());
    let mut embedded = Embedded::start(&args.state_dir, &local, dashboard).await?;
    super::upload::upload_model_files(&mut embedded.client, &plan.local_files).await?;
    let submitted = embedded
        .client
        .submit_sweep(client::submit_request(
            &args.file,
            args.data_path.clone(),
            &plan.local_files,
        )?)
        .await
        .map_err(|s| connection::rpc_error("SubmitSweep", s))?
        .into_inner();
    announce(&submitted, workers, threads, &args.state_dir);
    if let Some(link) = &embedded.dashboard {
        errln!(
            "advsweep: live dashboard: {link}?to=/sweeps/{} (a one-time sign-in link)",
            submitted.sweep_id
        );
    }

    let launch = WorkerLaunch {
        bin: &worker_bin,
        env: local.worker_env(),
        url: &embedded.url,
        token: &embedded.worker_token,
        sweep_id: &submitted.sweep_id,
        threads,
        device: &args.device,
        log_format,
    };
    let mut children = Vec::new();
    for i in 0..workers {
        let log = logs.join(format!("worker-{i}.log"));
        children.push((spawn_worker(&launch, i, &log)?, log));
    }
    let (outcome, worker_failures) =
        supervise(&embedded.client, &submitted.sweep_id, &mut children).await;
    stop_workers(&mut children).await;
    let detail = embedded.shut_down(&submitted.sweep_id).await;

    let summary = match outcome {
        Ok(summary) => summary,
        Err(e) => {
            for (log, status) in &worker_failures {
                errln!(
                    "advsweep: worker exited ({status}); last lines of {}:\n{}",
                    log.display(),
                    tail(log, 15)
                );
            }
            return Err(e);
        }
    };
    progress::final_screen(&detail?, &summary, Some(&logs))?;
    Ok(
        if SweepState::parse(&summary.state) == Ok(SweepState::Done) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

/// How many local workers, and how many threads each: one worker per core up to 4 (or
/// `--workers`), never more than the sweep has runs; the cores shared among them (or
/// `--threads`).
fn local_sizing(workers: Option<usize>, threads: Option<usize>, runs: usize) -> (usize, usize) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = workers
        .unwrap_or_else(|| cores.min(4))
        .clamp(1, 64)
        .min(runs.max(1));
    (workers, threads.unwrap_or((cores / workers).max(1)))
}

/// The embedded coordinator of `advsweep run`: real gRPC on 127.0.0.1 with fresh tokens, and a
/// client of it.
struct Embedded {
    url: String,
    worker_token: String,
    client: connection::Client,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The dashboard's one-time sign-in link, when it serves one.
    dashboard: Option<String>,
}

impl Embedded {
    async fn start(
        state_dir: &Path,
        local: &LocalSettings,
        dashboard: Option<&str>,
    ) -> anyhow::Result<Embedded> {
        let worker_token = fresh_token()?;
        let client_token = fresh_token()?;
        let options = local.serve_options(Auth::new(
            &[Secret::new(worker_token.clone())],
            &[Secret::new(client_token.clone())],
            false,
        ));
        let (coordinator, listener) =
            start(state_dir, "127.0.0.1:0", local.leases(), options).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let dashboard = match dashboard {
            Some(addr) => Some(serve_dashboard(&coordinator, addr, &client_token).await?),
            None => None,
        };
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(coordinator, listener, async move {
            let _ = stop_rx.await;
        }));
        let client = connection::connect_with(&ClientSettings {
            connection: ConnectionSettings {
                coordinator: url.clone(),
                token: Some(Secret::new(client_token)),
                ..ConnectionSettings::default()
            },
        })
        .await?;
        Ok(Embedded {
            url,
            worker_token,
            client,
            stop,
            server,
            dashboard,
        })
    }

    /// The sweep's final detail, then the server stopped (within 10 s).
    async fn shut_down(self, sweep_id: &str) -> anyhow::Result<pb::SweepDetail> {
        let Embedded {
            mut client,
            stop,
            server,
            ..
        } = self;
        let detail = client
            .get_sweep(pb::GetSweepRequest {
                sweep_id: sweep_id.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| connection::rpc_error("GetSweep", s));
        drop(client);
        let _ = stop.send(());
        if tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .is_err()
        {
            tracing::warn!("the embedded coordinator did not shut down within 10 s");
        }
        detail
    }
}

/// Serves the embedded coordinator's dashboard on `addr` (for as long as the process lives);
/// returns its one-time sign-in link, which trades itself for the client token's cookie.
async fn serve_dashboard(
    coordinator: &advsweep_coordinator::grpc::Coordinator,
    addr: &str,
    client_token: &str,
) -> anyhow::Result<String> {
    use advsweep_coordinator::web;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| BadInput(format!("--dashboard {addr}: cannot listen there: {e}")))?;
    let local = listener.local_addr()?;
    let state = web::WebState::of(coordinator);
    let code = fresh_token()?;
    state.links.add(code.clone(), client_token.to_owned());
    tokio::spawn(web::serve_http(listener, web::dashboard_router(state)));
    // Listening on every interface: name the machine, not 0.0.0.0.
    let host = if local.ip().is_unspecified() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    } else {
        local.ip().to_string()
    };
    Ok(format!("http://{host}:{}/signin/{code}", local.port()))
}

/// The one line that says what is about to run.
fn announce(submitted: &pb::SubmitSweepResponse, workers: usize, threads: usize, state: &Path) {
    errln!(
        "advsweep: sweep {} ({}): {} runs, {} cells{}; {} worker(s) × {} thread(s); state in {}",
        submitted.name,
        submitted.sweep_id,
        submitted.runs,
        submitted.cells,
        if submitted.cells_already_done > 0 {
            format!(" ({} already done, reused)", submitted.cells_already_done)
        } else {
            String::new()
        },
        workers,
        threads,
        state.display()
    );
}

/// A local worker that exited, with its log.
type WorkerExit = (PathBuf, std::process::ExitStatus);

/// Follows the sweep's progress while watching the workers, until the sweep ends, Ctrl-C
/// (the workers are sent SIGTERM and hand their runs back), or every worker has exited before
/// the sweep finished (then the error says so, and the exits are returned for the message).
async fn supervise(
    client: &connection::Client,
    sweep_id: &str,
    children: &mut [(Child, PathBuf)],
) -> (anyhow::Result<pb::SweepSummary>, Vec<WorkerExit>) {
    let mut watch_client = client.clone();
    // Boxed so it can be dropped before shutdown: an open WatchSweep stream would keep the
    // server's graceful shutdown waiting forever.
    let mut follow = Box::pin(progress::follow(
        &mut watch_client,
        sweep_id,
        progress::Output::Human,
    ));
    let mut alive = children.len();
    let mut exits: Vec<WorkerExit> = Vec::new();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let outcome = loop {
        tokio::select! {
            result = &mut follow => break result,
            _ = &mut interrupted => {
                // Hand the runs in flight back (workers release them as preempted on SIGTERM);
                // finished cells are already durable and a later `advsweep run` reuses them.
                errln!("advsweep: interrupted; stopping the workers (their runs are re-queued)");
                for (child, _) in children.iter() {
                    if let Some(pid) = child.id() {
                        let _ = std::process::Command::new("kill")
                            .args(["-TERM", &pid.to_string()])
                            .status();
                    }
                }
                break Err(crate::Interrupted(
                    "interrupted; run the same command again to resume".into(),
                )
                .into());
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                for (child, log) in children.iter_mut() {
                    if let Ok(Some(status)) = child.try_wait()
                        && !exits.iter().any(|(l, _)| l == log)
                    {
                        alive -= 1;
                        exits.push((log.clone(), status));
                    }
                }
                if alive == 0 {
                    // Workers exit as soon as the coordinator has nothing left for them, which
                    // can be before the progress stream (refreshed at most every 200 ms) has
                    // shown the sweep's end: give it the time to, and only then call it a
                    // failure.
                    match tokio::time::timeout(WORKERS_GONE_GRACE, &mut follow).await {
                        Ok(result) => break result,
                        Err(_) => {
                            break Err(anyhow::anyhow!(
                                "all workers exited before the sweep finished"
                            ));
                        }
                    }
                }
            }
        }
    };
    (outcome, exits)
}

/// Workers exit by themselves once idle (or after releasing their run on SIGTERM); give them a
/// moment, then stop them.
async fn stop_workers(children: &mut [(Child, PathBuf)]) {
    for (child, _) in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}
