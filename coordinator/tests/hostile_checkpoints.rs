//! Hostile checkpoint uploads over a real gRPC connection: a run id is a directory under
//! `<state-dir>/artifacts/`, so an upload must never create or write anything outside it, nor
//! anything at all for a caller without the run's live lease; chunks, totals, epochs and hashes
//! are bounded, and a refused upload leaves no temporary file behind.
//!
//! Cases: the named attacks below, then 300 random uploads (each a real streaming RPC).

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use advsweep_proto::v1 as pb;
use advsweep_proto::v1::worker_service_client::WorkerServiceClient;
use common::{Fixture, StateStore, is_callers_fault, typed};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sha2::Digest;
use tonic::transport::Channel;

fn sha_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn serve(f: &Fixture) -> SocketAddr {
    common::serve_workers(f).await
}

async fn client(addr: SocketAddr) -> WorkerServiceClient<Channel> {
    WorkerServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects")
        .max_encoding_message_size(16 << 20)
}

async fn upload(
    c: &mut WorkerServiceClient<Channel>,
    chunks: Vec<pb::CheckpointChunk>,
) -> Result<pb::CheckpointAck, tonic::Status> {
    c.upload_checkpoint(tokio_stream::iter(chunks))
        .await
        .map(|r| r.into_inner())
}

fn first(lease: pb::LeaseRef, epoch: u32, sha256: String, data: Vec<u8>) -> pb::CheckpointChunk {
    pb::CheckpointChunk {
        lease: Some(lease),
        epoch,
        sha256,
        data,
    }
}

fn data(bytes: Vec<u8>) -> pb::CheckpointChunk {
    pb::CheckpointChunk {
        data: bytes,
        ..Default::default()
    }
}

/// Every path under `root`, relative to it.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable").flatten() {
            let path = entry.path();
            out.insert(path.strip_prefix(root).expect("under root").to_path_buf());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

/// Only the database, the owner lock and finished checkpoint files of real runs: no temporary
/// uploads, nothing that a stranger created.
fn assert_clean(state: &Path, allowed_runs: &[String]) {
    for path in tree(state) {
        let text = path.to_string_lossy().into_owned();
        let ok = text.starts_with("state.sqlite")
            || text == "lock" // the state directory's owner lock
            || text == "artifacts"
            || allowed_runs.iter().any(|run| {
                text == format!("artifacts/{run}")
                    || (text.starts_with(&format!("artifacts/{run}/epoch-"))
                        && text.ends_with(".ckpt"))
            });
        assert!(ok, "unexpected {text} in the state directory");
    }
}

#[tokio::test]
async fn uploads_cannot_escape_the_state_directory_or_write_without_a_lease() {
    let f = Fixture::new().await;
    let addr = serve(&f).await;
    let mut c = client(addr).await;
    let live = f.live().lease;
    let bytes = b"weights".to_vec();
    let sha = sha_hex(&bytes);
    let outside = common::temp_dir();
    let escape_abs = outside.path().join("abs-escape");
    let refused = |lease: pb::LeaseRef| first(lease, 1, sha.clone(), bytes.clone());
    let with_run = |run_id: &str| pb::LeaseRef {
        run_id: run_id.to_owned(),
        ..live.clone()
    };

    for run_id in [
        "../../escape",
        "../../../../../../../../tmp/advsweep-escape",
        escape_abs.to_str().expect("utf-8"),
        "r-0123456789abcdef/../../escape",
        "..",
        "r-0123456789abcdef\0",
    ] {
        let e = upload(&mut c, vec![refused(with_run(run_id))])
            .await
            .expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{run_id}: {e}");
        assert!(e.message().contains("lease.run_id"), "{}", e.message());
    }
    assert!(!escape_abs.exists());
    assert!(!f.dir.path().join("escape").exists());
    assert!(
        !f.dir
            .path()
            .parent()
            .expect("parent")
            .join("escape")
            .exists()
    );
    assert!(!Path::new("/tmp/advsweep-escape").exists());

    // A well-formed id without the lease: refused before a directory is made.
    let stranger = "r-0000000000000000";
    let e = upload(&mut c, vec![refused(with_run(stranger))])
        .await
        .expect_err("no lease");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(!f.store.artifacts_dir(&typed(stranger)).exists());
    let stale = pb::LeaseRef {
        attempt: live.attempt + 1,
        ..live.clone()
    };
    let e = upload(&mut c, vec![refused(stale)])
        .await
        .expect_err("stale");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");

    // Header checks, with the live lease.
    let cases: Vec<(&str, Vec<pb::CheckpointChunk>)> = vec![
        (
            "sha256",
            vec![first(live.clone(), 1, "xyz".into(), bytes.clone())],
        ),
        (
            "sha256",
            vec![first(live.clone(), 1, "é".repeat(32), bytes.clone())],
        ),
        (
            "epoch",
            vec![first(live.clone(), 0, sha.clone(), bytes.clone())],
        ),
        (
            "epoch",
            vec![first(live.clone(), u32::MAX, sha.clone(), bytes.clone())],
        ),
        (
            "lease",
            vec![pb::CheckpointChunk {
                lease: None,
                epoch: 1,
                sha256: sha.clone(),
                data: bytes.clone(),
            }],
        ),
        (
            "first chunk only",
            vec![
                first(live.clone(), 1, sha.clone(), bytes.clone()),
                first(live.clone(), 1, sha.clone(), bytes.clone()),
            ],
        ),
        (
            "more than 4194304",
            vec![
                first(live.clone(), 1, sha.clone(), Vec::new()),
                data(vec![0; (4 << 20) + 1]),
            ],
        ),
        (
            "empty",
            vec![first(live.clone(), 1, sha_hex(b""), Vec::new())],
        ),
    ];
    for (fragment, chunks) in cases {
        let e = upload(&mut c, chunks).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{fragment}: {e}");
        assert!(
            e.message().contains(fragment),
            "{fragment}: {}",
            e.message()
        );
    }
    // Bytes that do not match the declared hash: data loss, and no file kept.
    let e = upload(
        &mut c,
        vec![first(live.clone(), 1, sha_hex(b"other"), bytes.clone())],
    )
    .await
    .expect_err("corrupt");
    assert_eq!(e.code(), tonic::Code::DataLoss, "{e}");

    // And the real thing still works.
    let ack = upload(
        &mut c,
        vec![
            first(
                live.clone(),
                2,
                sha_hex(b"weights, part 2"),
                b"weights".to_vec(),
            ),
            data(b", part 2".to_vec()),
        ],
    )
    .await
    .expect("stored");
    assert_eq!(ack.bytes, 15);
    assert_clean(f.dir.path(), &[live.run_id.clone(), f.checkpoint.0.clone()]);
}

#[derive(Debug, Clone)]
enum RunChoice {
    Live,
    Other(String),
}

#[test]
fn random_uploads_300_cases_leave_nothing_behind() {
    let rt = common::runtime();
    let f = rt.block_on(Fixture::new());
    let addr = rt.block_on(serve(&f));
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    });
    let run = prop_oneof![
        2 => Just(RunChoice::Live),
        1 => prop_oneof![
            "[ -~]{0,40}",
            "r-[0-9a-f]{16}",
            "\\.\\./[a-z]{1,8}",
            "/tmp/[a-z]{1,8}",
        ]
        .prop_map(RunChoice::Other),
    ];
    let strategy = (
        run,
        prop_oneof![3 => Just(None), 1 => any::<u32>().prop_map(Some)],
        prop_oneof![3 => Just(None), 1 => "[0-9a-fA-F]{0,70}".prop_map(Some)],
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..4),
        any::<bool>(),
    );
    runner
        .run(&strategy, |(run, epoch, sha, parts, header_later)| {
            rt.block_on(async {
                f.renew().await;
                let live = f.live().lease;
                let lease = pb::LeaseRef {
                    run_id: match &run {
                        RunChoice::Live => live.run_id.clone(),
                        RunChoice::Other(s) => s.clone(),
                    },
                    ..live.clone()
                };
                let all: Vec<u8> = parts.concat();
                let mut chunks: Vec<pb::CheckpointChunk> = parts.into_iter().map(data).collect();
                chunks[0].lease = Some(lease);
                chunks[0].epoch = epoch.unwrap_or(1);
                chunks[0].sha256 = sha.unwrap_or_else(|| sha_hex(&all));
                if header_later && chunks.len() > 1 {
                    chunks[1].epoch = 3;
                }
                let mut c = client(addr).await;
                if let Err(e) = upload(&mut c, chunks).await {
                    prop_assert!(
                        is_callers_fault(e.code()) || e.code() == tonic::Code::DataLoss,
                        "{:?}: {}",
                        e.code(),
                        e.message()
                    );
                }
                Ok(())
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // Whatever was refused left nothing; whatever was stored belongs to a leased run.
    let runs: Vec<String> = f
        .store
        .sweep_detail(&typed(&f.sweep_id))
        .expect("detail")
        .runs
        .iter()
        .map(|r| r.run_id.to_string())
        .chain(std::iter::once(f.live().lease.run_id))
        .collect();
    let mut all_runs = runs;
    for s in f.store.list_sweeps().expect("sweeps") {
        all_runs.extend(
            f.store
                .sweep_detail(&s.sweep_id)
                .expect("detail")
                .runs
                .into_iter()
                .map(|r| r.run_id.into_string()),
        );
    }
    assert_clean(f.dir.path(), &all_runs);
}

/// An upload whose client goes quiet after the first chunk and whose deadline then passes: the
/// handler is dropped mid-stream, and its temporary file must go with it (it used to stay, even
/// across restarts).
#[tokio::test]
async fn an_upload_cut_off_mid_stream_leaves_no_temporary_file() {
    let f = Fixture::new().await;
    let addr = serve(&f).await;
    let mut c = client(addr).await;
    let live = f.live().lease;
    let run_dir = f.store.artifacts_dir(&typed(&live.run_id));
    let bytes = vec![7u8; 1 << 16];
    let head = first(live.clone(), 1, sha_hex(&bytes), bytes);
    // The first chunk, then nothing: the stream stays open until the deadline.
    let stalled =
        tokio_stream::StreamExt::chain(tokio_stream::iter(vec![head]), tokio_stream::pending());
    let mut request = tonic::Request::new(stalled);
    request.set_timeout(std::time::Duration::from_millis(300));
    let e = c
        .upload_checkpoint(request)
        .await
        .expect_err("the deadline passes");
    assert!(
        matches!(
            e.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{e}"
    );
    let temporary = || {
        std::fs::read_dir(&run_dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(".upload-"))
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while temporary() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a temporary upload file is still in {}",
            run_dir.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_clean(f.dir.path(), &[live.run_id]);
}

/// A coordinator killed mid-upload leaves the temporary file; the next start removes it and
/// keeps the finished checkpoints.
#[tokio::test]
async fn a_restart_removes_uploads_a_killed_coordinator_left_behind() {
    let state = common::temp_dir();
    let run = state.path().join("artifacts").join("r-0123456789abcdef");
    std::fs::create_dir_all(&run).expect("run dir");
    std::fs::write(run.join(".upload-left-behind"), b"partial").expect("temp file");
    let kept = run.join("epoch-00001-0123456789abcdef.ckpt");
    std::fs::write(&kept, b"whole").expect("checkpoint");
    let started = advsweep_coordinator::serve::start(
        state.path(),
        "127.0.0.1:0",
        advsweep_coordinator::scheduler::LeaseSettings::default(),
        advsweep_coordinator::grpc::ServeOptions::default(),
    )
    .await
    .expect("starts");
    drop(started);
    assert!(!run.join(".upload-left-behind").exists());
    assert!(kept.exists(), "finished checkpoints stay");
}

/// Downloads a client opens and never reads pin only a few chunks each, not the file (issue
/// 18: 12 unread downloads of a 24 MiB checkpoint took RSS from 17 to 255 MiB), and the one past
/// `max_checkpoint_downloads` is refused with a status workers retry.
#[tokio::test]
async fn unread_downloads_hold_a_few_chunks_and_the_one_past_the_cap_is_refused() {
    use advsweep_coordinator::grpc::{ChangeNotifier, WorkerApi};
    use advsweep_coordinator::metrics::Metrics;
    use advsweep_proto::v1::worker_service_server::WorkerServiceServer;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    const MIB: usize = 1 << 20;
    const CAP: usize = 4;
    let f = Fixture::new().await;
    let metrics = Arc::new(Metrics::default());
    let workers = WorkerApi::new(
        Arc::clone(&f.scheduler),
        ChangeNotifier::default(),
        Arc::clone(&metrics),
    )
    .with_download_limit(CAP);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WorkerServiceServer::new(workers).max_decoding_message_size(8 << 20))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    // A 24 MiB checkpoint, uploaded the way a worker does.
    let live = f.live().lease;
    let bytes: Vec<u8> = (0..24 * MIB).map(|i| (i % 253) as u8).collect();
    let sha = sha_hex(&bytes);
    let mut chunks: Vec<_> = bytes.chunks(MIB).map(|c| data(c.to_vec())).collect();
    chunks[0] = first(live.clone(), 2, sha.clone(), bytes[..MIB].to_vec());
    let checkpoint_id = upload(&mut client(addr).await, chunks)
        .await
        .expect("stored")
        .checkpoint_id;

    // Each download on its own connection, with a 1 MiB HTTP/2 window: what the client lets
    // the server send ahead is known.
    let connect = || async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .initial_stream_window_size(MIB as u32)
            .initial_connection_window_size(MIB as u32)
            .connect()
            .await
            .expect("connects");
        WorkerServiceClient::new(channel).max_decoding_message_size(8 << 20)
    };
    let request = || pb::DownloadCheckpointRequest {
        worker_id: live.worker_id.clone(),
        run_id: live.run_id.clone(),
        checkpoint_id: checkpoint_id.clone(),
    };
    let mut unread = Vec::new();
    for _ in 0..CAP {
        let stream = connect()
            .await
            .download_checkpoint(request())
            .await
            .expect("a download within the cap")
            .into_inner();
        unread.push(stream);
    }
    let refused = connect()
        .await
        .download_checkpoint(request())
        .await
        .expect_err("the download past the cap");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        advsweep_proto::is_transient(&refused),
        "a worker retries it"
    );
    assert_eq!(
        metrics.checkpoint_downloads_refused.load(Ordering::Relaxed),
        1
    );

    // Wait until the servers' readers stop (each blocked on a full channel), then bound what
    // they read: the client's window, the read-ahead channel and what tonic and h2 hold.
    let streamed = || metrics.checkpoint_bytes_streamed.load(Ordering::Relaxed) as usize;
    let (mut last, mut since) = (usize::MAX, Instant::now());
    while since.elapsed() < Duration::from_millis(300) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if streamed() != last {
            (last, since) = (streamed(), Instant::now());
        }
    }
    let per_download = 8 * MIB;
    assert!(
        streamed() <= CAP * per_download,
        "{CAP} unread downloads of a 24 MiB checkpoint read {} MiB from disk",
        streamed() / MIB
    );

    // A download that ends frees its slot; read to the end, the file arrives intact.
    drop(unread.pop());
    let mut got = Vec::new();
    let mut retries = 0;
    let mut stream = loop {
        match connect().await.download_checkpoint(request()).await {
            Ok(s) => break s.into_inner(),
            Err(e) if e.code() == tonic::Code::ResourceExhausted && retries < 100 => {
                retries += 1; // the dropped stream's slot is freed once the server sees it go
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("a freed slot: {e:?}"),
        }
    };
    while let Some(chunk) = stream.message().await.expect("a chunk") {
        got.extend_from_slice(&chunk.data);
    }
    assert!(got == bytes, "the checkpoint arrives intact");
}
