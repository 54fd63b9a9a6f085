//! The connection flags shared by the worker and the CLI clients (`--token-file`, `--tls-*`):
//! one definition, so both binaries spell and document them the same way. They are the top
//! layer of the `[worker]` / `[client]` connection keys.

use std::path::PathBuf;

use crate::Overrides;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectionFlags {
    /// File holding the bearer token [env: ADVSWEEP_TOKEN_FILE; or ADVSWEEP_TOKEN]
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// PEM CA that signed the coordinator's certificate (needed for https://)
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for coordinators that require mutual TLS
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM key of --tls-cert
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name to verify the coordinator's certificate against, when not the URL's host
    #[arg(long)]
    pub tls_domain: Option<String>,
}

impl ConnectionFlags {
    /// Adds the flags that were given to `overrides`.
    pub fn apply(&self, overrides: Overrides) -> Overrides {
        overrides
            .set_path("token_file", self.token_file.as_deref())
            .set_path("tls_ca", self.tls_ca.as_deref())
            .set_path("tls_cert", self.tls_cert.as_deref())
            .set_path("tls_key", self.tls_key.as_deref())
            .set("tls_domain", self.tls_domain.clone())
    }
}
