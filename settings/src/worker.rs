//! `[worker]`: an `advsweep-worker` process — where the coordinator is, which device it
//! trains on, and how many runs it trains there at once.

use serde::{Deserialize, Serialize};

use crate::SettingsError;
use crate::connection::{CONNECTION_KEYS, ConnectionSettings};
use crate::load::RoleSettings;

/// Which device a worker trains on: the `device` key and the worker's `--device` flag (one
/// enum, so the two cannot drift).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceSetting {
    /// CUDA device 0 when libtorch sees one, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl DeviceSetting {
    /// The key's and the flag's spelling (`auto`, `cpu`, `cuda`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceSetting::Auto => "auto",
            DeviceSetting::Cpu => "cpu",
            DeviceSetting::Cuda => "cuda",
        }
    }
}

/// The most runs one worker process trains at once.
pub const MAX_SLOTS: u32 = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerSettings {
    #[serde(flatten)]
    pub connection: ConnectionSettings,
    /// Shown by the coordinator (default: `<hostname>-<pid>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub device: DeviceSetting,
    /// libtorch intra-op CPU threads [default: available cores, shared among the slots].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// Runs trained at once on the device (each slot leases its own run).
    pub slots: u32,
    /// Stop taking work after this many failed runs in a row (a bad GPU or node).
    pub max_consecutive_failures: u32,
    /// Exit (status 0) when the coordinator reports that no sweep has work left.
    pub exit_when_idle: bool,
    /// Take only the runs this sweep (id) needs: a worker pool dedicated to one sweep.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<String>,
    /// A cell still evaluating after this many seconds reports its finished batches to the
    /// coordinator (durably), and again every as many seconds: a worker that takes the run
    /// over resumes the cell there. 0: after every evaluation batch.
    pub cell_progress_interval_s: f64,
    /// Where model files (researchers' TorchScript modules and weights) are cached by SHA-256
    /// [default: `$XDG_CACHE_HOME/advsweep/models`, else `~/.cache/advsweep/models`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_cache: Option<std::path::PathBuf>,
    /// After SIGTERM or Ctrl-C, how long the worker may take to stop its run and hand it back
    /// (or deliver its last results) before it exits regardless: a coordinator that is gone
    /// cannot keep it alive. What it could not deliver is redone once the lease expires.
    pub shutdown_grace_s: f64,
}

/// Default `cell_progress_interval_s`: a lost worker costs at most a minute of a long cell,
/// and a cell shorter than that costs no extra call.
pub const DEFAULT_CELL_PROGRESS_INTERVAL_S: f64 = 60.0;

/// Default `shutdown_grace_s`: one batch of the slowest model (PGD adversarial training of a
/// WideResNet: tens of seconds on smaller GPUs) and the hand-back, with margin; under the
/// systemd unit's `TimeoutStopSec` (150 s), which would SIGKILL first.
pub const DEFAULT_SHUTDOWN_GRACE_S: f64 = 120.0;

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            connection: ConnectionSettings::default(),
            name: None,
            device: DeviceSetting::Auto,
            threads: None,
            slots: 1,
            max_consecutive_failures: 3,
            exit_when_idle: false,
            sweep: None,
            cell_progress_interval_s: DEFAULT_CELL_PROGRESS_INTERVAL_S,
            model_cache: None,
            shutdown_grace_s: DEFAULT_SHUTDOWN_GRACE_S,
        }
    }
}

impl WorkerSettings {
    /// `cell_progress_interval_s` as a duration.
    pub fn cell_progress_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.cell_progress_interval_s)
    }

    /// `shutdown_grace_s` as a duration.
    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.shutdown_grace_s)
    }
}

impl RoleSettings for WorkerSettings {
    const TABLE: &'static str = "worker";
    const EITHER_OR: &'static [(&'static str, &'static str)] = &[("token", "token_file")];
    fn keys() -> Vec<&'static str> {
        let own = [
            "name",
            "device",
            "threads",
            "slots",
            "max_consecutive_failures",
            "exit_when_idle",
            "sweep",
            "cell_progress_interval_s",
            "model_cache",
            "shutdown_grace_s",
        ];
        CONNECTION_KEYS.iter().chain(&own).copied().collect()
    }

    fn finish(&mut self) -> Result<(), SettingsError> {
        self.connection.finish(Self::TABLE)?;
        self.name = self.name.take().filter(|n| !n.trim().is_empty());
        if let Some(name) = &self.name
            && (name.len() > 128 || name.chars().any(char::is_control))
        {
            return Err(SettingsError(
                "[worker] name must be at most 128 characters, without control characters".into(),
            ));
        }
        self.sweep = self.sweep.take().filter(|s| !s.is_empty());
        if let Some(sweep) = &self.sweep
            && !is_sweep_id(sweep)
        {
            return Err(SettingsError(format!(
                "[worker] sweep = `{}` is not a sweep id (s- and 16 hex digits; \
                 `advsweep status` lists them)",
                sweep.chars().take(40).collect::<String>()
            )));
        }
        if self.threads == Some(0) || self.threads.is_some_and(|t| t > 4096) {
            return Err(SettingsError("[worker] threads must be in 1..=4096".into()));
        }
        if !(1..=MAX_SLOTS).contains(&self.slots) {
            return Err(SettingsError(format!(
                "[worker] slots = {} must be in 1..={MAX_SLOTS}",
                self.slots
            )));
        }
        if !(self.cell_progress_interval_s.is_finite()
            && (0.0..=86_400.0).contains(&self.cell_progress_interval_s))
        {
            return Err(SettingsError(format!(
                "[worker] cell_progress_interval_s = {} must be in 0..=86400 seconds",
                self.cell_progress_interval_s
            )));
        }
        if !(self.shutdown_grace_s.is_finite() && (0.0..=3_600.0).contains(&self.shutdown_grace_s))
        {
            return Err(SettingsError(format!(
                "[worker] shutdown_grace_s = {} must be in 0..=3600 seconds",
                self.shutdown_grace_s
            )));
        }
        if self.max_consecutive_failures == 0 {
            return Err(SettingsError(
                "[worker] max_consecutive_failures must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// `s-` and 16 lowercase hex digits: what `advsweep status` shows as a sweep's id.
fn is_sweep_id(text: &str) -> bool {
    text.strip_prefix("s-").is_some_and(|hex| {
        hex.len() == 16
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}
