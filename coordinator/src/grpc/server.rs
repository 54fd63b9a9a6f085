//! Assembling and serving the coordinator: both v1 services behind their role guards, gRPC
//! health (SERVING once the store is open; open to everyone, for probes) and reflection (so
//! `grpcurl list` works without .proto files; client role), optionally over TLS.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use advsweep_proto::v1::sweep_service_server::SweepServiceServer;
use advsweep_proto::v1::worker_service_server::WorkerServiceServer;
use advsweep_settings::coordinator::{
    DEFAULT_FIRST_BYTES_TIMEOUT_S, DEFAULT_KEEPALIVE_INTERVAL_S, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_STREAMS_PER_CONNECTION,
};
use tokio::net::TcpListener;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::ServerTlsConfig;

use super::auth::{Auth, Role};
pub use super::incoming::ConnectionLimits;
use super::incoming::incoming;
use super::{ChangeNotifier, SweepApi, WorkerApi};
use crate::metrics::{Metrics, MetricsLayer};
use crate::scheduler::Scheduler;
use crate::sweep::Limits;

/// The services around one scheduler (and its store).
#[derive(Debug, Clone)]
pub struct Coordinator {
    pub scheduler: Arc<Scheduler>,
    pub changes: ChangeNotifier,
    pub metrics: Arc<Metrics>,
    pub options: ServeOptions,
}

impl Coordinator {
    pub fn new(scheduler: Scheduler) -> Self {
        Coordinator {
            scheduler: Arc::new(scheduler),
            changes: ChangeNotifier::default(),
            metrics: Arc::new(Metrics::default()),
            options: ServeOptions::default(),
        }
    }

    pub fn with_options(mut self, options: ServeOptions) -> Self {
        self.options = options;
        self
    }
}

/// How the services face the network: TLS, who may call, how much they accept.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// rustls server configuration; `None` serves plaintext.
    pub tls: Option<ServerTlsConfig>,
    pub auth: Auth,
    /// Largest message accepted (sweep files, metric batches, checkpoint chunks).
    pub max_message_bytes: usize,
    /// Largest grid a submitted sweep may expand to.
    pub limits: Limits,
    /// Checkpoint downloads served at once (`max_checkpoint_downloads`).
    pub max_checkpoint_downloads: usize,
    /// Open connections and how long a new one may stay silent (`incoming`).
    pub connections: ConnectionLimits,
    /// HTTP/2 streams (calls in flight) per connection.
    pub max_streams_per_connection: u32,
    /// HTTP/2 PING interval; an unanswered PING closes the connection after as long again.
    pub keepalive_interval: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            tls: None,
            auth: Auth::default(),
            max_message_bytes: 8 << 20,
            limits: Limits::default(),
            max_checkpoint_downloads: super::checkpoints::DEFAULT_MAX_DOWNLOADS,
            connections: ConnectionLimits {
                max_connections: DEFAULT_MAX_CONNECTIONS as usize,
                first_bytes_timeout: Duration::from_secs_f64(DEFAULT_FIRST_BYTES_TIMEOUT_S),
            },
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION as u32,
            keepalive_interval: Duration::from_secs_f64(DEFAULT_KEEPALIVE_INTERVAL_S),
        }
    }
}

impl ServeOptions {
    /// The options a coordinator's settings describe (reads the TLS files).
    pub fn from_settings(
        settings: &advsweep_settings::CoordinatorSettings,
    ) -> Result<Self, advsweep_settings::SettingsError> {
        Ok(ServeOptions {
            tls: settings.server_tls()?,
            auth: Auth::from_settings(settings),
            max_message_bytes: usize::try_from(settings.max_message_bytes).unwrap_or(usize::MAX),
            limits: Limits {
                max_cells: settings.max_cells_per_sweep,
                max_model_file_bytes: settings.max_model_file_bytes,
            },
            max_checkpoint_downloads: usize::try_from(settings.max_checkpoint_downloads)
                .unwrap_or(usize::MAX),
            connections: ConnectionLimits {
                max_connections: usize::try_from(settings.max_connections).unwrap_or(usize::MAX),
                first_bytes_timeout: settings.first_bytes_timeout(),
            },
            max_streams_per_connection: u32::try_from(settings.max_streams_per_connection)
                .unwrap_or(u32::MAX),
            keepalive_interval: settings.keepalive_interval(),
        })
    }
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve(
    coordinator: Coordinator,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<WorkerServiceServer<WorkerApi>>().await;
    health.set_serving::<SweepServiceServer<SweepApi>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(advsweep_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    // Leases also expire lazily on every lease/heartbeat; this sweeper makes expiry visible in
    // `status` even when no worker is calling.
    let expiry = Arc::clone(&coordinator.scheduler);
    let expiry_changes = coordinator.changes.clone();
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            match expiry.expire_leases().await {
                Ok(0) => {}
                Ok(_) => expiry_changes.notify(),
                Err(e) => tracing::error!(error = %e, "lease expiry failed"),
            }
        }
    });

    let options = &coordinator.options;
    let max_message = options.max_message_bytes;
    let worker = InterceptedService::new(
        WorkerServiceServer::new(
            WorkerApi::new(
                Arc::clone(&coordinator.scheduler),
                coordinator.changes.clone(),
                Arc::clone(&coordinator.metrics),
            )
            .with_download_limit(options.max_checkpoint_downloads),
        )
        .max_decoding_message_size(max_message),
        options.auth.guard(Role::Worker),
    );
    let sweeps = InterceptedService::new(
        SweepServiceServer::new(
            SweepApi::new(
                Arc::clone(&coordinator.scheduler),
                coordinator.changes.clone(),
            )
            .with_limits(options.limits.clone()),
        )
        .max_decoding_message_size(max_message),
        options.auth.guard(Role::Client),
    );
    let reflection = InterceptedService::new(reflection, options.auth.guard(Role::Client));

    let addr = listener.local_addr()?;
    let read_idle = options.keepalive_interval * 2 + options.connections.first_bytes_timeout;
    let open_files = super::incoming::open_files_limit();
    let connections = options.connections.within_open_files(open_files);
    if connections.max_connections < options.connections.max_connections {
        tracing::warn!(
            max_connections = options.connections.max_connections,
            open_files_limit = open_files,
            lowered_to = connections.max_connections,
            "max_connections does not fit under the open-files limit (ulimit -n) with room for \
             the store; lowered"
        );
    }
    let (incoming, acceptor) = incoming(
        listener,
        connections,
        read_idle,
        Arc::clone(&coordinator.metrics),
    );
    tracing::info!(
        %addr,
        state = %coordinator.scheduler.store().location().display(),
        tls = options.tls.is_some(),
        tokens = options.auth.tokens_required(),
        max_message_bytes = max_message,
        max_cells_per_sweep = options.limits.max_cells,
        max_connections = connections.max_connections,
        "coordinator serving"
    );
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(options.max_streams_per_connection)
        .http2_keepalive_interval(Some(options.keepalive_interval))
        .http2_keepalive_timeout(Some(options.keepalive_interval));
    if let Some(tls) = options.tls.clone() {
        builder = builder
            .tls_config(tls)
            .map_err(|e| anyhow::anyhow!("TLS configuration rejected: {e}"))?;
    }
    let result = builder
        .layer(MetricsLayer(Arc::clone(&coordinator.metrics)))
        .layer(super::wire_errors::DecodeErrorsLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(worker)
        .add_service(sweeps)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    sweeper.abort();
    acceptor.abort();
    result?;
    Ok(())
}
