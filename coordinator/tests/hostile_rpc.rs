//! Hostile RPCs against the real handlers and a real store: random prost messages for every
//! WorkerService and SweepService request (arbitrary strings — empty, huge, unicode, path-like —,
//! arbitrary numbers — NaN, ±∞, negative, huge —, random repeated lengths), mixed with the real
//! ids of a live fixture so that calls also reach deep into the store. No call may panic, and
//! every refusal must be the caller's fault (`INVALID_ARGUMENT`, `NOT_FOUND`,
//! `FAILED_PRECONDITION`, `UNAUTHENTICATED`), never `INTERNAL`.
//!
//! Case counts (in each test's name): 2,000 per request type that stops at validation or reads,
//! 1,000 where most cases write (each write is a group commit); the suite runs in seconds.

mod common;

use std::collections::HashMap;

use advsweep_coordinator::grpc::validate;
use advsweep_coordinator::sweep::Limits;
use advsweep_proto::v1 as pb;
use advsweep_proto::v1::sweep_service_server::SweepService;
use advsweep_proto::v1::worker_service_server::WorkerService;
use common::{Fixture, StateStore, is_callers_fault, typed};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tonic::{Request, Status};

/// Strings a hostile peer might send.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ".{0,24}",
        2 => "\\PC{0,200}",
        1 => Just(String::new()),
        1 => prop_oneof![
            Just("../../../../tmp/escape".to_owned()),
            Just("/etc/passwd".to_owned()),
            Just("..".to_owned()),
            Just("r-0123456789abcdef/../..".to_owned()),
            Just("a\0b".to_owned()),
            Just("\u{1b}[31mred\u{1b}[0m".to_owned()),
            Just("é".repeat(3000)),
            Just("x".repeat(20_000)),
        ],
        1 => "[rcswlk]-[0-9a-f]{16}",
    ]
}

/// The fixture's real value (resolved when the case runs) or a hostile one.
#[derive(Debug, Clone)]
enum Pick {
    Real,
    Hostile(String),
}

impl Pick {
    fn or(&self, real: &str) -> String {
        match self {
            Pick::Real => real.to_owned(),
            Pick::Hostile(s) => s.clone(),
        }
    }
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![2 => Just(Pick::Real), 1 => text().prop_map(Pick::Hostile)]
}

/// Either the fixture's real value or a hostile one.
fn real_or(real: String) -> impl Strategy<Value = String> {
    prop_oneof![2 => Just(real), 1 => text()]
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => 0.0..=1.0f64,
        2 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-0.0),
        1 => Just(-1.0),
        1 => Just(f64::MAX),
    ]
}

fn count() -> impl Strategy<Value = u32> {
    prop_oneof![3 => 0u32..4, 1 => any::<u32>(), 1 => Just(u32::MAX)]
}

/// A lease reference: absent, or each part real (the fixture's live lease) or hostile.
#[derive(Debug, Clone)]
struct LeaseChoice {
    worker_id: Pick,
    run_id: Pick,
    lease_id: Pick,
    /// `None`: the live attempt.
    attempt: Option<u32>,
}

fn lease_choice() -> impl Strategy<Value = Option<LeaseChoice>> {
    proptest::option::weighted(
        0.9,
        (
            pick(),
            pick(),
            pick(),
            prop_oneof![3 => Just(None), 1 => count().prop_map(Some)],
        )
            .prop_map(|(worker_id, run_id, lease_id, attempt)| LeaseChoice {
                worker_id,
                run_id,
                lease_id,
                attempt,
            }),
    )
}

/// The lease a case sends, against the fixture's live lease `live`.
fn resolve(choice: &Option<LeaseChoice>, live: &pb::LeaseRef) -> Option<pb::LeaseRef> {
    choice.as_ref().map(|c| pb::LeaseRef {
        worker_id: c.worker_id.or(&live.worker_id),
        run_id: c.run_id.or(&live.run_id),
        lease_id: c.lease_id.or(&live.lease_id),
        attempt: c.attempt.unwrap_or(live.attempt),
    })
}

fn epoch() -> impl Strategy<Value = pb::EpochMetrics> {
    prop_oneof![1 => valid_epoch(), 1 => hostile_epoch()]
}

/// What a worker sends, diverged runs included (NaN or +∞ loss, unmeasured accuracy).
fn valid_epoch() -> impl Strategy<Value = pb::EpochMetrics> {
    (
        1u32..50,
        prop_oneof![3 => 0.0..10.0f64, 1 => Just(f64::NAN), 1 => Just(f64::INFINITY)],
        prop_oneof![3 => 0.0..=1.0f64, 1 => Just(f64::NAN)],
        prop_oneof![3 => 0.0..=1.0f64, 1 => Just(f64::NAN)],
    )
        .prop_map(
            |(epoch, train_loss, train_accuracy, test_accuracy)| pb::EpochMetrics {
                epoch,
                train_loss,
                train_accuracy,
                test_accuracy,
                seconds: 1.5,
                images_per_second: 1000.0,
            },
        )
}

fn hostile_epoch() -> impl Strategy<Value = pb::EpochMetrics> {
    (count(), number(), number(), number(), number(), number()).prop_map(
        |(epoch, train_loss, train_accuracy, test_accuracy, seconds, images_per_second)| {
            pb::EpochMetrics {
                epoch,
                train_loss,
                train_accuracy,
                test_accuracy,
                seconds,
                images_per_second,
            }
        },
    )
}

fn valid_cell_result() -> impl Strategy<Value = pb::CellResult> {
    (
        0.0..=1.0f64,
        0.0..=1.0f64,
        0.0..1.0f64,
        0.0..10.0f64,
        any::<u32>(),
    )
        .prop_map(
            |(accuracy, attack_success_rate, mean_linf, mean_l2, examples)| pb::CellResult {
                accuracy,
                attack_success_rate,
                mean_linf,
                mean_l2,
                images_per_second: 100.0,
                seconds: 1.0,
                examples,
                stages: Vec::new(),
                warnings: Vec::new(),
                clean_correct: examples / 2,
                flipped: examples / 4,
            },
        )
}

fn cell_result() -> impl Strategy<Value = pb::CellResult> {
    prop_oneof![1 => valid_cell_result(), 1 => hostile_cell_result()]
}

fn hostile_cell_result() -> impl Strategy<Value = pb::CellResult> {
    (
        number(),
        number(),
        number(),
        number(),
        number(),
        number(),
        any::<u32>(),
        prop::collection::vec(text(), 0..12),
        (any::<u32>(), any::<u32>()),
    )
        .prop_map(
            |(
                accuracy,
                attack_success_rate,
                mean_linf,
                mean_l2,
                ips,
                seconds,
                examples,
                warnings,
                (clean_correct, flipped),
            )| {
                pb::CellResult {
                    accuracy,
                    attack_success_rate,
                    mean_linf,
                    mean_l2,
                    images_per_second: ips,
                    seconds,
                    examples,
                    stages: Vec::new(),
                    warnings,
                    clean_correct,
                    flipped,
                }
            },
        )
}

fn one_of(values: Vec<String>) -> impl Strategy<Value = String> {
    prop_oneof![2 => proptest::sample::select(values), 1 => text()]
}

thread_local! {
    /// (accepted, refused) calls of the running test; each test drives its handlers from its own
    /// thread (`block_on` polls on the caller's thread).
    static OUTCOMES: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 0)) };
}

/// Fails the case unless `outcome` is a success or the caller's fault.
fn check<T>(what: &str, outcome: Result<T, Status>) -> Result<(), TestCaseError> {
    OUTCOMES.with(|o| {
        let (ok, refused) = o.get();
        o.set(if outcome.is_ok() {
            (ok + 1, refused)
        } else {
            (ok, refused + 1)
        });
    });
    if let Err(status) = outcome {
        prop_assert!(
            is_callers_fault(status.code()),
            "{what}: {:?} {}",
            status.code(),
            status.message()
        );
        prop_assert!(
            status.message().len() <= validate::MAX_STATUS_MESSAGE_BYTES + 4,
            "{what}: a {}-byte status message",
            status.message().len()
        );
    }
    Ok(())
}

/// Runs `cases` random cases of `strategy` through `call` against one fixture.
fn fuzz<S, F>(cases: u32, strategy: impl FnOnce(&Fixture) -> S, call: F)
where
    S: Strategy,
    S::Value: Clone,
    F: Fn(&Fixture, S::Value) -> futures_like::BoxFuture<'_, Result<(), TestCaseError>>,
{
    let rt = common::runtime();
    let fixture = rt.block_on(Fixture::new());
    let strategy = strategy(&fixture);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    });
    OUTCOMES.with(|o| o.set((0, 0)));
    runner
        .run(&strategy, |value| {
            rt.block_on(async {
                fixture.renew().await;
                call(&fixture, value).await
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // Both sides were exercised: the strategies reach the store, not only the validators.
    let (accepted, refused) = OUTCOMES.with(|o| o.get());
    eprintln!("{cases} cases: {accepted} calls accepted, {refused} refused");
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}

/// Boxed futures without a futures-crate dependency.
mod futures_like {
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
}

#[test]
fn register_2000_random_requests() {
    fuzz(
        2000,
        |_| (text(), text(), text(), count(), text()),
        |f, (name, hostname, device, slots, version)| {
            Box::pin(async move {
                let r = f
                    .workers
                    .register(Request::new(pb::RegisterRequest {
                        name,
                        hostname,
                        device,
                        slots,
                        version,
                    }))
                    .await;
                check("Register", r)
            })
        },
    );
}

#[test]
fn lease_and_heartbeat_2000_random_requests() {
    fuzz(
        2000,
        |f| (real_or(f.worker_id.clone()), lease_choice()),
        |f, (worker_id, lease)| {
            Box::pin(async move {
                let lease = resolve(&lease, &f.live().lease);
                // A real worker id leases the fixture's other run: fine, that is its right.
                let r = f
                    .workers
                    .lease(Request::new(pb::LeaseRequest {
                        worker_id,
                        ..Default::default()
                    }))
                    .await;
                check("Lease", r)?;
                let r = f
                    .workers
                    .heartbeat(Request::new(pb::HeartbeatRequest { lease }))
                    .await;
                check("Heartbeat", r)
            })
        },
    );
}

#[test]
fn report_metrics_1000_random_requests() {
    fuzz(
        1000,
        |_| (lease_choice(), proptest::collection::vec(epoch(), 0..6)),
        |f, (lease, epochs)| {
            Box::pin(async move {
                let lease = resolve(&lease, &f.live().lease);
                let r = f
                    .workers
                    .report_metrics(Request::new(pb::ReportMetricsRequest { lease, epochs }))
                    .await;
                check("ReportMetrics", r)
            })
        },
    );
}

#[test]
fn complete_cell_1000_random_requests() {
    fuzz(
        1000,
        |f| {
            (
                lease_choice(),
                prop_oneof![
                    2 => any::<prop::sample::Index>().prop_map(Ok),
                    1 => one_of(f.cell_ids.clone()).prop_map(Err),
                ],
                proptest::option::weighted(0.9, cell_result()),
            )
        },
        |f, (lease, cell, result)| {
            Box::pin(async move {
                let live = f.live();
                let lease = resolve(&lease, &live.lease);
                // A cell of the live run, or any other id.
                let cell_id = match cell {
                    Ok(i) if !live.cells.is_empty() => {
                        live.cells[i.index(live.cells.len())].clone()
                    }
                    Ok(_) => String::new(),
                    Err(other) => other,
                };
                let r = f
                    .workers
                    .complete_cell(Request::new(pb::CompleteCellRequest {
                        lease,
                        cell_id,
                        result,
                    }))
                    .await;
                check("CompleteCell", r)
            })
        },
    );
}

/// A chunk that could be true: the first of its cell (or a repeat of it), counts that fit.
fn valid_cell_chunk() -> impl Strategy<Value = pb::CellChunk> {
    (
        1u32..200,
        0.0..=1.0f64,
        0.0..=1.0f64,
        0.0..=1.0f64,
        any::<u64>(),
    )
        .prop_map(|(images, clean, flipped, adversarial, rng_state)| {
            let clean_correct = (f64::from(images) * clean) as u32;
            pb::CellChunk {
                start: 0,
                images,
                adversarial_correct: (f64::from(images) * adversarial) as u32,
                clean_correct,
                flipped: (f64::from(clean_correct) * flipped) as u32,
                linf_sum: 0.03 * f64::from(images),
                l2_sum: f64::from(images),
                stage_robust: vec![],
                seconds: 1.0,
                rng_state,
            }
        })
}

fn cell_chunk() -> impl Strategy<Value = pb::CellChunk> {
    prop_oneof![2 => valid_cell_chunk(), 1 => hostile_cell_chunk()]
}

fn hostile_cell_chunk() -> impl Strategy<Value = pb::CellChunk> {
    (
        (count(), count(), count(), count(), count()),
        (number(), number(), number()),
        prop::collection::vec(count(), 0..10),
        any::<u64>(),
    )
        .prop_map(
            |(
                (start, images, adversarial_correct, clean_correct, flipped),
                (linf_sum, l2_sum, seconds),
                stage_robust,
                rng_state,
            )| pb::CellChunk {
                start,
                images,
                adversarial_correct,
                clean_correct,
                flipped,
                linf_sum,
                l2_sum,
                stage_robust,
                seconds,
                rng_state,
            },
        )
}

#[test]
fn report_cell_chunk_1000_random_requests() {
    fuzz(
        1000,
        |f| {
            (
                lease_choice(),
                prop_oneof![
                    2 => any::<prop::sample::Index>().prop_map(Ok),
                    1 => one_of(f.cell_ids.clone()).prop_map(Err),
                ],
                proptest::option::weighted(0.9, cell_chunk()),
            )
        },
        |f, (lease, cell, chunk)| {
            Box::pin(async move {
                let live = f.live();
                let lease = resolve(&lease, &live.lease);
                let cell_id = match cell {
                    Ok(i) if !live.cells.is_empty() => {
                        live.cells[i.index(live.cells.len())].clone()
                    }
                    Ok(_) => String::new(),
                    Err(other) => other,
                };
                let r = f
                    .workers
                    .report_cell_chunk(Request::new(pb::ReportCellChunkRequest {
                        lease,
                        cell_id,
                        chunk,
                    }))
                    .await;
                check("ReportCellChunk", r)
            })
        },
    );
}

#[test]
fn complete_cells_1000_random_requests() {
    fuzz(
        1000,
        |f| {
            (
                lease_choice(),
                prop::collection::vec(
                    (
                        prop_oneof![
                            3 => any::<prop::sample::Index>().prop_map(Ok),
                            1 => one_of(f.cell_ids.clone()).prop_map(Err),
                        ],
                        // Mostly valid results, so that whole batches get through too.
                        proptest::option::weighted(
                            0.95,
                            prop_oneof![4 => valid_cell_result(), 1 => hostile_cell_result()],
                        ),
                    ),
                    0..5,
                ),
            )
        },
        |f, (lease, cells)| {
            Box::pin(async move {
                let live = f.live();
                let lease = resolve(&lease, &live.lease);
                // Cells of the live run, or any other ids, with or without results.
                let cells = cells
                    .into_iter()
                    .map(|(cell, result)| pb::CellReport {
                        cell_id: match cell {
                            Ok(i) if !live.cells.is_empty() => {
                                live.cells[i.index(live.cells.len())].clone()
                            }
                            Ok(_) => String::new(),
                            Err(other) => other,
                        },
                        result,
                    })
                    .collect();
                let r = f
                    .workers
                    .complete_cells(Request::new(pb::CompleteCellsRequest { lease, cells }))
                    .await;
                check("CompleteCells", r)
            })
        },
    );
}

#[test]
fn fail_release_complete_run_1000_random_requests() {
    fuzz(
        1000,
        |_| (lease_choice(), text(), any::<bool>(), 0u8..3),
        |f, (lease, reason, retryable, which)| {
            Box::pin(async move {
                let lease = resolve(&lease, &f.live().lease);
                match which {
                    0 => check(
                        "FailRun",
                        f.workers
                            .fail_run(Request::new(pb::FailRunRequest {
                                lease,
                                reason,
                                retryable,
                            }))
                            .await,
                    ),
                    1 => check(
                        "ReleaseRun",
                        f.workers
                            .release_run(Request::new(pb::ReleaseRunRequest { lease, reason }))
                            .await,
                    ),
                    _ => check(
                        "CompleteRun",
                        f.workers
                            .complete_run(Request::new(pb::CompleteRunRequest { lease }))
                            .await,
                    ),
                }
            })
        },
    );
}

#[test]
fn download_checkpoint_2000_random_requests() {
    fuzz(
        2000,
        |f| {
            (
                real_or(f.worker_id.clone()),
                real_or(f.checkpoint.0.clone()),
                real_or(f.checkpoint.1.clone()),
            )
        },
        |f, (worker_id, run_id, checkpoint_id)| {
            Box::pin(async move {
                let r = f
                    .workers
                    .download_checkpoint(Request::new(pb::DownloadCheckpointRequest {
                        worker_id,
                        run_id,
                        checkpoint_id,
                    }))
                    .await;
                check("DownloadCheckpoint", r.map(|_| ()))
            })
        },
    );
}

#[test]
fn sweep_reads_cancel_and_retry_2000_random_requests() {
    fuzz(
        2000,
        |f| {
            (
                real_or(f.sweep_id.clone()),
                proptest::collection::vec(one_of(f.cell_ids.clone()), 0..4),
                0u8..4,
            )
        },
        |f, (sweep_id, cell_ids, which)| {
            Box::pin(async move {
                match which {
                    0 => check(
                        "GetSweep",
                        f.sweeps
                            .get_sweep(Request::new(pb::GetSweepRequest { sweep_id }))
                            .await,
                    ),
                    1 => check(
                        "WatchSweep",
                        f.sweeps
                            .watch_sweep(Request::new(pb::WatchSweepRequest { sweep_id }))
                            .await
                            .map(|_| ()),
                    ),
                    2 => check(
                        "RetrySweep",
                        f.sweeps
                            .retry_sweep(Request::new(pb::RetrySweepRequest {
                                sweep_id,
                                cell_ids,
                                include_cancelled: false,
                            }))
                            .await,
                    ),
                    _ => check(
                        "CancelSweep",
                        f.sweeps
                            .cancel_sweep(Request::new(pb::CancelSweepRequest { sweep_id }))
                            .await,
                    ),
                }
            })
        },
    );
}

fn overrides() -> impl Strategy<Value = HashMap<String, String>> {
    proptest::collection::hash_map(
        prop_oneof![3 => Just("data.path".to_owned()), 1 => text()],
        text(),
        0..3,
    )
}

#[test]
fn submit_sweep_2000_random_requests() {
    fuzz(
        2000,
        |_| {
            (
                prop_oneof![
                    2 => text(),
                    2 => text().prop_map(|junk| format!("{}\n{junk}", common::SWEEP)),
                    1 => (0usize..common::SWEEP.len(), text()).prop_map(|(at, junk)| {
                        let mut s = common::SWEEP.as_bytes()[..at].to_vec();
                        s.extend_from_slice(junk.as_bytes());
                        String::from_utf8_lossy(&s).into_owned()
                    }),
                ],
                overrides(),
            )
        },
        |f, (sweep_toml, overrides)| {
            Box::pin(async move {
                let r = f
                    .sweeps
                    .submit_sweep(Request::new(pb::SubmitSweepRequest {
                        sweep_toml,
                        overrides,
                        ..Default::default()
                    }))
                    .await;
                check("SubmitSweep", r)
            })
        },
    );
}

#[tokio::test]
async fn each_field_is_named_in_its_refusal() {
    let f = Fixture::new().await;
    let good = f.live().lease;
    let with = |edit: fn(&mut pb::LeaseRef)| {
        let mut l = good.clone();
        edit(&mut l);
        Some(l)
    };
    let cases: Vec<(&str, Option<pb::LeaseRef>)> = vec![
        ("lease.run_id", with(|l| l.run_id = "../../etc".into())),
        ("lease.run_id", with(|l| l.run_id = "r-XYZ".into())),
        ("lease.worker_id", with(|l| l.worker_id = "w x".into())),
        ("lease.lease_id", with(|l| l.lease_id = "l".repeat(129))),
        ("lease.attempt", with(|l| l.attempt = 0)),
        ("lease", None),
    ];
    for (field, lease) in cases {
        let e = f
            .workers
            .heartbeat(Request::new(pb::HeartbeatRequest { lease }))
            .await
            .expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}: {e}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    let epoch = |edit: fn(&mut pb::EpochMetrics)| {
        let mut e = pb::EpochMetrics {
            epoch: 1,
            train_loss: 1.0,
            train_accuracy: 0.5,
            test_accuracy: 0.5,
            seconds: 1.0,
            images_per_second: 10.0,
        };
        edit(&mut e);
        e
    };
    for (field, bad) in [
        ("epochs.epoch", epoch(|e| e.epoch = 0)),
        ("epochs.epoch", epoch(|e| e.epoch = u32::MAX)),
        ("epochs.train_loss", epoch(|e| e.train_loss = -1.0)),
        (
            "epochs.train_loss",
            epoch(|e| e.train_loss = f64::NEG_INFINITY),
        ),
        ("epochs.test_accuracy", epoch(|e| e.test_accuracy = 1.5)),
        (
            "epochs.train_accuracy",
            epoch(|e| e.train_accuracy = f64::INFINITY),
        ),
        ("epochs.seconds", epoch(|e| e.seconds = f64::NAN)),
        (
            "epochs.images_per_second",
            epoch(|e| e.images_per_second = -3.0),
        ),
    ] {
        let e = f
            .workers
            .report_metrics(Request::new(pb::ReportMetricsRequest {
                lease: Some(good.clone()),
                epochs: vec![bad],
            }))
            .await
            .expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}: {e}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    // Epochs are bounded by the run's spec (the fixture trains 4): one past it, or 5000 for a
    // short run, names the field and stores nothing; the last real epoch is accepted.
    for beyond in [5, 5000] {
        let e = f
            .workers
            .report_metrics(Request::new(pb::ReportMetricsRequest {
                lease: Some(good.clone()),
                epochs: vec![epoch(|_| {}), {
                    let mut e = epoch(|_| {});
                    e.epoch = beyond;
                    e
                }],
            }))
            .await
            .expect_err("an epoch the run does not train");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{beyond}: {e}");
        assert!(
            e.message().contains("epochs.epoch") && e.message().contains("1..=4"),
            "{beyond}: {}",
            e.message()
        );
    }
    let run = |f: &Fixture| {
        f.store
            .sweep_detail(&typed(&f.sweep_id))
            .expect("detail")
            .runs
            .into_iter()
            .find(|r| r.run_id == good.run_id)
            .expect("the leased run")
    };
    assert!(run(&f).epochs.is_empty(), "a refused report stores nothing");
    f.workers
        .report_metrics(Request::new(pb::ReportMetricsRequest {
            lease: Some(good.clone()),
            epochs: vec![epoch(|e| e.epoch = 4)],
        }))
        .await
        .expect("the run's last epoch");
    assert_eq!(run(&f).epochs.len(), 1);

    let too_many = vec![epoch(|_| {}); validate::MAX_EPOCHS_PER_REPORT + 1];
    let e = f
        .workers
        .report_metrics(Request::new(pb::ReportMetricsRequest {
            lease: Some(good.clone()),
            epochs: too_many,
        }))
        .await
        .expect_err("refused");
    assert!(
        e.message().contains("epochs") && e.message().contains("10000"),
        "{e}"
    );

    let e = f
        .workers
        .register(Request::new(pb::RegisterRequest {
            name: "n".into(),
            hostname: "h".repeat(257),
            device: "cpu".into(),
            slots: 1,
            version: "v".into(),
        }))
        .await
        .expect_err("refused");
    assert!(
        e.message().contains("hostname") && e.message().contains("256"),
        "{e}"
    );
    let e = f
        .workers
        .register(Request::new(pb::RegisterRequest {
            name: "n".into(),
            slots: 5000,
            ..Default::default()
        }))
        .await
        .expect_err("refused");
    assert!(
        e.message().contains("slots") && e.message().contains("1024"),
        "{e}"
    );

    let e = f
        .sweeps
        .retry_sweep(Request::new(pb::RetrySweepRequest {
            sweep_id: f.sweep_id.clone(),
            cell_ids: vec![f.cell_ids[0].clone(), "c-; DROP TABLE cells".into()],
            include_cancelled: false,
        }))
        .await
        .expect_err("refused");
    assert!(e.message().contains("cell_ids[1]"), "{e}");
    let e = f
        .sweeps
        .get_sweep(Request::new(pb::GetSweepRequest {
            sweep_id: "s-0000000000000000".into(),
        }))
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
}

#[tokio::test]
async fn long_reasons_are_cut_not_refused() {
    let f = Fixture::new().await;
    let reason = format!("{}\u{7}{}", "é".repeat(10_000), "tail");
    f.workers
        .fail_run(Request::new(pb::FailRunRequest {
            lease: Some(f.live().lease),
            reason,
            retryable: true,
        }))
        .await
        .expect("a worker can always report a failure");
    let detail = f.store.sweep_detail(&typed(&f.sweep_id)).expect("detail");
    let run = detail
        .runs
        .iter()
        .find(|r| r.run_id == f.live().lease.run_id)
        .expect("run");
    let stored = run.attempts[0].reason.clone().expect("reason");
    assert!(
        stored.len() <= validate::MAX_REASON_BYTES + 3,
        "{}",
        stored.len()
    );
    assert!(stored.ends_with('…'));
}

#[tokio::test]
async fn overrides_and_oversized_grids_are_refused_by_name() {
    let f = Fixture::new().await;
    let submit = |toml: String, overrides: HashMap<String, String>| {
        f.sweeps.submit_sweep(Request::new(pb::SubmitSweepRequest {
            sweep_toml: toml,
            overrides,
            ..Default::default()
        }))
    };
    let cifar = common::SWEEP.replace(
        "source = \"synthetic\"",
        "source = \"cifar10\"\npath = \"/data\"",
    );
    for (key, value, fragment) in [
        ("data.path", "a\0b", "overrides[\"data.path\"]"),
        ("data.path", "", "overrides[\"data.path\"]"),
        ("data.path", &"p".repeat(5000), "overrides[\"data.path\"]"),
        ("data.seed", "1", "unknown override \"data.seed\""),
    ] {
        let e = submit(
            cifar.clone(),
            HashMap::from([(key.to_owned(), value.to_owned())]),
        )
        .await
        .expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(
            e.message().contains(fragment),
            "{fragment}: {}",
            e.message()
        );
    }

    // 10 000 models × 10 000 ε: counted, refused, never built.
    let models: Vec<String> = (0..10_000).map(|i| format!("\"m{i}\"")).collect();
    let presets: String = (0..10_000)
        .map(|i| format!("[models.m{i}]\narch = \"basic\"\n"))
        .collect();
    let epsilons: Vec<String> = (1..=10_000)
        .map(|i| format!("{}", f64::from(i) / 1e5))
        .collect();
    let huge = format!(
        "version = 1\nname = \"huge\"\n[data]\nsource = \"synthetic\"\n[grid]\nmodels = [{}]\ndefenses = [\"standard\"]\nattacks = [\"fgsm\"]\nepsilons = [{}]\n{presets}",
        models.join(","),
        epsilons.join(",")
    );
    let started = std::time::Instant::now();
    let e = submit(huge.clone(), HashMap::new())
        .await
        .expect_err("refused");
    assert!(
        e.message()
            .contains("sweep expands to 100000000 cells, more than the coordinator's max_cells_per_sweep = 100000"),
        "{}",
        e.message()
    );
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());

    // The limit is the coordinator's to choose.
    let strict = f.sweeps.clone().with_limits(Limits {
        max_cells: 3,
        ..Limits::default()
    });
    let e = strict
        .submit_sweep(Request::new(pb::SubmitSweepRequest {
            sweep_toml: common::SWEEP.into(),
            overrides: HashMap::new(),
            ..Default::default()
        }))
        .await
        .expect_err("4 cells > 3");
    assert!(
        e.message().contains(
            "sweep expands to 4 cells, more than the coordinator's max_cells_per_sweep = 3"
        ),
        "{e}"
    );

    // A parse error that quotes a megabyte-long line comes back cut to a header-sized message.
    let line = format!("version = 1\n{}= 1\n", "a.".repeat(400_000));
    let e = submit(line, HashMap::new()).await.expect_err("refused");
    assert!(e.message().len() <= validate::MAX_STATUS_MESSAGE_BYTES + 4);
}
