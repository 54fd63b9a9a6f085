//! Assembling and serving the coordinator: both v1 services, gRPC health (SERVING once the
//! store is open) and reflection (so `grpcurl list` works without .proto files).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use advsweep_proto::v1::sweep_service_server::SweepServiceServer;
use advsweep_proto::v1::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;

use super::{ChangeNotifier, SweepApi, WorkerApi};
use crate::metrics::{Metrics, MetricsLayer};
use crate::store::Store;

/// The services around one store.
#[derive(Debug, Clone)]
pub struct Coordinator {
    pub store: Arc<Store>,
    pub changes: ChangeNotifier,
    pub metrics: Arc<Metrics>,
}

impl Coordinator {
    pub fn new(store: Arc<Store>) -> Self {
        Coordinator {
            store,
            changes: ChangeNotifier::default(),
            metrics: Arc::new(Metrics::default()),
        }
    }
}

/// Largest message accepted (sweep files, metric batches).
const MAX_MESSAGE_BYTES: usize = 8 << 20;

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
    let expiry_store = Arc::clone(&coordinator.store);
    let expiry_changes = coordinator.changes.clone();
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let store = Arc::clone(&expiry_store);
            match tokio::task::spawn_blocking(move || store.expire_leases()).await {
                Ok(Ok(0)) => {}
                Ok(Ok(_)) => expiry_changes.notify(),
                Ok(Err(e)) => tracing::error!(error = %e, "lease expiry failed"),
                Err(e) => tracing::error!(error = %e, "lease expiry task panicked"),
            }
        }
    });

    let worker = WorkerServiceServer::new(WorkerApi::new(
        Arc::clone(&coordinator.store),
        coordinator.changes.clone(),
        Arc::clone(&coordinator.metrics),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let sweeps = SweepServiceServer::new(SweepApi::new(
        Arc::clone(&coordinator.store),
        coordinator.changes.clone(),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES);

    let addr = listener.local_addr()?;
    // Without TCP_NODELAY a response written in two pieces (headers, then body) waits for the
    // client's delayed ACK: 40 ms per Lease on Linux. tonic sets it only on listeners it binds.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    });
    tracing::info!(%addr, state = %coordinator.store.path().display(), "coordinator serving");
    let result = tonic::transport::Server::builder()
        .layer(MetricsLayer(Arc::clone(&coordinator.metrics)))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(worker)
        .add_service(sweeps)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    sweeper.abort();
    result?;
    Ok(())
}
