//! `[client]`: the `advsweep` commands that talk to a running coordinator (submit, status,
//! watch, retry, cancel, health).

use serde::{Deserialize, Serialize};

use crate::SettingsError;
use crate::connection::{CONNECTION_KEYS, ConnectionSettings};
use crate::load::RoleSettings;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientSettings {
    #[serde(flatten)]
    pub connection: ConnectionSettings,
}

impl RoleSettings for ClientSettings {
    const TABLE: &'static str = "client";
    const EITHER_OR: &'static [(&'static str, &'static str)] = &[("token", "token_file")];
    fn keys() -> Vec<&'static str> {
        CONNECTION_KEYS.to_vec()
    }

    fn finish(&mut self) -> Result<(), SettingsError> {
        self.connection.finish(Self::TABLE)
    }
}
