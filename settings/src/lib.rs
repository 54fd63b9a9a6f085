//! Settings of the advsweep processes and what they mean for their connections.
//!
//! Each process has one role — `coordinator`, `worker` or `client` (the CLI commands that
//! call a coordinator) — and reads that role's settings from defaults, a TOML config file,
//! `ADVSWEEP_*` environment variables and command-line flags ([`load()`]). Secrets (bearer
//! tokens) are [`Secret`]s: masked wherever they are printed. The connection side (TLS
//! endpoints, the bearer-token interceptor) lives here too, so that the worker and the CLI —
//! two crates that must not depend on each other — connect the same way.
//!
//! This crate knows nothing of sweeps, the store or libtorch.

pub mod client;
pub mod connection;
pub mod coordinator;
pub mod files;
pub mod flags;
pub mod load;
pub mod logging;
pub mod secret;
pub mod worker;

pub use client::ClientSettings;
pub use connection::{AuthChannel, BearerToken, ConnectionSettings};
pub use coordinator::{ClientAuth, CoordinatorSettings};
pub use flags::ConnectionFlags;
pub use load::{Loaded, Overrides, RoleSettings, load, load_from, render};
pub use logging::LogFormat;
pub use secret::Secret;
pub use worker::{DeviceSetting, WorkerSettings};

/// A settings problem, naming the key, the file or the variable at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

#[cfg(test)]
mod tests;
