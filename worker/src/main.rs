//! `advsweep-worker`: see the library crate (`advsweep_worker`) for the modules.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;

use advsweep_settings::{LogFormat, render};
use advsweep_worker::agent::{self, AgentConfig};
use advsweep_worker::cli::{self, Cli};
use advsweep_worker::model_files::ModelFileCache;
use advsweep_worker::{bench, device, job, selfcheck};
use clap::Parser as _;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: worker logs usually end up in files.
        .with_ansi(std::io::stderr().is_terminal());
    match cli.log_format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let loaded = cli.settings().map_err(|e| anyhow::anyhow!(e))?;
    if let Some(cli::Command::Config {
        command: cli::ConfigCommand::Print,
    }) = &cli.command
    {
        print!("{}", render(&loaded).map_err(|e| anyhow::anyhow!(e))?);
        return Ok(());
    }
    let settings = loaded.settings;
    let threads = settings
        .threads
        .map_or_else(device::default_threads, |t| t as usize);
    device::set_threads(threads);
    let device = device::select(settings.device)?;
    device::configure(device);
    let label = device::label(device);

    if let Some(cli::Command::Bench(args)) = &cli.command {
        let report = bench::run(args, device, threads)?;
        if args.json {
            println!("{}", report.to_json());
        } else {
            print!("{}", report.to_table());
        }
        return Ok(());
    }

    if cli.self_check {
        let loss = selfcheck::run(device)?;
        println!(
            "advsweep-worker {} self-check: device {label}, loss {loss:.4}: ok",
            env!("CARGO_PKG_VERSION")
        );
        return Ok(());
    }

    let hostname = cli::hostname();
    let name = cli::worker_name(&settings, &hostname);
    info!(
        version = env!("CARGO_PKG_VERSION"),
        %name,
        device = %label,
        threads,
        slots = settings.slots,
        coordinator = %settings.connection.coordinator,
        tls = settings.connection.tls_ca.is_some(),
        token = settings.connection.token.is_some(),
        config = ?loaded.file,
        env = ?loaded.env_vars,
        "advsweep-worker starting"
    );
    // One agent per slot; the slots share the device and libtorch's thread pool.
    let slots: Vec<(AgentConfig, Arc<job::Executor>)> = (0..settings.slots)
        .map(|slot| {
            let cfg = AgentConfig {
                connection: settings.connection.clone(),
                name: if settings.slots > 1 {
                    format!("{name}/slot-{slot}")
                } else {
                    name.clone()
                },
                hostname: hostname.clone(),
                device_label: label.clone(),
                exit_when_idle: settings.exit_when_idle,
                sweep_id: settings.sweep.clone(),
                max_consecutive_failures: settings.max_consecutive_failures,
            };
            let executor = job::Executor::new(device, threads)
                .with_chunk_interval(settings.cell_progress_interval())
                .with_model_files(ModelFileCache::new(
                    settings
                        .model_cache
                        .clone()
                        .unwrap_or_else(ModelFileCache::default_root),
                ));
            (cfg, Arc::new(executor))
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let grace = settings.shutdown_grace();
    // The launcher that started this worker, when it must not outlive it.
    let parent = cli.stop_with_parent.then(parent_id);
    runtime.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let parent_gone = async {
                match parent {
                    Some(parent) => parent_exits(parent).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = wait_for_signal() => {}
                _ = parent_gone => warn!(parent, "the process that started this worker exited"),
            }
            warn!(
                grace_s = grace.as_secs_f64(),
                "shutting down: stopping the current run, handing it back and exiting \
                 (signal again to exit now)"
            );
            let _ = tx.send(true);
            tokio::select! {
                _ = wait_for_signal() => {
                    warn!("second signal: exiting immediately");
                    std::process::exit(130);
                }
                // The coordinator gone (its calls retried in vain), or a batch that will not
                // end: nothing acknowledged is lost, and the lease expires on its own.
                _ = tokio::time::sleep(grace) => {
                    error!(
                        grace_s = grace.as_secs_f64(),
                        "the run was not stopped and handed back within the shutdown grace \
                         (shutdown_grace_s; is the coordinator gone?): exiting; what it did not \
                         acknowledge is redone once the lease expires"
                    );
                    std::process::exit(1);
                }
            }
        });
        agent::run_slots(slots, rx).await
    })
}

/// This process's parent (1, or a subreaper, once the parent that started it is gone).
fn parent_id() -> u32 {
    #[cfg(unix)]
    {
        std::os::unix::process::parent_id()
    }
    #[cfg(not(unix))]
    {
        0
    }
}

/// Returns once this process's parent is no longer `parent` (it exited: the process was handed
/// to another); looks every second.
async fn parent_exits(parent: u32) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if parent_id() != parent {
            return;
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
