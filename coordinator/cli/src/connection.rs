//! Reaching the coordinator: the `[client]` settings a command connects with, the SweepService
//! client it gets, and how a failed call reads.

use std::path::PathBuf;

use advsweep_proto::v1::sweep_service_client::SweepServiceClient;
use advsweep_settings::{AuthChannel, ClientSettings, ConnectionFlags, Overrides, load};

use super::BadInput;

/// A SweepService client that sends the client token.
pub type Client = SweepServiceClient<AuthChannel>;

/// Which coordinator to call and how: the `[client]` settings (config file, `ADVSWEEP_*`),
/// overridden by these flags. The token comes from `ADVSWEEP_TOKEN`, `--token-file` or the
/// config file, never from a flag (flags show up in `ps`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Target {
    /// Coordinator URL, http:// or https:// [default: http://127.0.0.1:50051]
    #[arg(long)]
    pub coordinator: Option<String>,
    /// Config file with a [client] table [env: ADVSWEEP_CONFIG]
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub connection: ConnectionFlags,
}

impl Target {
    /// The effective client settings.
    pub fn settings(&self) -> anyhow::Result<ClientSettings> {
        let overrides = self
            .connection
            .apply(Overrides::new().set("coordinator", self.coordinator.clone()));
        let loaded = load::<ClientSettings>(self.config.as_deref(), &overrides)
            .map_err(|e| BadInput(e.to_string()))?;
        Ok(loaded.settings)
    }
}

/// Connects to the coordinator `target` names.
pub async fn connect(target: &Target) -> anyhow::Result<Client> {
    connect_with(&target.settings()?).await
}

/// Connects with explicit settings (the embedded coordinator of `advsweep run`).
pub async fn connect_with(settings: &ClientSettings) -> anyhow::Result<Client> {
    let connection = &settings.connection;
    let url = &connection.coordinator;
    let endpoint = connection.endpoint().map_err(|e| BadInput(e.to_string()))?;
    let channel = endpoint.connect().await.map_err(|e| {
        let chain = error_chain(&e);
        let hint = tls_hint(&chain);
        anyhow::anyhow!("cannot reach the coordinator at {url}: {chain}{hint}")
    })?;
    let bearer = connection.bearer().map_err(|e| BadInput(e.to_string()))?;
    Ok(SweepServiceClient::with_interceptor(channel, bearer).max_decoding_message_size(64 << 20))
}

pub use advsweep_settings::connection::error_chain;

/// " (hint)" when `error` looks like a TLS mismatch (plaintext to a TLS port, or the reverse).
fn tls_hint(error: &str) -> String {
    advsweep_settings::connection::tls_mismatch_hint(error)
        .map(|hint| format!(" ({hint})"))
        .unwrap_or_default()
}

/// Maps a gRPC error to an error naming the call; `invalid_argument` counts as bad input.
pub fn rpc_error(call: &str, status: tonic::Status) -> anyhow::Error {
    if status.code() == tonic::Code::InvalidArgument || status.code() == tonic::Code::NotFound {
        BadInput(status.message().to_owned()).into()
    } else {
        let hint = match status.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                " (this coordinator needs a client token: ADVSWEEP_TOKEN, --token-file, or \
                 token_file in the [client] table of the config file)"
            }
            _ => "",
        };
        let tls = tls_hint(status.message());
        anyhow::anyhow!(
            "{call} failed: {:?}: {}{hint}{tls}",
            status.code(),
            status.message()
        )
    }
}
