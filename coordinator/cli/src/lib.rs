//! The `advsweep` command line (the binary `advsweep`).
//!
//! `plan` and `run` work on a local sweep file; `coordinator` serves; `submit`, `status`,
//! `watch` and `cancel` are gRPC clients of a running coordinator.
//!
//! A crate of its own because it is a client of the server, not part of it: argument parsing,
//! gRPC client calls, progress bars, `config print`, `health`, and `run`'s local cluster
//! supervisor (an embedded coordinator plus worker processes). The server itself, including
//! the serve-until-stopped loop, is the `advsweep-coordinator` library; tables and figures are
//! `advsweep-report`. Like the server, it never links libtorch: it starts `advsweep-worker`
//! processes instead.

/// `println!` that ends the process quietly when stdout is closed (`advsweep status | head`)
/// instead of panicking.
macro_rules! outln {
    () => { $crate::write_stdout(format_args!(""), true) };
    ($($t:tt)*) => { $crate::write_stdout(format_args!($($t)*), true) };
}

/// `print!` with the same behaviour as [`outln!`].
macro_rules! out {
    ($($t:tt)*) => { $crate::write_stdout(format_args!($($t)*), false) };
}

/// `eprintln!` that never panics: a message that cannot be written (stderr closed: `advsweep
/// run 2>&1 | head` once `head` is done) is dropped, and the command goes on.
macro_rules! errln {
    ($($t:tt)*) => { $crate::write_stderr(format_args!($($t)*)) };
}

mod client;
mod config;
mod connection;
mod data_check;
mod export;
mod mlflow;
mod plan;
mod progress;
mod report;
mod run;
mod run_settings;
mod source;
mod tensorboard;
mod trackers;
mod upload;

use std::path::PathBuf;
use std::process::ExitCode;

use advsweep_coordinator::serve::BadSettings;
use clap::{Parser, Subcommand};

pub use run::RunArgs;

/// Bad user input (a sweep file, a flag): exit code 2 instead of 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Stopped by Ctrl-C / SIGINT: exit code 130 (128 + SIGINT), as shells expect of an interrupted
/// command, so that scripts can tell it from a failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

#[derive(Debug, Parser)]
#[command(
    name = "advsweep",
    version,
    about = "Adversarial-robustness sweeps: model × defense × attack × ε on a GPU cluster"
)]
pub struct Cli {
    /// Log line format: human or json (one object per line).
    #[arg(
        long,
        global = true,
        value_enum,
        hide_possible_values = true,
        default_value = "human",
        env = "ADVSWEEP_LOG_FORMAT"
    )]
    pub log_format: advsweep_coordinator::telemetry::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the runs and cells a sweep file expands to, without running anything.
    Plan {
        /// The sweep file (TOML; see sweeps/ for examples).
        file: PathBuf,
        /// Replace the file's `data.path`: the CIFAR-10 or CIFAR-100 binary directory (or its
        /// parent), or the image folder.
        #[arg(long, env = "ADVSWEEP_CIFAR10_DIR")]
        data_path: Option<String>,
    },
    /// Run a sweep on this machine: embedded coordinator plus local worker processes.
    Run(RunArgs),
    /// Serve the coordinator (gRPC) on a state directory. Settings: flags, then
    /// ADVSWEEP_<KEY> variables, then the [coordinator] table of --config.
    Coordinator(config::CoordinatorArgs),
    /// Ask a coordinator whether it is serving (gRPC health): exit 0 when SERVING. For
    /// probes that must speak TLS.
    Health {
        #[command(flatten)]
        target: connection::Target,
    },
    /// Inspect settings.
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// Submit a sweep file to a running coordinator.
    Submit {
        /// The sweep file (TOML; see sweeps/ for examples).
        file: PathBuf,
        /// Replace the file's `data.path` as the workers see it: the CIFAR-10 or CIFAR-100
        /// binary directory (or its parent), or the image folder.
        #[arg(long, env = "ADVSWEEP_CIFAR10_DIR")]
        data_path: Option<String>,
        #[command(flatten)]
        target: connection::Target,
    },
    /// Show all sweeps, or one sweep's runs, cells and results.
    Status {
        /// A sweep id or name (the newest sweep of that name).
        sweep: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Read this state directory instead of asking a coordinator (works with none running;
        /// without a coordinator, ./advsweep-state is read when it exists).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[command(flatten)]
        target: connection::Target,
    },
    /// Follow a sweep's progress until it ends.
    Watch {
        /// A sweep id or name (the newest sweep of that name).
        sweep: String,
        /// One JSON object per event on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: connection::Target,
    },
    /// Write the sweep's tables (Markdown, CSV), exports (CSV, JSON) and figures (SVG, PDF, PNG).
    Report(report::ReportArgs),
    /// Export what a sweep produced for use elsewhere.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Re-queue a sweep's failed cells (default), or the named failed/cancelled cells, with a
    /// fresh attempt budget for their runs.
    Retry {
        /// A sweep id or name (the newest sweep of that name).
        sweep: String,
        /// A cell to re-queue (repeatable); without it, every failed cell.
        #[arg(long = "cell")]
        cells: Vec<String>,
        /// Every failed cell (the default; for clarity in scripts).
        #[arg(long, conflicts_with = "cells")]
        failed: bool,
        #[command(flatten)]
        target: connection::Target,
    },
    /// Cancel a sweep's unfinished cells (cells another active sweep shares keep running for
    /// it). `resume` undoes it.
    Cancel {
        /// A sweep id or name (the newest sweep of that name).
        sweep: String,
        #[command(flatten)]
        target: connection::Target,
    },
    /// Resume a cancelled (or failed) sweep: re-queue its cancelled and failed cells, with a
    /// fresh attempt budget for their runs.
    Resume {
        /// A sweep id or name (the newest sweep of that name).
        sweep: String,
        #[command(flatten)]
        target: connection::Target,
    },
}

/// `advsweep export …`.
#[derive(Debug, clap::Subcommand)]
pub enum ExportCommand {
    /// Each finished run's trained weights as a plain PyTorch state_dict (safetensors, for a
    /// strict load_state_dict), with the run's resolved spec as JSON beside it. Reads the
    /// coordinator's state directory.
    Weights(export::WeightsArgs),
    /// TensorBoard event files, one run directory per trained classifier and defense:
    /// learning curves by epoch, each attack's accuracy, success rate and norms by ε, the
    /// hyperparameters. Reads the coordinator's state directory.
    Tensorboard(trackers::TrackerArgs),
    /// An MLflow experiment in a file store (`file:` tracking URI): one run per trained
    /// classifier and defense, with its params and metric histories. Reads the coordinator's
    /// state directory.
    Mlflow(trackers::TrackerArgs),
}

#[doc(hidden)]
pub fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let result = stdout.write_fmt(args).and_then(|()| {
        if newline {
            stdout.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        errln!("advsweep: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// [`errln!`]'s writer.
#[doc(hidden)]
pub fn write_stderr(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stderr = std::io::stderr().lock();
    let _ = stderr
        .write_fmt(args)
        .and_then(|()| stderr.write_all(b"\n"));
}

/// Entry point of the `advsweep` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("advsweep: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, cli.log_format)) {
        Ok(code) => code,
        Err(e) => {
            errln!("advsweep: error: {e:#}");
            if e.downcast_ref::<BadInput>().is_some() {
                ExitCode::from(2)
            } else if e.downcast_ref::<Interrupted>().is_some() {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn dispatch(
    command: Command,
    log_format: advsweep_coordinator::telemetry::LogFormat,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Plan { file, data_path } => {
            plan::plan(&file, data_path)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run::run(args, log_format).await,
        Command::Coordinator(args) => {
            let loaded = args.load()?;
            advsweep_coordinator::telemetry::init_stderr(log_format);
            if let Some(file) = &loaded.file {
                tracing::info!(config = %file.display(), env = ?loaded.env_vars, "settings loaded");
            }
            advsweep_coordinator::serve::serve_forever(&loaded.settings)
                .await
                .map_err(|e| match e.downcast::<BadSettings>() {
                    Ok(bad) => BadInput(bad.0).into(),
                    Err(e) => e,
                })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Health { target } => client::health(&target).await,
        Command::Config { command } => config::config(&command),
        Command::Submit {
            file,
            data_path,
            target,
        } => client::submit(&target, &file, data_path).await,
        Command::Status {
            sweep,
            json,
            state_dir,
            target,
        } => client::status(&target, state_dir.as_deref(), sweep.as_deref(), json).await,
        Command::Watch {
            sweep,
            json,
            target,
        } => client::watch(&target, &sweep, json).await,
        Command::Report(args) => report::report(args).await,
        Command::Export(ExportCommand::Weights(args)) => export::weights(args),
        Command::Export(ExportCommand::Tensorboard(args)) => tensorboard::export(args),
        Command::Export(ExportCommand::Mlflow(args)) => mlflow::export(args),
        Command::Retry {
            sweep,
            cells,
            failed: _,
            target,
        } => client::retry(&target, &sweep, cells, client::Requeue::Failed).await,
        Command::Resume { sweep, target } => {
            client::retry(&target, &sweep, Vec::new(), client::Requeue::Resume).await
        }
        Command::Cancel { sweep, target } => client::cancel(&target, &sweep).await,
    }
}
