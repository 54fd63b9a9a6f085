//! A lease is bound to the worker it was granted to (issue 18): another registered worker, or
//! an id nobody registered, quoting a live lease it learned (from a log line, from plaintext
//! traffic) is refused on every lease-quoting call with `PERMISSION_DENIED` and the reason
//! `NOT_LEASE_HOLDER`, and nothing of the lease's run changes — its cells, its attempts, its
//! checkpoints, its lease.

mod common;

use advsweep_core::ShownState;
use advsweep_core::refusal::{self, Refusal};
use advsweep_proto::v1 as pb;
use advsweep_proto::v1::worker_service_client::WorkerServiceClient;
use advsweep_proto::v1::worker_service_server::WorkerService;
use common::{Fixture, StateStore, typed};
use sha2::Digest;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// An id of the right shape that no one registered.
const NOBODY: &str = "w-00000000deadbeef";

fn result(accuracy: f64) -> pb::CellResult {
    pb::CellResult {
        accuracy,
        examples: 10,
        ..Default::default()
    }
}

/// Asserts the refusal of a call quoting another worker's lease.
fn assert_not_holder<T: std::fmt::Debug>(what: &str, outcome: Result<T, Status>) {
    let status = outcome.expect_err(what);
    assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("{what}: no reason in {status:?}"));
    assert_eq!(
        (info.domain.as_str(), info.reason.as_str()),
        (refusal::DOMAIN, Refusal::NotLeaseHolder.as_str()),
        "{what}"
    );
}

async fn register(f: &Fixture, name: &str) -> String {
    f.workers
        .register(Request::new(pb::RegisterRequest {
            name: name.into(),
            hostname: "elsewhere".into(),
            device: "cpu".into(),
            slots: 1,
            version: "test".into(),
        }))
        .await
        .expect("registers")
        .into_inner()
        .worker_id
}

/// Every lease-quoting call, as `forger` quoting the fixture's live lease.
async fn every_call_as(f: &Fixture, forger: &str) {
    let live = f.live();
    let quote = pb::LeaseRef {
        worker_id: forger.to_owned(),
        ..live.lease.clone()
    };
    let w = &f.workers;
    assert_not_holder(
        "CompleteCell",
        w.complete_cell(Request::new(pb::CompleteCellRequest {
            lease: Some(quote.clone()),
            cell_id: live.cells[0].clone(),
            result: Some(result(0.01)),
        }))
        .await,
    );
    assert_not_holder(
        "CompleteCells",
        w.complete_cells(Request::new(pb::CompleteCellsRequest {
            lease: Some(quote.clone()),
            cells: vec![pb::CellReport {
                cell_id: live.cells[0].clone(),
                result: Some(result(0.01)),
            }],
        }))
        .await,
    );
    assert_not_holder(
        "ReportCellChunk",
        w.report_cell_chunk(Request::new(pb::ReportCellChunkRequest {
            lease: Some(quote.clone()),
            cell_id: live.cells[0].clone(),
            chunk: Some(pb::CellChunk {
                images: 10,
                ..Default::default()
            }),
        }))
        .await,
    );
    assert_not_holder(
        "Heartbeat",
        w.heartbeat(Request::new(pb::HeartbeatRequest {
            lease: Some(quote.clone()),
        }))
        .await,
    );
    assert_not_holder(
        "ReportMetrics",
        w.report_metrics(Request::new(pb::ReportMetricsRequest {
            lease: Some(quote.clone()),
            epochs: vec![pb::EpochMetrics {
                epoch: 1,
                ..Default::default()
            }],
        }))
        .await,
    );
    assert_not_holder(
        "FailRun",
        w.fail_run(Request::new(pb::FailRunRequest {
            lease: Some(quote.clone()),
            reason: "forged".into(),
            retryable: false,
        }))
        .await,
    );
    assert_not_holder(
        "ReleaseRun",
        w.release_run(Request::new(pb::ReleaseRunRequest {
            lease: Some(quote.clone()),
            reason: "forged".into(),
        }))
        .await,
    );
    assert_not_holder(
        "CompleteRun",
        w.complete_run(Request::new(pb::CompleteRunRequest {
            lease: Some(quote.clone()),
        }))
        .await,
    );
    // Uploads stream, so they go over real gRPC.
    let addr = common::serve_workers(f).await;
    let mut client = WorkerServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    let bytes = b"forged weights".to_vec();
    let sha: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_not_holder(
        "UploadCheckpoint",
        client
            .upload_checkpoint(tokio_stream::iter(vec![pb::CheckpointChunk {
                lease: Some(quote.clone()),
                epoch: 9,
                sha256: sha,
                data: bytes,
            }]))
            .await,
    );
    // A download quotes no lease, only a worker id: an id nobody registered is told so
    // (`UNAUTHENTICATED`, as before), a registered worker that does not hold the run's lease
    // is refused like any other quote of a lease not its own.
    let (run_id, checkpoint_id) = f.checkpoint.clone();
    let download = w
        .download_checkpoint(Request::new(pb::DownloadCheckpointRequest {
            worker_id: forger.to_owned(),
            run_id,
            checkpoint_id,
        }))
        .await
        .map(|_| ());
    if forger == NOBODY {
        let status = download.expect_err("an unknown worker downloads nothing");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    } else {
        assert_not_holder("DownloadCheckpoint", download);
    }
}

/// The fixture's run is as its holder left it: cells unreported, no attempt ended, one
/// checkpoint, the lease live; then the holder finishes it, and the attempt records the holder.
async fn holder_is_unaffected(f: &Fixture) {
    let live = f.live();
    let detail = f.store.sweep_detail(&typed(&f.sweep_id)).expect("detail");
    let run = detail
        .runs
        .iter()
        .find(|r| r.run_id == live.lease.run_id)
        .expect("the leased run");
    assert!(run.attempts.is_empty(), "{:?}", run.attempts);
    assert!(run.epochs.is_empty(), "{:?}", run.epochs);
    for cell in detail
        .cells
        .iter()
        .filter(|c| live.cells.contains(&c.cell_id.to_string()))
    {
        assert_eq!(cell.state, ShownState::Running, "{}", cell.cell_id);
        assert!(cell.result.is_none());
    }
    let checkpoints = std::fs::read_dir(f.store.artifacts_dir(&typed(&live.lease.run_id)))
        .expect("artifacts")
        .count();
    assert_eq!(checkpoints, 1, "no forged checkpoint stored");

    let w = &f.workers;
    let keep_going = w
        .heartbeat(Request::new(pb::HeartbeatRequest {
            lease: Some(live.lease.clone()),
        }))
        .await
        .expect("the holder's heartbeat")
        .into_inner()
        .keep_going;
    assert!(keep_going);
    // The holder can still download its resume point.
    let (run_id, checkpoint_id) = f.checkpoint.clone();
    w.download_checkpoint(Request::new(pb::DownloadCheckpointRequest {
        worker_id: live.lease.worker_id.clone(),
        run_id,
        checkpoint_id,
    }))
    .await
    .expect("the holder downloads");
    for cell in &live.cells {
        w.complete_cell(Request::new(pb::CompleteCellRequest {
            lease: Some(live.lease.clone()),
            cell_id: cell.clone(),
            result: Some(result(0.5)),
        }))
        .await
        .expect("the holder reports");
    }
    w.complete_run(Request::new(pb::CompleteRunRequest {
        lease: Some(live.lease.clone()),
    }))
    .await
    .expect("the holder completes");
    let detail = f.store.sweep_detail(&typed(&f.sweep_id)).expect("detail");
    let run = detail
        .runs
        .iter()
        .find(|r| r.run_id == live.lease.run_id)
        .expect("the run");
    let recorded: Vec<Option<&str>> = run
        .attempts
        .iter()
        .map(|a| a.worker_id.as_deref())
        .collect();
    assert_eq!(recorded, [Some(f.worker_id.as_str())]);
    for cell in detail
        .cells
        .iter()
        .filter(|c| live.cells.contains(&c.cell_id.to_string()))
    {
        assert_eq!(cell.result.as_ref().map(|r| r.accuracy), Some(0.5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_worker_quoting_a_live_lease_is_refused_and_changes_nothing() {
    let f = Fixture::new().await;
    let b = register(&f, "b").await;
    every_call_as(&f, &b).await;
    holder_is_unaffected(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_id_quoting_a_live_lease_is_refused_and_changes_nothing() {
    let f = Fixture::new().await;
    every_call_as(&f, NOBODY).await;
    holder_is_unaffected(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_quote_is_still_a_lost_lease_and_an_unknown_worker_still_registers_again() {
    let f = Fixture::new().await;
    let b = register(&f, "b").await;
    let stale = pb::LeaseRef {
        worker_id: b,
        attempt: f.live().lease.attempt + 7,
        ..f.live().lease
    };
    let status = f
        .workers
        .heartbeat(Request::new(pb::HeartbeatRequest {
            lease: Some(stale.clone()),
        }))
        .await
        .expect("a heartbeat for a lease not held is answered");
    assert!(!status.into_inner().keep_going);
    let lost = f
        .workers
        .complete_run(Request::new(pb::CompleteRunRequest { lease: Some(stale) }))
        .await
        .expect_err("stale");
    assert_eq!(lost.code(), Code::FailedPrecondition, "{lost:?}");
    // A worker the coordinator forgot, heartbeating a lease of its own that no longer exists,
    // is told to register again (not refused as a forger).
    let forgotten = pb::LeaseRef {
        worker_id: NOBODY.into(),
        attempt: f.live().lease.attempt + 7,
        ..f.live().lease
    };
    let unknown = f
        .workers
        .heartbeat(Request::new(pb::HeartbeatRequest {
            lease: Some(forgotten),
        }))
        .await
        .expect_err("unknown worker");
    assert_eq!(unknown.code(), Code::Unauthenticated, "{unknown:?}");
}
