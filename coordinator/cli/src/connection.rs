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
    let _ = CONNECTED_TO.set(url.clone());
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

/// The coordinator URL this process connected to, for explaining a failed call.
static CONNECTED_TO: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Whether the server at an `http://` URL answers an HTTP/1.1 request (a metrics endpoint, a
/// web server) rather than being a gRPC (HTTP/2) server; asked only after a call failed at the
/// transport, with one-second limits.
fn speaks_http1(url: &str) -> bool {
    use std::io::{Read as _, Write as _};
    use std::net::ToSocketAddrs as _;
    let Some(authority) = url.strip_prefix("http://").map(|a| a.trim_end_matches('/')) else {
        return false;
    };
    let Some(addr) = authority.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    let limit = std::time::Duration::from_secs(1);
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, limit) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(limit));
    let _ = stream.set_write_timeout(Some(limit));
    let request = format!("GET / HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut start = [0u8; 5];
    stream.read_exact(&mut start).is_ok() && &start == b"HTTP/"
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
        // A transport failure's reason is in the status's source chain, not its message.
        let message = advsweep_settings::connection::status_chain(&status);
        let transport = std::error::Error::source(&status).is_some();
        let tls = match CONNECTED_TO.get() {
            Some(url) if transport && speaks_http1(url) => format!(
                " ({url} answers plain HTTP/1.1, not gRPC: it is probably the coordinator's \
                 metrics port; use the port it serves gRPC on, its `listen` address)"
            ),
            _ => tls_hint(&message),
        };
        anyhow::anyhow!("{call} failed: {:?}: {message}{hint}{tls}", status.code())
    }
}
