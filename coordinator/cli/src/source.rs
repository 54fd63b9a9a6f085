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
use super::client::pick_sweep;
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
                    eprintln!(
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
