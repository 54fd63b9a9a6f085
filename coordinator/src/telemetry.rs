//! Logging set-up. `RUST_LOG` controls verbosity (default `info`); spans carry the sweep, run,
//! cell, worker and attempt ids, so `grep run_id=r-…` over the logs explains a run's life.

use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Logs to stderr.
pub fn init_stderr() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Logs to a file (the embedded coordinator of `advsweep run`, whose terminal belongs to the
/// progress bar). Falls back to stderr if the file cannot be created.
pub fn init_file(path: &Path) {
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(file) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_ansi(false)
                .with_writer(Mutex::new(file))
                .try_init();
        }
        Err(e) => {
            eprintln!(
                "advsweep: cannot open log file {}: {e}; logging to stderr",
                path.display()
            );
            init_stderr();
        }
    }
}
