//! Command-line interface of `advsweep-worker`.

use crate::bench::{BenchMode, BenchModel};
use crate::device::DeviceChoice;

/// advsweep GPU worker: leases runs from the coordinator, trains and attacks models with
/// libtorch, and reports metrics and results.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "advsweep-worker", version, about)]
pub struct Cli {
    /// Coordinator gRPC URL.
    #[arg(
        long,
        env = "ADVSWEEP_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub coordinator: String,

    /// Worker name shown by the coordinator [default: <hostname>-<pid>].
    #[arg(long)]
    pub name: Option<String>,

    /// Device to train and attack on; `auto` uses CUDA when libtorch sees a GPU.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto, global = true)]
    pub device: DeviceChoice,

    /// libtorch intra-op CPU threads [default: the number of available cores].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096), global = true)]
    pub threads: Option<u32>,

    /// Exit (status 0) when the coordinator reports that no sweep has work left.
    #[arg(long)]
    pub exit_when_idle: bool,

    /// Build BasicNet, run one forward/backward pass on the chosen device, print the device
    /// and "ok", and exit.
    #[arg(long)]
    pub self_check: bool,

    /// Stop taking work after this many failed runs in a row (a bad GPU or node).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_consecutive_failures: u32,

    /// Log line format: human, or json (one object per line, for log shippers).
    #[arg(long, value_enum, default_value_t = LogFormat::Human, env = "ADVSWEEP_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Without a subcommand the worker leases runs from the coordinator.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the worker does instead of serving the coordinator.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Measure training and attack throughput (images/s) on synthetic CIFAR-shaped data with
    /// the same code runs use; needs no coordinator and no files.
    Bench(BenchArgs),
}

/// `advsweep-worker bench`: which computations, how large, how often.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Model(s) to measure.
    #[arg(long, value_enum, default_value_t = BenchModel::All)]
    pub model: BenchModel,

    /// Computation(s) to measure: standard training, FGSM or PGD-10 adversarial training
    /// (the at-fgsm / at-pgd-linf presets at ε = 8/255), or PGD-10 ℓ∞ evaluation.
    #[arg(long, value_enum, default_value_t = BenchMode::All)]
    pub mode: BenchMode,

    /// Batch size [default: 128 for training, 500 for evaluation, the sweep defaults].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: Option<u32>,

    /// Images per timed repeat [default: depends on model, mode and device].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub images: Option<u32>,

    /// Timed repeats after one warm-up pass; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeats: u32,

    /// Print one JSON document on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
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

/// `--name`, or `<hostname>-<pid>`.
pub fn worker_name(cli: &Cli, hostname: &str) -> String {
    cli.name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| format!("{hostname}-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn defaults_and_flags_parse() -> anyhow::Result<()> {
        let cli = Cli::try_parse_from(["advsweep-worker"])?;
        assert_eq!(cli.device, DeviceChoice::Auto);
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
        assert_eq!(cli.coordinator, "http://c:1");
        assert_eq!(cli.threads, Some(3));
        assert_eq!(worker_name(&cli, "h"), "w1");
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
        assert_eq!(cli.device, DeviceChoice::Cpu);
        assert_eq!(cli.threads, Some(2));
        let Some(Command::Bench(b)) = cli.command else {
            anyhow::bail!("expected the bench subcommand");
        };
        assert_eq!((b.model, b.mode), (BenchModel::Basic, BenchMode::Pgd10Eval));
        assert_eq!((b.images, b.repeats, b.json), (Some(64), 3, true));
        assert!(Cli::try_parse_from(["advsweep-worker", "bench", "--mode", "x"]).is_err());
        assert!(Cli::try_parse_from(["advsweep-worker"])?.command.is_none());
        Ok(())
    }
}
