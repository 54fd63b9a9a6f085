//! How a worker or a CLI client reaches the coordinator: its URL, TLS (a CA to trust, an
//! optional client certificate for mutual TLS) and the bearer token sent with every call.
//! The same keys serve `[worker]` and `[client]`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::files::{MAX_SETTINGS_FILE_BYTES, read_bounded};
use crate::load::read_lines_file;
use crate::secret::check_token;
use crate::{Secret, SettingsError};

pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:50051";

/// The connection keys shared by `[worker]` and `[client]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionSettings {
    /// `http://host:port`, or `https://host:port` with TLS.
    pub coordinator: String,
    /// Bearer token sent as `authorization: Bearer …` (prefer `token_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// A file whose first non-comment line is the token (a mounted Kubernetes Secret).
    /// Of `token` and `token_file`, the one set by the higher layer counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificate(s) to verify the coordinator with; needed for `https://`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate and key, for coordinators that require mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// The name the coordinator's certificate is checked against, when not the URL's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_domain: Option<String>,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            coordinator: DEFAULT_COORDINATOR.to_owned(),
            token: None,
            token_file: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_domain: None,
        }
    }
}

/// The keys of [`ConnectionSettings`].
pub const CONNECTION_KEYS: [&str; 7] = [
    "coordinator",
    "token",
    "token_file",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "tls_domain",
];

impl ConnectionSettings {
    /// Checks the combination and reads `token_file` into `token`.
    pub fn finish(&mut self, table: &str) -> Result<(), SettingsError> {
        let bad = |msg: String| SettingsError(format!("[{table}] {msg}"));
        empty_is_unset(&mut self.tls_ca);
        empty_is_unset(&mut self.tls_cert);
        empty_is_unset(&mut self.tls_key);
        empty_is_unset(&mut self.token_file);
        self.tls_domain = self.tls_domain.take().filter(|d| !d.is_empty());
        self.token = self.token.take().filter(|t| !t.expose().is_empty());
        let tls = self.coordinator.starts_with("https://");
        if !tls && !self.coordinator.starts_with("http://") {
            return Err(bad(format!(
                "coordinator = `{}` must start with http:// or https://",
                self.coordinator
            )));
        }
        if !tls && (self.tls_ca.is_some() || self.tls_cert.is_some()) {
            return Err(bad(format!(
                "TLS files are set but coordinator = `{}` is plain http://; use https://",
                self.coordinator
            )));
        }
        if tls && self.tls_ca.is_none() {
            return Err(bad(
                "coordinator is https:// but tls_ca is not set: advsweep trusts only the CA \
                 you name (the coordinator's certificate authority, PEM)"
                    .to_owned(),
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(bad("tls_cert and tls_key must be set together".to_owned()));
        }
        // The loader keeps only the higher layer's of `token` and `token_file` (an
        // `ADVSWEEP_TOKEN` beats a file's `token_file`; `--token-file` beats `ADVSWEEP_TOKEN`).
        if self.token.is_some() && self.token_file.is_some() {
            return Err(bad("set token or token_file, not both".to_owned()));
        }
        if let Some(path) = &self.token_file {
            let lines = read_lines_file("token_file", path)?;
            let first = lines
                .into_iter()
                .next()
                .ok_or_else(|| bad(format!("token_file {} holds no token", path.display())))?;
            self.token = Some(Secret::new(first));
        }
        if let Some(token) = &self.token {
            check_token(&format!("[{table}] token"), token).map_err(SettingsError)?;
        }
        Ok(())
    }

    /// A lazily connecting endpoint with TLS configured from these settings.
    pub fn endpoint(&self) -> Result<Endpoint, SettingsError> {
        let url = &self.coordinator;
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| SettingsError(format!("invalid coordinator URL `{url}`: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .tcp_keepalive(Some(Duration::from_secs(30)));
        if let Some(ca) = &self.tls_ca {
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read_pem("tls_ca", ca)?));
            if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
                tls = tls.identity(Identity::from_pem(
                    read_pem("tls_cert", cert)?,
                    read_pem("tls_key", key)?,
                ));
            }
            if let Some(domain) = &self.tls_domain {
                tls = tls.domain_name(domain.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| SettingsError(format!("TLS settings for {url}: {e}")))?;
        }
        Ok(endpoint)
    }

    /// The interceptor that adds the bearer token to every call (none without a token).
    pub fn bearer(&self) -> Result<BearerToken, SettingsError> {
        let header = match &self.token {
            None => None,
            Some(token) => {
                let mut value = format!("Bearer {}", token.expose())
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| SettingsError("the token is not a valid header value".into()))?;
                // Never put the token into HTTP/2 header compression tables.
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(BearerToken(header))
    }
}

/// Adds `authorization: Bearer <token>` to outgoing calls.
#[derive(Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.0.is_some() {
            crate::secret::MASK
        } else {
            "none"
        };
        write!(f, "BearerToken({state})")
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel that sends the bearer token: what clients of both services are built on.
pub type AuthChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerToken>;

/// Reads a PEM file (a regular file of at most [`MAX_SETTINGS_FILE_BYTES`]), naming the
/// setting when it cannot.
pub fn read_pem(key: &str, path: &Path) -> Result<Vec<u8>, SettingsError> {
    let bytes = read_bounded(path, MAX_SETTINGS_FILE_BYTES)
        .map_err(|e| SettingsError(format!("cannot read {key} {}: {e}", path.display())))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(SettingsError(format!(
            "{key} {} is not a PEM file (no -----BEGIN line)",
            path.display()
        )));
    }
    Ok(bytes)
}

/// An empty path (an empty environment variable) means "unset".
pub fn empty_is_unset(path: &mut Option<PathBuf>) {
    if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
        *path = None;
    }
}

/// A gRPC status's message and its causes on one line (a transport error's reason is in its
/// source chain; `Status`'s own `Display` repeats it in debug form).
pub fn status_chain(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An error and its causes on one line (a TLS failure hides its reason two levels down).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A hint for a connection error that looks like a TLS mismatch: a plaintext (`http://`)
/// client talking to a TLS port gets "h2 protocol error" with nothing else to go on; a TLS
/// client talking to a plaintext port gets a TLS record error. `None` when the error says
/// neither.
pub fn tls_mismatch_hint(error_text: &str) -> Option<&'static str> {
    let text = error_text.to_ascii_lowercase();
    // A TLS server that reads an HTTP/2 preface sends an alert (which the client parses as a
    // malformed frame) or just closes (a broken pipe under the client's first write, or the
    // request cancelled because the connection closed before any answer).
    let plaintext_to_tls = [
        "h2 protocol error",
        "frame with invalid size",
        "http2 error",
        "stream closed because of a broken pipe",
        "canceled: connection closed",
    ];
    let tls_to_plaintext = [
        "invalidcontenttype",
        "corrupt message",
        "received corrupt message",
        "wrong version number",
    ];
    if tls_to_plaintext.iter().any(|s| text.contains(s)) {
        Some(
            "the coordinator may not serve TLS: use an http:// address, or set tls_cert and \
             tls_key on the coordinator",
        )
    } else if plaintext_to_tls.iter().any(|s| text.contains(s)) {
        Some(
            "if the coordinator serves TLS, use an https:// address and the CA that signed its \
             certificate (tls_ca, --tls-ca); if this is its metrics port (plain HTTP/1.1), use \
             the gRPC port it listens on instead",
        )
    } else {
        None
    }
}
