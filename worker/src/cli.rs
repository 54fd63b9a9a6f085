//! Command-line interface of `advsweep-worker`.

use std::path::PathBuf;

use advsweep_settings::{
    ConnectionFlags, DeviceSetting, Loaded, LogFormat, Overrides, SettingsError, WorkerSettings,
    load,
};

use crate::bench::BenchArgs;

/// advsweep GPU worker: leases runs from the coordinator, trains and attacks models with
/// libtorch, and reports metrics and results.
///
/// Settings: these flags, then ADVSWEEP_<KEY> variables (ADVSWEEP_COORDINATOR,
/// ADVSWEEP_TOKEN_FILE, …), then the [worker] table of the --config file.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "advsweep-worker", version, about)]
pub struct Cli {
    /// Config file with a [worker] table [env: ADVSWEEP_CONFIG]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,

    /// Coordinator URL, http:// or https:// [default: http://127.0.0.1:50051]
    #[arg(long)]
    pub coordinator: Option<String>,

    /// Worker name shown by the coordinator [default: <hostname>-<pid>]
    #[arg(long)]
    pub name: Option<String>,

    /// Device to train and attack on; `auto` uses CUDA when libtorch sees a GPU [default: auto]
    #[arg(long, value_enum, global = true)]
    pub device: Option<DeviceSetting>,

    /// libtorch intra-op CPU threads [default: the number of available cores]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096), global = true)]
    pub threads: Option<u32>,

    /// Runs trained at once on the device, each leased separately [default: 1]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub slots: Option<u32>,

    /// Exit (status 0) when the coordinator reports that no sweep has work left.
    #[arg(long)]
    pub exit_when_idle: bool,

    /// Take only the runs this sweep (id) needs; with --exit-when-idle, exit when it is done
    #[arg(long)]
    pub sweep: Option<String>,

    /// Build BasicNet, run one forward/backward pass on the chosen device, print the device
    /// and "ok", and exit.
    #[arg(long)]
    pub self_check: bool,

    /// Stop taking work after this many failed runs in a row (a bad GPU or node) [default: 3]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_consecutive_failures: Option<u32>,

    /// Seconds a cell evaluates before it reports its finished batches (durably, so a worker
    /// that takes the run over resumes the cell there), and between reports; 0: every batch
    /// [default: 60]
    #[arg(long, value_name = "SECONDS")]
    pub cell_progress_interval: Option<f64>,

    /// Seconds after SIGTERM or Ctrl-C to stop the run and hand it back before exiting
    /// regardless (a coordinator that is gone cannot hold the worker) [default: 120]
    #[arg(long, value_name = "SECONDS")]
    pub shutdown_grace: Option<f64>,

    /// Stop as on SIGTERM when the process that started this worker exits (for launchers such
    /// as `advsweep run`, whose workers must not outlive it)
    #[arg(long)]
    pub stop_with_parent: bool,

    #[command(flatten)]
    pub connection: ConnectionFlags,

    /// Log line format: human, or json (one object per line, for log shippers).
    #[arg(
        long,
        value_enum,
        hide_possible_values = true,
        default_value_t = LogFormat::Human,
        env = "ADVSWEEP_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    /// Without a subcommand the worker leases runs from the coordinator.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The effective `[worker]` settings: these flags over the environment over the file.
    pub fn settings(&self) -> Result<Loaded<WorkerSettings>, SettingsError> {
        let device = self.device.map(DeviceSetting::as_str);
        let overrides = Overrides::new()
            .set("coordinator", self.coordinator.clone())
            .set("name", self.name.clone())
            .set("device", device)
            .set("threads", self.threads.map(u64::from))
            .set("slots", self.slots.map(u64::from))
            .set_flag("exit_when_idle", self.exit_when_idle)
            .set("sweep", self.sweep.clone())
            .set(
                "max_consecutive_failures",
                self.max_consecutive_failures.map(u64::from),
            )
            .set("cell_progress_interval_s", self.cell_progress_interval)
            .set("shutdown_grace_s", self.shutdown_grace);
        load(self.config.as_deref(), &self.connection.apply(overrides))
    }
}

/// What the worker does instead of serving the coordinator.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Measure training and attack throughput (images/s) on synthetic CIFAR-shaped data with
    /// the same code runs use; needs no coordinator and no files.
    Bench(BenchArgs),
    /// Inspect settings.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// `advsweep-worker config …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ConfigCommand {
    /// Print the effective [worker] settings as TOML, secrets masked.
    Print,
}

/// This machine's host name, without a libc call: the kernel's view, then /etc/hostname, then
/// $HOSTNAME.
pub fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .chain(std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// The configured name, or `<hostname>-<pid>`.
pub fn worker_name(settings: &WorkerSettings, hostname: &str) -> String {
    settings
        .name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| format!("{hostname}-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{BenchMode, BenchModel};
    use clap::Parser as _;

    #[test]
    fn defaults_and_flags_parse() -> anyhow::Result<()> {
        let cli = Cli::try_parse_from(["advsweep-worker"])?;
        assert_eq!(cli.device, None);
        assert!(!cli.exit_when_idle && !cli.self_check);
        let cli = Cli::try_parse_from([
            "advsweep-worker",
            "--coordinator",
            "http://c:1",
            "--device",
            "cpu",
            "--threads",
            "3",
            "--exit-when-idle",
            "--name",
            "w1",
        ])?;
        assert_eq!(cli.coordinator.as_deref(), Some("http://c:1"));
        assert_eq!(cli.threads, Some(3));
        let settings = cli.settings()?.settings;
        assert_eq!(settings.connection.coordinator, "http://c:1");
        assert_eq!((settings.threads, settings.slots), (Some(3), 1));
        assert!(settings.exit_when_idle);
        assert_eq!(worker_name(&settings, "h"), "w1");
        assert!(Cli::try_parse_from(["advsweep-worker", "--threads", "0"]).is_err());
        assert!(Cli::try_parse_from(["advsweep-worker", "--device", "tpu"]).is_err());
        assert!(!hostname().is_empty());
        Ok(())
    }

    #[test]
    fn bench_parses_with_global_device_and_threads() -> anyhow::Result<()> {
        let cli = Cli::try_parse_from([
            "advsweep-worker",
            "bench",
            "--model",
            "basic",
            "--mode",
            "pgd10-eval",
            "--device",
            "cpu",
            "--threads",
            "2",
            "--images",
            "64",
            "--json",
        ])?;
        assert_eq!(cli.device, Some(DeviceSetting::Cpu));
        assert_eq!(cli.threads, Some(2));
        let Some(Command::Bench(b)) = cli.command else {
            anyhow::bail!("expected the bench subcommand");
        };
        assert_eq!((b.model, b.mode), (BenchModel::Basic, BenchMode::Pgd10Eval));
        assert_eq!((b.images, b.repeats, b.json), (Some(64), 3, true));
        assert!(Cli::try_parse_from(["advsweep-worker", "bench", "--mode", "x"]).is_err());
        let wide = Cli::try_parse_from(["advsweep-worker", "bench", "--model", "wrn-16-4"])?;
        let Some(Command::Bench(b)) = wide.command else {
            anyhow::bail!("expected the bench subcommand");
        };
        assert_eq!(b.model, BenchModel::Wrn16x4);
        assert!(Cli::try_parse_from(["advsweep-worker"])?.command.is_none());
        Ok(())
    }
}
