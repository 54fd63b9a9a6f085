//! Rolling upgrades: a worker newer than its coordinator. Today's worker reports a run's cells
//! with `CompleteCells`; a coordinator from before that call answers `Unimplemented`, and the
//! worker must then report the same cells one by one with `CompleteCell` instead of losing them.
//!
//! The "old coordinator" is today's services behind a layer that hides `CompleteCells` (the
//! request goes to a method name no version serves, which tonic answers `Unimplemented`, just
//! as an old server does for a method it was generated without).

use advsweep_core::ShownState;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use advsweep_coordinator::grpc::{ChangeNotifier, SweepApi, WorkerApi};
use advsweep_coordinator::metrics::Metrics;
use advsweep_coordinator::scheduler::{LeaseSettings, Scheduler};
use advsweep_coordinator::store::SqliteStore;
use advsweep_proto::v1 as pb;
use advsweep_proto::v1::sweep_service_client::SweepServiceClient;
use advsweep_proto::v1::sweep_service_server::SweepServiceServer;
use advsweep_proto::v1::worker_service_server::WorkerServiceServer;
use advsweep_tests::{spawn_worker, submit};

const SWEEP: &str = r#"
version = 1
name = "mixed-versions"
[data]
source = "synthetic"
seed = 5
train_size = 400
test_size = 200
[training]
epochs = 1
batch_size = 64
[evaluation]
limit = 200
[grid]
models = ["basic"]
defenses = ["standard"]
attacks = ["none", "fgsm"]
epsilons = ["2/255", "8/255"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_worker_reports_cell_by_cell_to_a_coordinator_without_complete_cells() {
    let state_dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(state_dir.path()).expect("store opens"));
    let store = Arc::new(Scheduler::new(
        store,
        LeaseSettings {
            heartbeat_interval: Duration::from_millis(500),
            lease_ttl: Duration::from_secs(20),
            ..LeaseSettings::default()
        },
    ));
    let changes = ChangeNotifier::default();
    let hidden_calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hidden_calls);
    let hide_complete_cells =
        tower::util::MapRequestLayer::new(move |mut req: http::Request<tonic::body::Body>| {
            if req.uri().path() == "/advsweep.v1.WorkerService/CompleteCells" {
                counter.fetch_add(1, Ordering::SeqCst);
                *req.uri_mut() =
                    http::Uri::from_static("/advsweep.v1.WorkerService/NotInThisVersion");
            }
            req
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(hide_complete_cells)
            .add_service(WorkerServiceServer::new(WorkerApi::new(
                Arc::clone(&store),
                changes.clone(),
                Arc::new(Metrics::default()),
            )))
            .add_service(SweepServiceServer::new(SweepApi::new(
                Arc::clone(&store),
                changes,
            )))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let sweep_id = submit(&url, SWEEP).await;
    let log = state_dir.path().join("worker.log");
    let mut worker = spawn_worker(&url, &log, &["--exit-when-idle"]);
    let exit = tokio::time::timeout(Duration::from_secs(300), worker.wait())
        .await
        .expect("the worker finishes the sweep within 5 minutes")
        .expect("worker exit status");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(exit.success(), "worker failed: {exit}\n{log_text}");

    assert!(
        hidden_calls.load(Ordering::SeqCst) > 0,
        "the worker never tried CompleteCells\n{log_text}"
    );
    let detail = SweepServiceClient::connect(url)
        .await
        .expect("client connects")
        .get_sweep(pb::GetSweepRequest { sweep_id })
        .await
        .expect("get sweep")
        .into_inner();
    assert_eq!(detail.cells.len(), 3);
    for cell in &detail.cells {
        assert_eq!(
            cell.state,
            ShownState::Done.as_str(),
            "{cell:?}\n{log_text}"
        );
        let result = cell.result.as_ref().expect("a done cell has its result");
        assert_eq!(result.examples, 200, "{cell:?}");
    }
}
