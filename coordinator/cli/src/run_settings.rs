//! `advsweep run --config FILE`: the settings file a cluster uses, applied to the local cluster
//! where they make sense. Its `[coordinator]` table sets the embedded coordinator's leases and
//! limits (lease and heartbeat timing, `max_cells_per_sweep`, `max_model_file_bytes`, download
//! slots); its `[worker]` table the local workers' behaviour (`max_consecutive_failures`,
//! `cell_progress_interval_s`, `model_cache`, `shutdown_grace_s`). Where and how they talk — listen address, state
//! directory, TLS, tokens, the workers' coordinator, names, device and threads — stay `run`'s
//! own: the embedded coordinator listens on 127.0.0.1 with fresh tokens. Only the file is read
//! (no `ADVSWEEP_*` variables), and it is checked like any settings file: an unknown key is an
//! error naming it.

use std::collections::HashMap;
use std::path::Path;

use advsweep_coordinator::grpc::ServeOptions;
use advsweep_coordinator::grpc::auth::Auth;
use advsweep_coordinator::scheduler::LeaseSettings;
use advsweep_coordinator::sweep::Limits;
use advsweep_settings::{CoordinatorSettings, Overrides, WorkerSettings, load_from};

use super::BadInput;

/// The settings `run` applies to its embedded coordinator and local workers.
#[derive(Debug, Clone, Default)]
pub struct LocalSettings {
    /// The file's `[coordinator]` table; none: `run`'s defaults.
    coordinator: Option<CoordinatorSettings>,
    /// `ADVSWEEP_<KEY>` variables for each local worker process.
    worker_env: Vec<(String, String)>,
}

impl LocalSettings {
    /// The defaults, or the file's tables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<LocalSettings> {
        let Some(file) = file else {
            return Ok(LocalSettings::default());
        };
        let env = HashMap::new();
        let bad = |e: advsweep_settings::SettingsError| BadInput(format!("--config: {e}"));
        let coordinator = load_from::<CoordinatorSettings>(Some(file), &env, &Overrides::new())
            .map_err(bad)?
            .settings;
        let worker = load_from::<WorkerSettings>(Some(file), &env, &Overrides::new())
            .map_err(bad)?
            .settings;
        let mut worker_env = vec![
            (
                "ADVSWEEP_MAX_CONSECUTIVE_FAILURES".to_owned(),
                worker.max_consecutive_failures.to_string(),
            ),
            (
                "ADVSWEEP_CELL_PROGRESS_INTERVAL_S".to_owned(),
                worker.cell_progress_interval_s.to_string(),
            ),
            (
                "ADVSWEEP_SHUTDOWN_GRACE_S".to_owned(),
                worker.shutdown_grace_s.to_string(),
            ),
        ];
        if let Some(cache) = &worker.model_cache {
            worker_env.push((
                "ADVSWEEP_MODEL_CACHE".to_owned(),
                cache.display().to_string(),
            ));
        }
        Ok(LocalSettings {
            coordinator: Some(coordinator),
            worker_env,
        })
    }

    pub fn leases(&self) -> LeaseSettings {
        match &self.coordinator {
            None => LeaseSettings::default(),
            Some(c) => LeaseSettings {
                lease_ttl: c.lease_ttl(),
                heartbeat_interval: c.heartbeat_interval(),
                ..LeaseSettings::default()
            },
        }
    }

    /// Plaintext on loopback with `auth`, and the file's limits.
    pub fn serve_options(&self, auth: Auth) -> ServeOptions {
        let Some(c) = &self.coordinator else {
            return ServeOptions {
                auth,
                ..ServeOptions::default()
            };
        };
        ServeOptions {
            auth,
            limits: Limits {
                max_cells: c.max_cells_per_sweep,
                max_model_file_bytes: c.max_model_file_bytes,
            },
            max_checkpoint_downloads: usize::try_from(c.max_checkpoint_downloads)
                .unwrap_or(usize::MAX),
            ..ServeOptions::default()
        }
    }

    pub fn worker_env(&self) -> &[(String, String)] {
        &self.worker_env
    }
}
