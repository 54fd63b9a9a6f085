//! Model files over real gRPC (issue 20): clients upload the files their sweeps name, workers
//! download them by hash. A file is stored only whole and verified, once per hash, never
//! beyond the coordinator's cap; a refused upload leaves nothing behind; a sweep naming a file
//! the coordinator does not have is refused; a download names what is missing or damaged.

mod common;

use std::net::SocketAddr;

use advsweep_coordinator::sweep::Limits;
use advsweep_proto::v1 as pb;
use advsweep_proto::v1::sweep_service_client::SweepServiceClient;
use advsweep_proto::v1::worker_service_client::WorkerServiceClient;
use common::Fixture;
use sha2::Digest;
use tonic::Code;
use tonic::transport::Channel;

fn sha_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Both services of the fixture (uploads capped at `max_bytes`) on 127.0.0.1.
async fn serve(f: &Fixture, max_bytes: u64) -> SocketAddr {
    use advsweep_proto::v1::sweep_service_server::SweepServiceServer;
    use advsweep_proto::v1::worker_service_server::WorkerServiceServer;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    let sweeps = f.sweeps.clone().with_limits(Limits {
        max_model_file_bytes: max_bytes,
        ..Limits::default()
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WorkerServiceServer::new(f.workers.clone()))
            .add_service(SweepServiceServer::new(sweeps))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

async fn clients(addr: SocketAddr) -> (SweepServiceClient<Channel>, WorkerServiceClient<Channel>) {
    let url = format!("http://{addr}");
    (
        SweepServiceClient::connect(url.clone())
            .await
            .expect("connects"),
        WorkerServiceClient::connect(url).await.expect("connects"),
    )
}

/// `bytes` in chunks of `chunk`, the first declaring `sha256` and `declared`.
fn chunks(bytes: &[u8], sha256: &str, declared: u64, chunk: usize) -> Vec<pb::ModelFileChunk> {
    let mut out: Vec<pb::ModelFileChunk> = bytes
        .chunks(chunk)
        .map(|data| pb::ModelFileChunk {
            data: data.to_vec(),
            ..Default::default()
        })
        .collect();
    if out.is_empty() {
        out.push(pb::ModelFileChunk::default());
    }
    out[0].sha256 = sha256.to_owned();
    out[0].bytes = declared;
    out
}

async fn upload(
    c: &mut SweepServiceClient<Channel>,
    chunks: Vec<pb::ModelFileChunk>,
) -> Result<pb::ModelFileAck, tonic::Status> {
    c.upload_model_file(tokio_stream::iter(chunks))
        .await
        .map(|r| r.into_inner())
}

async fn download(
    w: &mut WorkerServiceClient<Channel>,
    worker_id: &str,
    sha256: &str,
) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = w
        .download_model_file(pb::DownloadModelFileRequest {
            worker_id: worker_id.to_owned(),
            sha256: sha256.to_owned(),
        })
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(c) = stream.message().await? {
        bytes.extend_from_slice(&c.data);
    }
    Ok(bytes)
}

/// Every file in the fixture's model store.
fn stored(f: &Fixture) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(f.dir.path().join("models"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn uploads_are_stored_once_whole_and_verified_within_the_cap() {
    let f = Fixture::new().await;
    let addr = serve(&f, 3 << 20).await;
    let (mut c, mut w) = clients(addr).await;
    let file: Vec<u8> = (0..(2 << 20) + 17).map(|i| (i % 253) as u8).collect();
    let sha = sha_hex(&file);
    let n = file.len() as u64;

    let ack = upload(&mut c, chunks(&file, &sha, n, 1 << 20))
        .await
        .expect("stored");
    assert_eq!(
        (ack.sha256.as_str(), ack.bytes, ack.already_stored),
        (sha.as_str(), n, false)
    );
    let again = upload(&mut c, chunks(&file, &sha, n, 1 << 20))
        .await
        .expect("known");
    assert!(again.already_stored);
    assert_eq!(stored(&f), vec![sha.clone()]);
    assert_eq!(
        download(&mut w, &f.worker_id, &sha).await.expect("served"),
        file
    );

    // Refused, and nothing left behind: bytes that do not match, more or fewer bytes than
    // declared, a size over the cap, a hash that is not one, header fields on a later chunk.
    let other: Vec<u8> = file.iter().map(|b| b ^ 1).collect();
    let other_sha = sha_hex(&other);
    let mut late_header = chunks(&other, &other_sha, n, 1 << 20);
    late_header[1].sha256 = other_sha.clone();
    let cases: Vec<(&str, Vec<pb::ModelFileChunk>, Code)> = vec![
        (
            "damaged",
            chunks(&other, &sha_hex(b"x"), n, 1 << 20),
            Code::DataLoss,
        ),
        (
            "longer",
            chunks(&other, &other_sha, n - 1, 1 << 20),
            Code::InvalidArgument,
        ),
        (
            "shorter",
            chunks(&other[..100], &other_sha, n, 1 << 20),
            Code::DataLoss,
        ),
        (
            "over the cap",
            chunks(&other, &other_sha, 4 << 20, 1 << 20),
            Code::InvalidArgument,
        ),
        (
            "empty",
            chunks(&[], &other_sha, 0, 1),
            Code::InvalidArgument,
        ),
        (
            "not a hash",
            chunks(&other, "../../etc/passwd", n, 1 << 20),
            Code::InvalidArgument,
        ),
        ("late header", late_header, Code::InvalidArgument),
    ];
    for (what, chunks, code) in cases {
        let e = upload(&mut c, chunks).await.expect_err(what);
        assert_eq!(e.code(), code, "{what}: {}", e.message());
        assert_eq!(stored(&f), vec![sha.clone()], "{what}: nothing else stored");
    }
    let e = upload(&mut c, vec![]).await.expect_err("no chunk");
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn downloads_name_a_missing_or_damaged_file_and_strangers_get_nothing() {
    let f = Fixture::new().await;
    let addr = serve(&f, 1 << 20).await;
    let (mut c, mut w) = clients(addr).await;
    let file = b"a small module".to_vec();
    let sha = sha_hex(&file);
    upload(&mut c, chunks(&file, &sha, file.len() as u64, 4))
        .await
        .expect("stored");

    let missing = download(&mut w, &f.worker_id, &sha_hex(b"never uploaded"))
        .await
        .expect_err("unknown hash");
    assert_eq!(missing.code(), Code::NotFound);
    assert!(
        missing.message().contains("no model file"),
        "{}",
        missing.message()
    );

    let stranger = download(&mut w, "w-stranger", &sha)
        .await
        .expect_err("not registered");
    assert_ne!(stranger.code(), Code::Ok);
    assert!(stranger.code() != Code::NotFound && stranger.code() != Code::DataLoss);

    // A stored copy damaged on disk is reported, not handed out.
    std::fs::write(f.dir.path().join("models").join(&sha), b"a small modulE").expect("damage");
    let damaged = download(&mut w, &f.worker_id, &sha)
        .await
        .expect_err("damaged");
    assert_eq!(damaged.code(), Code::DataLoss, "{}", damaged.message());
}

const OWN: &str = r#"
version = 1
name = "own"
[data]
source = "synthetic"
[training]
epochs = 0
[grid]
models = ["mine"]
defenses = ["standard"]
attacks = ["none"]
epsilons = [0.0]
[models.mine]
torchscript = "mine.pt"
"#;

#[tokio::test]
async fn a_sweep_naming_a_file_the_coordinator_lacks_is_refused() {
    let f = Fixture::new().await;
    let addr = serve(&f, 1 << 20).await;
    let (mut c, _) = clients(addr).await;
    let file = b"module bytes".to_vec();
    let sha = sha_hex(&file);
    let submit = |files: Vec<(&str, &str, u64)>| pb::SubmitSweepRequest {
        sweep_toml: OWN.into(),
        model_files: files
            .into_iter()
            .map(|(p, s, b)| {
                (
                    p.to_owned(),
                    pb::ModelFileRef {
                        sha256: s.to_owned(),
                        bytes: b,
                    },
                )
            })
            .collect(),
        ..Default::default()
    };
    let e = c
        .submit_sweep(submit(vec![]))
        .await
        .expect_err("no file at all");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("`mine.pt` was not sent"),
        "{}",
        e.message()
    );
    let e = c
        .submit_sweep(submit(vec![("mine.pt", &sha, file.len() as u64)]))
        .await
        .expect_err("not uploaded");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("mine.pt") && e.message().contains("not uploaded"),
        "{}",
        e.message()
    );
    let e = c
        .submit_sweep(submit(vec![("mine.pt", "../x", 3)]))
        .await
        .expect_err("bad hash");
    assert_eq!(e.code(), Code::InvalidArgument);

    upload(&mut c, chunks(&file, &sha, file.len() as u64, 5))
        .await
        .expect("stored");
    let r = c
        .submit_sweep(submit(vec![("mine.pt", &sha, file.len() as u64)]))
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(r.runs, 1);
    // The file's hash is the run's: a changed file is a new run.
    let other = b"module bytes, retrained".to_vec();
    let other_sha = sha_hex(&other);
    upload(&mut c, chunks(&other, &other_sha, other.len() as u64, 5))
        .await
        .expect("stored");
    let r2 = c
        .submit_sweep(submit(vec![("mine.pt", &other_sha, other.len() as u64)]))
        .await
        .expect("accepted")
        .into_inner();
    assert_ne!(r.sweep_id, r2.sweep_id);
    assert_eq!(r2.cells_already_done, 0);
}
