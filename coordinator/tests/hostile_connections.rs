//! Unauthenticated connection exhaustion (issue 18): idle TCP connections were never closed,
//! and at the file-descriptor limit the accept loop spun while health checks went unanswered.
//! The real server (`grpc::serve`) must close connections that never speak, cap the open ones
//! (closing the oldest silent one to make room) and keep answering gRPC health. Only
//! correctness is asserted here; the load benchmark measures how fast health is answered.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use advsweep_coordinator::grpc::{ConnectionLimits, Coordinator, ServeOptions, serve};
use advsweep_coordinator::metrics::Metrics;
use advsweep_coordinator::scheduler::{LeaseSettings, Scheduler};
use advsweep_coordinator::store::SqliteStore;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn start(
    limits: ConnectionLimits,
) -> (std::net::SocketAddr, Arc<Metrics>, tempfile::TempDir) {
    start_with(ServeOptions {
        connections: limits,
        ..ServeOptions::default()
    })
    .await
}

async fn start_with(
    options: ServeOptions,
) -> (std::net::SocketAddr, Arc<Metrics>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("store");
    let coordinator = Coordinator::new(Scheduler::new(Arc::new(store), LeaseSettings::default()))
        .with_options(options);
    let metrics = Arc::clone(&coordinator.metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(serve(coordinator, listener, std::future::pending()));
    (addr, metrics, dir)
}

async fn health(addr: std::net::SocketAddr) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("connects");
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answered")
        .into_inner()
        .status;
    ServingStatus::try_from(status).expect("a known status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_answered_while_1000_idle_connections_are_held() {
    let (addr, metrics, _dir) = start(ConnectionLimits {
        max_connections: 32,
        first_bytes_timeout: Duration::from_secs(600),
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(addr).await.expect("connects"));
    }
    assert_eq!(health(addr).await, ServingStatus::Serving);
    assert!(
        metrics.connections_evicted.load(Ordering::Relaxed) > 0,
        "silent connections made room"
    );
    // Health stays answered on a connection that has spoken.
    assert_eq!(health(addr).await, ServingStatus::Serving);
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_speaks_is_closed() {
    let (addr, metrics, _dir) = start(ConnectionLimits {
        max_connections: 8,
        first_bytes_timeout: Duration::from_millis(200),
    })
    .await;
    let mut silent = TcpStream::connect(addr).await.expect("connects");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(30), silent.read(&mut buf))
        .await
        .expect("closed by the server, not left open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(metrics.connections_silent.load(Ordering::Relaxed), 1);
    assert_eq!(health(addr).await, ServingStatus::Serving);
}

/// Fast timers: a connection may read nothing for 2 × 200 ms + 200 ms before it is closed.
fn quick_idle_options() -> ServeOptions {
    ServeOptions {
        connections: ConnectionLimits {
            max_connections: 8,
            first_bytes_timeout: Duration::from_millis(200),
        },
        keepalive_interval: Duration::from_millis(200),
        ..ServeOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_stalls_after_its_first_byte_is_closed() {
    let (addr, metrics, _dir) = start_with(quick_idle_options()).await;
    let mut slow = TcpStream::connect(addr).await.expect("connects");
    // The first byte of the HTTP/2 preface, then nothing: a slow-loris peer.
    tokio::io::AsyncWriteExt::write_all(&mut slow, b"P")
        .await
        .expect("writes");
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {} // whatever the server wrote before giving up
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a stalled handshake must not hold its slot for ever"
    );
    assert_eq!(metrics.connections_idle_closed.load(Ordering::Relaxed), 1);
    assert_eq!(health(addr).await, ServingStatus::Serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_that_answers_pings_keeps_its_connection() {
    let (addr, metrics, _dir) = start_with(quick_idle_options()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connects");
    let mut client = HealthClient::new(channel);
    let check = HealthCheckRequest {
        service: String::new(),
    };
    client.check(check.clone()).await.expect("health answered");
    // Five times the read-idle limit without a call: the server's PINGs and the client's
    // ACKs keep the connection read, so it is not taken for a stalled one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    client.check(check).await.expect("health answered again");
    assert_eq!(metrics.connections_idle_closed.load(Ordering::Relaxed), 0);
}
