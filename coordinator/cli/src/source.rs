//! Where `status` and `report` read a sweep from: the coordinator over gRPC, or, without one,
//! the state directory itself (read-only SQLite), so that `advsweep report quickstart` works
//! after `advsweep run` has ended and its embedded coordinator with it.
//!
//! Offline when `--state-dir` is given; also when no coordinator was named (the default
//! address), none answers there, and `./advsweep-state` (where `advsweep run` writes) exists.

use std::path::{Path, PathBuf};

use advsweep_coordinator::grpc::convert;
use advsweep_coordinator::store::{SqliteStore, StateStore};
use advsweep_core::SweepId;
use advsweep_proto::v1 as pb;
use advsweep_settings::connection::DEFAULT_COORDINATOR;

use super::BadInput;
use super::connection::{self, Client, Target, rpc_error};

/// `advsweep run`'s default state directory.
const RUN_STATE_DIR: &str = "advsweep-state";

/// The sweeps a command reads.
pub enum Sweeps {
    Live(Client),
    Offline(SqliteStore),
}

impl Sweeps {
    /// The state directory `state_dir` when given; else the coordinator `target` names, or
    /// `./advsweep-state` when that is the default coordinator and it does not answer.
    pub async fn open(target: &Target, state_dir: Option<&Path>) -> anyhow::Result<Sweeps> {
        if let Some(dir) = state_dir {
            return offline(dir);
        }
        let settings = target.settings()?;
        match connection::connect_with(&settings).await {
            Ok(client) => Ok(Sweeps::Live(client)),
            Err(e) => {
                let local = PathBuf::from(RUN_STATE_DIR);
                if settings.connection.coordinator == DEFAULT_COORDINATOR
                    && local.join("state.sqlite").is_file()
                {
                    errln!(
                        "advsweep: no coordinator at {DEFAULT_COORDINATOR}; reading ./{RUN_STATE_DIR} \
                         instead (offline; --state-dir DIR reads another)"
                    );
                    offline(&local)
                } else {
                    Err(e)
                }
            }
        }
    }

    pub async fn list(&mut self) -> anyhow::Result<Vec<pb::SweepSummary>> {
        Ok(match self {
            Sweeps::Live(client) => {
                client
                    .list_sweeps(pb::ListSweepsRequest {})
                    .await
                    .map_err(|s| rpc_error("ListSweeps", s))?
                    .into_inner()
                    .sweeps
            }
            Sweeps::Offline(store) => store.list_sweeps()?.iter().map(convert::summary).collect(),
        })
    }

    /// The sweep with this id or name (the newest of that name).
    pub async fn detail(&mut self, id_or_name: &str) -> anyhow::Result<pb::SweepDetail> {
        let sweep_id = pick_sweep(&self.list().await?, id_or_name)?;
        Ok(match self {
            Sweeps::Live(client) => client
                .get_sweep(pb::GetSweepRequest { sweep_id })
                .await
                .map_err(|s| rpc_error("GetSweep", s))?
                .into_inner(),
            Sweeps::Offline(store) => {
                convert::detail(&store.sweep_detail(&SweepId::new(sweep_id)?)?)
            }
        })
    }
}

fn offline(dir: &Path) -> anyhow::Result<Sweeps> {
    SqliteStore::open_read_only(dir)
        .map(Sweeps::Offline)
        .map_err(|e| BadInput(e.to_string()).into())
}

/// The id of the sweep `id_or_name` names: the sweep with that id, else the newest sweep of
/// that name.
pub fn pick_sweep(sweeps: &[pb::SweepSummary], id_or_name: &str) -> anyhow::Result<String> {
    if let Some(s) = sweeps.iter().find(|s| s.sweep_id == id_or_name) {
        return Ok(s.sweep_id.clone());
    }
    sweeps
        .iter()
        .filter(|s| s.name == id_or_name)
        .max_by_key(|s| s.created_unix_ms)
        .map(|s| s.sweep_id.clone())
        .ok_or_else(|| {
            BadInput(format!(
                "no sweep with id or name `{id_or_name}` (`advsweep status` lists them)"
            ))
            .into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(id: &str, name: &str, created: i64) -> pb::SweepSummary {
        pb::SweepSummary {
            sweep_id: id.into(),
            name: name.into(),
            created_unix_ms: created,
            ..Default::default()
        }
    }

    #[test]
    fn a_sweep_is_found_by_id_or_by_its_newest_name() {
        let sweeps = [
            summary("s-1", "fig1", 10),
            summary("s-2", "fig1", 20),
            summary("s-3", "fig4", 15),
        ];
        assert_eq!(pick_sweep(&sweeps, "s-1").unwrap(), "s-1");
        assert_eq!(pick_sweep(&sweeps, "fig1").unwrap(), "s-2");
        assert_eq!(pick_sweep(&sweeps, "fig4").unwrap(), "s-3");
        let err = pick_sweep(&sweeps, "fig7").unwrap_err().to_string();
        assert!(err.contains("no sweep with id or name `fig7`"), "{err}");
    }
}
