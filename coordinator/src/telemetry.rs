//! Logging set-up. `RUST_LOG` controls verbosity (default `info`); `--log-format json` writes
//! one JSON object per line for log shippers. Events carry the sweep, run, cell, worker and
//! attempt ids as fields, so `grep run_id=r-…` (or a JSON query on `run_id`) explains a run.

use std::path::Path;
use std::sync::Mutex;

pub use advsweep_settings::LogFormat;
use tracing_subscriber::EnvFilter;

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

fn init<W>(format: LogFormat, writer: W, ansi: bool)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(writer)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Logs to stderr.
pub fn init_stderr(format: LogFormat) {
    use std::io::IsTerminal;
    init(format, std::io::stderr, std::io::stderr().is_terminal());
}

/// Logs to a file (the embedded coordinator of `advsweep run`, whose terminal belongs to the
/// progress bar). Falls back to stderr if the file cannot be created.
pub fn init_file(path: &Path, format: LogFormat) {
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(file) => init(format, Mutex::new(file), false),
        Err(e) => {
            eprintln!(
                "advsweep: cannot open log file {}: {e}; logging to stderr",
                path.display()
            );
            init_stderr(format);
        }
    }
}
