//! Corrupted bytes on the wire: real leased runs (from the sweep files in `sweeps/`) and epoch
//! reports are encoded, their bytes mutated (flipped, dropped, inserted, truncated), decoded by
//! prost, and whatever prost accepts goes through `advsweep_core::wire` decoding — which must
//! return a run or a named error, never panic, and never accept a run that breaks its bounds.
//!
//! Case count: 4,000 mutated messages.

mod common;

use std::path::PathBuf;

use advsweep_core::wire;
use advsweep_proto::v1 as pb;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;

/// Every run of every sweep file, as the coordinator would send it.
fn wire_runs() -> Vec<Vec<u8>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sweeps");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&root).expect("sweeps/").flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let plan = common::shipped_plan(&path);
        for run in plan.runs.iter().take(3) {
            let cells: Vec<_> = plan.cells_of(&run.id).cloned().collect();
            out.push(wire::run_to_wire(run, &plan.sweep_id, &cells).encode_to_vec());
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Drop(usize),
    Insert(usize, u8),
    Truncate(usize),
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let at = |i: usize, len: usize| i % len.max(1);
    match *edit {
        Edit::Flip(i, b) if !bytes.is_empty() => {
            let i = at(i, bytes.len());
            bytes[i] ^= b;
        }
        Edit::Drop(i) if !bytes.is_empty() => {
            bytes.remove(at(i, bytes.len()));
        }
        Edit::Insert(i, b) => bytes.insert(at(i, bytes.len() + 1), b),
        Edit::Truncate(i) => bytes.truncate(at(i, bytes.len() + 1)),
        _ => {}
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Edit::Flip(i, b)),
        1 => any::<usize>().prop_map(Edit::Drop),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ]
}

#[test]
fn mutated_runs_and_reports_4000_cases() {
    let runs = wire_runs();
    assert!(runs.len() >= 10);
    let report = pb::ReportMetricsRequest {
        lease: Some(pb::LeaseRef {
            worker_id: "w-0123456789abcdef".into(),
            run_id: "r-0123456789abcdef".into(),
            lease_id: "l-0123456789abcdef".into(),
            attempt: 1,
        }),
        epochs: (1..=3)
            .map(|e| pb::EpochMetrics {
                epoch: e,
                train_loss: 1.0 / f64::from(e),
                train_accuracy: 0.5,
                test_accuracy: 0.5,
                seconds: 1.0,
                images_per_second: 100.0,
            })
            .collect(),
    }
    .encode_to_vec();
    let mut runner = TestRunner::new(Config {
        cases: 4000,
        failure_persistence: None,
        ..Config::default()
    });
    // (mutated runs prost decoded, runs wire decoding accepted)
    let counts = std::cell::Cell::new((0u32, 0u32));
    runner
        .run(
            &(
                any::<prop::sample::Index>(),
                proptest::collection::vec(edit(), 1..4),
            ),
            |(which, edits)| {
                let index = which.index(runs.len() + 1);
                let mut bytes = runs.get(index).cloned().unwrap_or_else(|| report.clone());
                for e in &edits {
                    apply(&mut bytes, e);
                }
                if index < runs.len() {
                    if let Ok(run) = pb::RunSpec::decode(bytes.as_slice()) {
                        let (d, a) = counts.get();
                        let accepted = match wire::run_from_wire(&run) {
                            Ok((spec, cells)) => {
                                prop_assert!(
                                    wire::check_id(spec.id.as_str(), "run.run_id").is_ok()
                                );
                                prop_assert!(spec.training.epochs <= wire::MAX_EPOCHS);
                                prop_assert!(cells.len() <= wire::MAX_CELLS_PER_RUN);
                                1
                            }
                            Err(e) => {
                                prop_assert!(!e.to_string().is_empty());
                                0
                            }
                        };
                        counts.set((d + 1, a + accepted));
                    }
                } else if let Ok(r) = pb::ReportMetricsRequest::decode(bytes.as_slice()) {
                    for m in &r.epochs {
                        let _ = wire::epoch_metrics_from_wire(m);
                    }
                }
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let (decoded_runs, accepted_runs) = counts.get();
    eprintln!("{decoded_runs} mutated runs decoded by prost, {accepted_runs} accepted");
    assert!(decoded_runs > 100 && accepted_runs > 10);
}

/// Request bodies sent as raw bytes: tonic's codec never sees a typed message.
mod raw {
    use prost::bytes::{Buf, BufMut};
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Debug, Clone, Copy, Default)]
    pub struct Raw;
    pub struct Bytes;

    impl Encoder for Bytes {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for Bytes {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            let mut out = vec![0; src.remaining()];
            src.copy_to_slice(&mut out);
            Ok(Some(out))
        }
    }

    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Bytes;
        type Decoder = Bytes;
        fn encoder(&mut self) -> Bytes {
            Bytes
        }
        fn decoder(&mut self) -> Bytes {
            Bytes
        }
    }
}

/// A body that is not the method's protobuf is the caller's fault: `INVALID_ARGUMENT`, not the
/// `INTERNAL` tonic answers by default (issue 18), through the real server (`grpc::serve`).
#[tokio::test]
async fn malformed_protobuf_bodies_are_invalid_argument() {
    use std::sync::Arc;

    use advsweep_coordinator::grpc::{Coordinator, serve};
    use advsweep_coordinator::scheduler::{LeaseSettings, Scheduler};
    use advsweep_coordinator::store::SqliteStore;

    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("store");
    let coordinator = Coordinator::new(Scheduler::new(Arc::new(store), LeaseSettings::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(serve(coordinator, listener, std::future::pending()));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connects");
    let call = |method: &'static str, body: Vec<u8>| {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        async move {
            grpc.ready().await.expect("ready");
            grpc.unary(
                tonic::Request::new(body),
                http::uri::PathAndQuery::from_static(method),
                raw::Raw,
            )
            .await
        }
    };
    let cases: [(&str, Vec<u8>); 5] = [
        // Field 1 (name) claims 127 bytes and has 1.
        (
            "/advsweep.v1.WorkerService/Register",
            vec![0x0a, 0x7f, b'x'],
        ),
        // A varint that never ends.
        (
            "/advsweep.v1.WorkerService/Heartbeat",
            vec![0x08, 0xff, 0xff, 0xff],
        ),
        // Wire type 7 does not exist.
        ("/advsweep.v1.WorkerService/Lease", vec![0x0f, 0x00]),
        ("/advsweep.v1.SweepService/GetSweep", vec![0xff; 16]),
        (
            "/advsweep.v1.SweepService/SubmitSweep",
            vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ),
    ];
    for (method, body) in cases {
        let e = call(method, body).await.expect_err("malformed");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{method}: {e:?}");
        assert!(e.message().contains("decode"), "{method}: {}", e.message());
    }
    // A well-formed body still reaches the handler (an empty GetSweep names its field).
    let e = call("/advsweep.v1.SweepService/GetSweep", Vec::new())
        .await
        .expect_err("no sweep id");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("sweep_id"), "{}", e.message());
}
