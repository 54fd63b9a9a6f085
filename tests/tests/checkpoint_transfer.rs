//! Checkpoints through the coordinator over real gRPC: chunked upload with a checksum, fenced by
//! the lease, offered on the next lease, downloaded intact by another worker; a corrupted file
//! is detected by checksum and the run falls back to the previous checkpoint.

use advsweep_coordinator::store::StateStore;
use advsweep_proto::v1 as pb;
use advsweep_proto::v1::worker_service_client::WorkerServiceClient;
use advsweep_tests::{TestCoordinator, submit, typed};
use tonic::transport::Channel;

const SWEEP: &str = r#"
version = 1
name = "ckpt"
[data]
source = "synthetic"
[grid]
models = ["basic"]
defenses = ["standard"]
attacks = ["none"]
epsilons = [0.0]
"#;

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn register(w: &mut WorkerServiceClient<Channel>, name: &str) -> String {
    w.register(pb::RegisterRequest {
        name: name.into(),
        hostname: "test".into(),
        device: "cpu".into(),
        slots: 1,
        version: "test".into(),
    })
    .await
    .expect("register")
    .into_inner()
    .worker_id
}

/// What the coordinator leases to `worker_id`, if anything.
async fn lease_for(w: &mut WorkerServiceClient<Channel>, worker_id: &str) -> Option<pb::Lease> {
    w.lease(pb::LeaseRequest {
        worker_id: worker_id.into(),
        ..Default::default()
    })
    .await
    .expect("lease")
    .into_inner()
    .lease
}

async fn upload(
    w: &mut WorkerServiceClient<Channel>,
    lease: &pb::LeaseRef,
    epoch: u32,
    bytes: &[u8],
    sha: &str,
) -> Result<pb::CheckpointAck, tonic::Status> {
    let chunks: Vec<pb::CheckpointChunk> = bytes
        .chunks(1000)
        .enumerate()
        .map(|(i, d)| pb::CheckpointChunk {
            lease: (i == 0).then(|| lease.clone()),
            epoch: if i == 0 { epoch } else { 0 },
            sha256: if i == 0 {
                sha.to_owned()
            } else {
                String::new()
            },
            data: d.to_vec(),
        })
        .collect();
    w.upload_checkpoint(tokio_stream::iter(chunks))
        .await
        .map(|r| r.into_inner())
}

async fn download(
    w: &mut WorkerServiceClient<Channel>,
    worker_id: &str,
    run_id: &str,
    checkpoint_id: &str,
) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = w
        .download_checkpoint(pb::DownloadCheckpointRequest {
            worker_id: worker_id.into(),
            run_id: run_id.into(),
            checkpoint_id: checkpoint_id.into(),
        })
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        bytes.extend_from_slice(&chunk.data);
    }
    Ok(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_travel_through_the_coordinator_and_survive_corruption() {
    let coordinator = TestCoordinator::start().await;
    submit(&coordinator.url, SWEEP).await;
    let mut w = WorkerServiceClient::connect(coordinator.url.clone())
        .await
        .expect("connect");
    let a = register(&mut w, "a").await;
    let lease = lease_for(&mut w, &a).await.expect("a run");
    let run_id = lease.run.as_ref().expect("run").run_id.clone();
    let lease_ref = pb::LeaseRef {
        worker_id: a.clone(),
        run_id: run_id.clone(),
        lease_id: lease.lease_id.clone(),
        attempt: lease.attempt,
    };

    let epoch1: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let epoch2: Vec<u8> = (0..7000u32).map(|i| (i % 241) as u8).collect();
    let ack1 = upload(&mut w, &lease_ref, 1, &epoch1, &sha256_hex(&epoch1))
        .await
        .expect("upload 1");
    assert_eq!(ack1.bytes, 5000);
    // A checksum that does not match the bytes is refused.
    let bad = upload(&mut w, &lease_ref, 2, &epoch2, &sha256_hex(&epoch1))
        .await
        .expect_err("bad sum");
    assert_eq!(bad.code(), tonic::Code::DataLoss, "{bad}");
    let ack2 = upload(&mut w, &lease_ref, 2, &epoch2, &sha256_hex(&epoch2))
        .await
        .expect("upload 2");

    // The worker is preempted; the next lease (another worker) resumes from epoch 2.
    w.release_run(pb::ReleaseRunRequest {
        lease: Some(lease_ref.clone()),
        reason: "SIGTERM".into(),
    })
    .await
    .expect("release");
    // The released attempt is fenced off.
    let late = upload(&mut w, &lease_ref, 3, &epoch2, &sha256_hex(&epoch2))
        .await
        .expect_err("fenced");
    assert_eq!(late.code(), tonic::Code::FailedPrecondition, "{late}");

    let b = register(&mut w, "b").await;
    let lease2 = lease_for(&mut w, &b).await.expect("re-leased");
    let resume = lease2.resume_from.expect("resume point");
    assert_eq!(
        (resume.epoch, resume.checkpoint_id.as_str()),
        (2, ack2.checkpoint_id.as_str())
    );
    assert_eq!(
        download(&mut w, &b, &run_id, &resume.checkpoint_id)
            .await
            .expect("download"),
        epoch2
    );

    // Flaky storage: the epoch-2 file rots on disk. The download says so, the checkpoint is
    // dropped, and the run's resume point falls back to epoch 1.
    let dir = coordinator.state_dir.path().join("artifacts").join(&run_id);
    for entry in std::fs::read_dir(&dir).expect("artifacts") {
        let path = entry.expect("entry").path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("epoch-00002"))
        {
            std::fs::write(&path, b"truncated").expect("corrupt");
        }
    }
    let err = download(&mut w, &b, &run_id, &resume.checkpoint_id)
        .await
        .expect_err("corrupt");
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err}");
    let fallback = coordinator
        .store
        .latest_checkpoint(&typed(&run_id))
        .expect("store")
        .expect("epoch 1 left");
    assert_eq!(
        (fallback.epoch, fallback.checkpoint_id),
        (1, ack1.checkpoint_id.clone())
    );
    assert_eq!(
        download(&mut w, &b, &run_id, &ack1.checkpoint_id)
            .await
            .expect("download"),
        epoch1
    );

    // Strangers get nothing.
    let stranger = download(&mut w, "w-stranger", &run_id, &ack1.checkpoint_id)
        .await
        .expect_err("unknown worker");
    assert_eq!(stranger.code(), tonic::Code::Unauthenticated);
}
