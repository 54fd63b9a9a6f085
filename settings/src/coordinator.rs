//! `[coordinator]`: the `advsweep coordinator` service — where it listens, where its state
//! lives, lease timing, input limits, TLS and the tokens it accepts.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::connection::{empty_is_unset, read_pem};
use crate::load::{RoleSettings, read_lines_file};
use crate::secret::check_token;
use crate::{Secret, SettingsError};

/// Who must present a client certificate when `tls_client_ca` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Worker calls need a certificate signed by `tls_client_ca`; CLI clients may connect
    /// without one (they authenticate with their token).
    #[default]
    Workers,
    /// Every connection needs one (the TLS handshake fails without it).
    All,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CoordinatorSettings {
    /// gRPC address (`0.0.0.0:50051` to serve a cluster).
    pub listen: String,
    /// Prometheus `GET /metrics` address (plain HTTP); unset: no metrics endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// The web dashboard's address (HTTP: `/metrics` and the JSON API under `/api/v1/`, behind
    /// `client_tokens` when any are set); unset: no dashboard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<String>,
    /// SQLite state and checkpoint artifacts; put it on persistent storage.
    pub state_dir: PathBuf,
    /// A lease not renewed within this many seconds is lost and its run re-queued.
    pub lease_ttl_s: f64,
    /// How often workers heartbeat (well under `lease_ttl_s`).
    pub heartbeat_interval_s: f64,
    /// Largest gRPC message accepted (sweep files, metric batches, checkpoint chunks).
    pub max_message_bytes: u64,
    /// Largest grid one sweep may expand to.
    pub max_cells_per_sweep: u64,
    /// Largest model file (a researcher's TorchScript module or weights) a client may upload.
    pub max_model_file_bytes: u64,
    /// Checkpoint downloads served at once; the next is refused `RESOURCE_EXHAUSTED` (workers
    /// retry). Each holds a few 1 MiB chunks of memory, however slowly its client reads.
    pub max_checkpoint_downloads: u64,
    /// TCP connections served at once. When all are taken, the oldest connection that has not
    /// sent a byte yet is closed to make room; if every one has spoken, the new one is closed.
    /// Lowered at start-up (with a warning) to fit under the open-files limit (`ulimit -n`)
    /// with 96 descriptors to spare for the store and checkpoint files.
    pub max_connections: u64,
    /// HTTP/2 streams (calls in flight) per connection.
    pub max_streams_per_connection: u64,
    /// A new connection must send its first bytes within this many seconds, or it is closed.
    pub first_bytes_timeout_s: f64,
    /// HTTP/2 PING interval; a connection whose peer does not answer within as long again is
    /// closed (dead peers, half-open connections), and one that reads nothing for twice this
    /// plus `first_bytes_timeout_s` (a stalled handshake) too.
    pub keepalive_interval_s: f64,
    /// PEM certificate chain and key: TLS on the gRPC port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA that client certificates must chain to: mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    pub tls_client_auth: ClientAuth,
    /// Tokens that may call WorkerService (register, lease, report).
    #[serde(deserialize_with = "secret_list")]
    pub worker_tokens: Vec<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_tokens_file: Option<PathBuf>,
    /// Tokens that may call SweepService (submit, status, watch, retry, cancel).
    #[serde(deserialize_with = "secret_list")]
    pub client_tokens: Vec<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_tokens_file: Option<PathBuf>,
}

/// Default `lease_ttl_s`: a run whose worker is silent this long goes back to the queue.
pub const DEFAULT_LEASE_TTL_S: f64 = 30.0;
/// Default `max_message_bytes` (8 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 8 << 20;
/// Default `max_cells_per_sweep`: the largest sweep the coordinator is benchmarked at.
pub const DEFAULT_MAX_CELLS_PER_SWEEP: u64 = 100_000;
/// Default `max_model_file_bytes` (4 GiB: a WideResNet-70-16 is ~1.1 GB).
pub const DEFAULT_MAX_MODEL_FILE_BYTES: u64 = 4 << 30;
/// The most `max_model_file_bytes` may be (16 GiB).
pub const MAX_MODEL_FILE_BYTES: u64 = 16 << 30;
/// Default `max_checkpoint_downloads`.
pub const DEFAULT_MAX_CHECKPOINT_DOWNLOADS: u64 = 32;
/// Default `max_connections`: under the common 1024 file-descriptor soft limit, with room for
/// the database, checkpoint files and the metrics listener.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 768;
/// Default `max_streams_per_connection`.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u64 = 128;
/// Default `first_bytes_timeout_s`.
pub const DEFAULT_FIRST_BYTES_TIMEOUT_S: f64 = 10.0;
/// Default `keepalive_interval_s`.
pub const DEFAULT_KEEPALIVE_INTERVAL_S: f64 = 30.0;

impl Default for CoordinatorSettings {
    fn default() -> Self {
        CoordinatorSettings {
            listen: "127.0.0.1:50051".to_owned(),
            metrics_listen: None,
            http_listen: None,
            state_dir: PathBuf::from("advsweep-state"),
            lease_ttl_s: DEFAULT_LEASE_TTL_S,
            heartbeat_interval_s: 5.0,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_cells_per_sweep: DEFAULT_MAX_CELLS_PER_SWEEP,
            max_model_file_bytes: DEFAULT_MAX_MODEL_FILE_BYTES,
            max_checkpoint_downloads: DEFAULT_MAX_CHECKPOINT_DOWNLOADS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            first_bytes_timeout_s: DEFAULT_FIRST_BYTES_TIMEOUT_S,
            keepalive_interval_s: DEFAULT_KEEPALIVE_INTERVAL_S,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_client_auth: ClientAuth::Workers,
            worker_tokens: Vec::new(),
            worker_tokens_file: None,
            client_tokens: Vec::new(),
            client_tokens_file: None,
        }
    }
}

/// Workers upload checkpoints in 1 MiB chunks: anything smaller would refuse every upload.
const MIN_MESSAGE_BYTES: u64 = 2 << 20;
const MAX_MESSAGE_BYTES: u64 = 1 << 30;

impl RoleSettings for CoordinatorSettings {
    const TABLE: &'static str = "coordinator";
    const LIST_KEYS: &'static [&'static str] = &["worker_tokens", "client_tokens"];

    fn keys() -> Vec<&'static str> {
        vec![
            "listen",
            "metrics_listen",
            "http_listen",
            "state_dir",
            "lease_ttl_s",
            "heartbeat_interval_s",
            "max_message_bytes",
            "max_cells_per_sweep",
            "max_model_file_bytes",
            "max_checkpoint_downloads",
            "max_connections",
            "max_streams_per_connection",
            "first_bytes_timeout_s",
            "keepalive_interval_s",
            "tls_cert",
            "tls_key",
            "tls_client_ca",
            "tls_client_auth",
            "worker_tokens",
            "worker_tokens_file",
            "client_tokens",
            "client_tokens_file",
        ]
    }

    fn finish(&mut self) -> Result<(), SettingsError> {
        let bad = |msg: String| Err(SettingsError(format!("[coordinator] {msg}")));
        self.metrics_listen = self.metrics_listen.take().filter(|m| !m.is_empty());
        self.http_listen = self.http_listen.take().filter(|m| !m.is_empty());
        for path in [
            &mut self.tls_cert,
            &mut self.tls_key,
            &mut self.tls_client_ca,
            &mut self.worker_tokens_file,
            &mut self.client_tokens_file,
        ] {
            empty_is_unset(path);
        }
        if self.state_dir.as_os_str().is_empty() {
            return bad("state_dir must not be empty".into());
        }
        check_address("listen", &self.listen)?;
        if let Some(metrics) = &self.metrics_listen {
            check_address("metrics_listen", metrics)?;
        }
        if let Some(http) = &self.http_listen {
            check_address("http_listen", http)?;
        }
        if !(self.lease_ttl_s.is_finite() && (0.05..=86_400.0).contains(&self.lease_ttl_s)) {
            return bad(format!(
                "lease_ttl_s = {} must be in 0.05..=86400",
                self.lease_ttl_s
            ));
        }
        if !(self.heartbeat_interval_s.is_finite()
            && self.heartbeat_interval_s > 0.0
            && self.heartbeat_interval_s * 2.0 <= self.lease_ttl_s)
        {
            return bad(format!(
                "heartbeat_interval_s = {} must be positive and at most half of lease_ttl_s = {} \
                 (a lease must survive a late heartbeat)",
                self.heartbeat_interval_s, self.lease_ttl_s
            ));
        }
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            return bad(format!(
                "max_message_bytes = {} must be in {MIN_MESSAGE_BYTES}..={MAX_MESSAGE_BYTES}",
                self.max_message_bytes
            ));
        }
        if self.max_cells_per_sweep == 0 {
            return bad("max_cells_per_sweep must be at least 1".into());
        }
        if !(1..=MAX_MODEL_FILE_BYTES).contains(&self.max_model_file_bytes) {
            return bad(format!(
                "max_model_file_bytes = {} must be in 1..={MAX_MODEL_FILE_BYTES}",
                self.max_model_file_bytes
            ));
        }
        for (key, value, max) in [
            (
                "max_checkpoint_downloads",
                self.max_checkpoint_downloads,
                4096,
            ),
            ("max_connections", self.max_connections, 1 << 20),
            (
                "max_streams_per_connection",
                self.max_streams_per_connection,
                1 << 16,
            ),
        ] {
            if !(1..=max).contains(&value) {
                return bad(format!("{key} = {value} must be in 1..={max}"));
            }
        }
        for (key, value) in [
            ("first_bytes_timeout_s", self.first_bytes_timeout_s),
            ("keepalive_interval_s", self.keepalive_interval_s),
        ] {
            if !(value.is_finite() && (0.01..=86_400.0).contains(&value)) {
                return bad(format!("{key} = {value} must be in 0.01..=86400"));
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls_cert and tls_key must be set together".into());
        }
        if self.tls_client_auth == ClientAuth::All && self.tls_client_ca.is_none() {
            return bad(
                "tls_client_auth = \"all\" needs tls_client_ca (the CA client certificates \
                 must chain to)"
                    .into(),
            );
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return bad("tls_client_ca (mutual TLS) needs tls_cert and tls_key".into());
        }
        self.worker_tokens =
            gather_tokens("worker", &self.worker_tokens, &self.worker_tokens_file)?;
        self.client_tokens =
            gather_tokens("client", &self.client_tokens, &self.client_tokens_file)?;
        if self.worker_tokens.is_empty() != self.client_tokens.is_empty() {
            return bad(
                "set both worker and client tokens, or neither (no tokens: authentication off)"
                    .into(),
            );
        }
        if let Some(shared) = self
            .worker_tokens
            .iter()
            .find(|t| self.client_tokens.contains(t))
        {
            let _ = shared; // never printed
            return bad(
                "a token is both a worker token and a client token; roles need different tokens"
                    .into(),
            );
        }
        Ok(())
    }
}

/// A list of tokens, or one string of comma-separated tokens. Accepting both means a type
/// mistake never produces a config error, whose text would quote the token.
fn secret_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a list of token strings"))?
    {
        OneOrMany::One(text) => text.split(',').map(str::to_owned).collect(),
        OneOrMany::Many(list) => list,
    };
    Ok(items
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(Secret::new)
        .collect())
}

/// Inline tokens plus those of the file, each checked.
fn gather_tokens(
    role: &str,
    inline: &[Secret],
    file: &Option<PathBuf>,
) -> Result<Vec<Secret>, SettingsError> {
    let mut tokens: Vec<Secret> = inline
        .iter()
        .filter(|t| !t.expose().is_empty())
        .cloned()
        .collect();
    if let Some(path) = file {
        let key = format!("{role}_tokens_file");
        tokens.extend(read_lines_file(&key, path)?.into_iter().map(Secret::new));
    }
    for (i, token) in tokens.iter().enumerate() {
        check_token(&format!("[coordinator] {role} token #{}", i + 1), token)
            .map_err(SettingsError)?;
    }
    Ok(tokens)
}

impl CoordinatorSettings {
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.lease_ttl_s)
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_interval_s)
    }

    pub fn first_bytes_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.first_bytes_timeout_s)
    }

    pub fn keepalive_interval(&self) -> Duration {
        Duration::from_secs_f64(self.keepalive_interval_s)
    }

    /// Whether calls must carry a token.
    pub fn auth_enabled(&self) -> bool {
        !self.worker_tokens.is_empty()
    }

    /// The rustls server configuration, when TLS is on.
    pub fn server_tls(&self) -> Result<Option<ServerTlsConfig>, SettingsError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
            read_pem("tls_cert", cert)?,
            read_pem("tls_key", key)?,
        ));
        if let Some(ca) = &self.tls_client_ca {
            tls = tls
                .client_ca_root(Certificate::from_pem(read_pem("tls_client_ca", ca)?))
                .client_auth_optional(self.tls_client_auth == ClientAuth::Workers);
        }
        Ok(Some(tls))
    }

    /// Whether worker calls must come with a verified client certificate.
    pub fn worker_cert_required(&self) -> bool {
        self.tls_client_ca.is_some()
    }
}

/// `host:port` (a name, an IPv4 address or a bracketed IPv6 one, and a port number): what the
/// coordinator can bind. A bare port gets the address to write instead.
fn check_address(key: &str, value: &str) -> Result<(), SettingsError> {
    let ok = value.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok()
    });
    if ok {
        return Ok(());
    }
    let shown: String = value.chars().filter(|c| !c.is_control()).take(80).collect();
    let example = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        format!("127.0.0.1:{value} (all interfaces: 0.0.0.0:{value})")
    } else {
        "127.0.0.1:50051 (all interfaces: 0.0.0.0:50051)".to_owned()
    };
    Err(SettingsError(format!(
        "[coordinator] {key} = `{shown}` is not an address to listen on: write host:port, \
         e.g. {example}"
    )))
}
