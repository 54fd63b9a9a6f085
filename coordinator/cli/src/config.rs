//! The coordinator's flags (the top layer of its `[coordinator]` settings) and
//! `advsweep config print`, which shows what a process of each role would run with.

use std::path::PathBuf;
use std::process::ExitCode;

use advsweep_settings::{
    ClientSettings, CoordinatorSettings, Loaded, Overrides, RoleSettings, WorkerSettings, load,
    render,
};

use super::BadInput;

/// `advsweep coordinator`: every flag overrides the same key of `[coordinator]` in the config
/// file and its `ADVSWEEP_<KEY>` variable. Tokens are read from files or the environment
/// only (flags show up in `ps`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CoordinatorArgs {
    /// Config file with a [coordinator] table [env: ADVSWEEP_CONFIG]
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// gRPC address [default: 127.0.0.1:50051]
    #[arg(long)]
    pub listen: Option<String>,
    /// Durable state: SQLite and checkpoint artifacts [default: advsweep-state]
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on `GET /metrics` at this address (e.g. 0.0.0.0:9090)
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Serve the web dashboard's API (and /metrics) at this address (e.g. 0.0.0.0:8080),
    /// behind the client tokens when any are set
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Seconds a lease lives without a heartbeat [default: 30]
    #[arg(long)]
    pub lease_ttl_s: Option<f64>,
    /// Seconds between worker heartbeats [default: 5]
    #[arg(long)]
    pub heartbeat_interval_s: Option<f64>,
    /// Largest gRPC message accepted, bytes [default: 8 MiB]
    #[arg(long)]
    pub max_message_bytes: Option<u64>,
    /// Largest grid a sweep may expand to [default: 100000]
    #[arg(long)]
    pub max_cells_per_sweep: Option<u64>,
    /// PEM certificate chain: serve TLS
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA for client certificates: mutual TLS
    #[arg(long)]
    pub tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: `workers` (worker calls need a certificate) or `all`
    #[arg(long)]
    pub tls_client_auth: Option<String>,
    /// File of worker tokens, one per line
    #[arg(long)]
    pub worker_tokens_file: Option<PathBuf>,
    /// File of client tokens, one per line
    #[arg(long)]
    pub client_tokens_file: Option<PathBuf>,
}

impl CoordinatorArgs {
    pub fn load(&self) -> anyhow::Result<Loaded<CoordinatorSettings>> {
        let overrides = Overrides::new()
            .set("listen", self.listen.clone())
            .set_path("state_dir", self.state_dir.as_deref())
            .set("metrics_listen", self.metrics_listen.clone())
            .set("http_listen", self.http_listen.clone())
            .set("lease_ttl_s", self.lease_ttl_s)
            .set("heartbeat_interval_s", self.heartbeat_interval_s)
            .set("max_message_bytes", self.max_message_bytes)
            .set("max_cells_per_sweep", self.max_cells_per_sweep)
            .set_path("tls_cert", self.tls_cert.as_deref())
            .set_path("tls_key", self.tls_key.as_deref())
            .set_path("tls_client_ca", self.tls_client_ca.as_deref())
            .set("tls_client_auth", self.tls_client_auth.clone())
            .set_path("worker_tokens_file", self.worker_tokens_file.as_deref())
            .set_path("client_tokens_file", self.client_tokens_file.as_deref());
        load(self.config.as_deref(), &overrides).map_err(|e| BadInput(e.to_string()).into())
    }
}

/// Which role `config print` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleChoice {
    Coordinator,
    Worker,
    Client,
    All,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ConfigCommand {
    /// Print the effective settings (defaults, config file, ADVSWEEP_* variables) as TOML,
    /// secrets masked. Fails, naming the key, when the settings are invalid.
    Print {
        /// The role to show.
        #[arg(long, value_enum, default_value_t = RoleChoice::All)]
        role: RoleChoice,
        /// Config file [env: ADVSWEEP_CONFIG]
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

pub fn config(command: &ConfigCommand) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Print { role, config } = command;
    let file = config.as_deref();
    let show = |r: RoleChoice| *role == r || *role == RoleChoice::All;
    let mut sections = Vec::new();
    if show(RoleChoice::Coordinator) {
        sections.push(print_role::<CoordinatorSettings>(file)?);
    }
    if show(RoleChoice::Worker) {
        sections.push(print_role::<WorkerSettings>(file)?);
    }
    if show(RoleChoice::Client) {
        sections.push(print_role::<ClientSettings>(file)?);
    }
    out!("{}", sections.join("\n"));
    Ok(ExitCode::SUCCESS)
}

fn print_role<T: RoleSettings>(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let loaded = load::<T>(file, &Overrides::new()).map_err(|e| BadInput(e.to_string()))?;
    render(&loaded).map_err(|e| anyhow::anyhow!(e))
}
