//! The refusals a worker acts on travel as a documented code plus a machine-readable reason
//! (`google.rpc.ErrorInfo` in the status details, domain `advsweep_core::refusal::DOMAIN`), over a
//! real gRPC connection: an unknown worker is told to register again, a stale lease that its
//! run is gone.

mod common;

use std::net::SocketAddr;

use advsweep_core::refusal::{self, Refusal};
use advsweep_proto::v1 as pb;
use advsweep_proto::v1::worker_service_client::WorkerServiceClient;
use common::Fixture;
use tonic::Code;
use tonic_types::StatusExt;

async fn serve(f: &Fixture) -> SocketAddr {
    common::serve_workers(f).await
}

/// The reason in `status`'s details, checked to be advsweep's.
fn reason(status: &tonic::Status) -> Option<Refusal> {
    let info = status.get_details_error_info()?;
    assert_eq!(info.domain, refusal::DOMAIN, "{status:?}");
    Refusal::parse(&info.reason)
}

#[tokio::test]
async fn an_unknown_worker_is_told_to_register_again() {
    let f = Fixture::new().await;
    let mut c = WorkerServiceClient::connect(format!("http://{}", serve(&f).await))
        .await
        .expect("connects");
    let e = c
        .lease(pb::LeaseRequest {
            worker_id: "w-0000000000000000".into(),
            ..Default::default()
        })
        .await
        .expect_err("an unknown worker gets no lease");
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    assert_eq!(reason(&e), Some(Refusal::WorkerUnknown), "{e:?}");
    assert!(e.message().contains("register first"), "{e}");
}

#[tokio::test]
async fn a_stale_lease_is_told_its_run_is_gone() {
    let f = Fixture::new().await;
    let mut c = WorkerServiceClient::connect(format!("http://{}", serve(&f).await))
        .await
        .expect("connects");
    let live = f.live().lease;
    let stale = pb::LeaseRef {
        attempt: live.attempt + 1,
        ..live
    };
    let e = c
        .report_metrics(pb::ReportMetricsRequest {
            lease: Some(stale),
            epochs: vec![],
        })
        .await
        .expect_err("a stale attempt is refused");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert_eq!(reason(&e), Some(Refusal::LeaseLost), "{e:?}");
}

#[tokio::test]
async fn a_bad_request_carries_no_refusal_reason() {
    let f = Fixture::new().await;
    let mut c = WorkerServiceClient::connect(format!("http://{}", serve(&f).await))
        .await
        .expect("connects");
    let e = c
        .report_metrics(pb::ReportMetricsRequest {
            lease: None,
            epochs: vec![],
        })
        .await
        .expect_err("no lease is a bad request");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert_eq!(reason(&e), None, "{e:?}");
}
