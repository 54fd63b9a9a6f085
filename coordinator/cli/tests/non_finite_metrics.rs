//! A diverged run reports a NaN or infinite loss, and an unmeasured accuracy is NaN: these are
//! data, stored as such, and every view of them — `status` (table and JSON), `report` (tables,
//! CSV and JSON exports, figures) — renders without a crash.
//!
//! Storage: SQLite has no NaN (rusqlite binds it as NULL), so epoch metric columns are nullable
//! and NULL reads back as NaN; ±∞ is a REAL SQLite keeps as it is. Exports write NaN as `NaN`
//! and +∞ as `inf` in CSV (what pandas reads back) and both as `null` in JSON.

// The hostile-input fixture of the server library's tests (a real store and handlers).
#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::Command;

use advsweep_coordinator::store::StateStore as _;
use advsweep_proto::v1 as pb;
use advsweep_proto::v1::sweep_service_server::{SweepService, SweepServiceServer};
use advsweep_proto::v1::worker_service_server::WorkerService;
use advsweep_report::{self as report, CellRecord, Layout, RunRecord, SweepReport};
use common::{Fixture, typed};
use tonic::Request;

fn epoch(n: u32, loss: f64, accuracy: f64) -> pb::EpochMetrics {
    pb::EpochMetrics {
        epoch: n,
        train_loss: loss,
        train_accuracy: accuracy,
        test_accuracy: accuracy,
        seconds: 2.0,
        images_per_second: 100.0,
    }
}

/// Reports a diverging run through the real handlers and finishes it.
async fn diverge(f: &Fixture) -> String {
    let live = f.live();
    f.workers
        .report_metrics(Request::new(pb::ReportMetricsRequest {
            lease: Some(live.lease.clone()),
            epochs: vec![
                epoch(1, 2.3, 0.1),
                epoch(2, f64::INFINITY, f64::NAN),
                epoch(3, f64::NAN, f64::NAN),
                epoch(4, 1e308, 0.0),
            ],
        }))
        .await
        .expect("non-finite losses are data");
    for cell in &live.cells {
        f.workers
            .complete_cell(Request::new(pb::CompleteCellRequest {
                lease: Some(live.lease.clone()),
                cell_id: cell.clone(),
                result: Some(pb::CellResult {
                    accuracy: 0.1,
                    attack_success_rate: 0.0,
                    images_per_second: 10.0,
                    seconds: 1.0,
                    examples: 10,
                    ..Default::default()
                }),
            }))
            .await
            .expect("result");
    }
    f.workers
        .complete_run(Request::new(pb::CompleteRunRequest {
            lease: Some(live.lease.clone()),
        }))
        .await
        .expect("the run completes");
    live.lease.run_id
}

#[tokio::test]
async fn nan_and_inf_are_stored_as_such() {
    let f = Fixture::new().await;
    let run_id = diverge(&f).await;
    let detail = f
        .store
        .sweep_detail(&typed(&f.sweep_id))
        .expect("status of a diverged run");
    let run = detail
        .runs
        .iter()
        .find(|r| r.run_id == run_id)
        .expect("run");
    let losses: Vec<f64> = run.epochs.iter().map(|e| e.train_loss).collect();
    assert_eq!(losses[0], 2.3);
    assert_eq!(losses[1], f64::INFINITY);
    assert!(losses[2].is_nan());
    assert_eq!(losses[3], 1e308);
    assert!(run.epochs[1].test_accuracy.is_nan());
    // The RPC view too.
    let wire = f
        .sweeps
        .get_sweep(Request::new(pb::GetSweepRequest {
            sweep_id: f.sweep_id.clone(),
        }))
        .await
        .expect("GetSweep")
        .into_inner();
    let run = wire.runs.iter().find(|r| r.run_id == run_id).expect("run");
    assert!(run.epochs[2].train_loss.is_nan());
    assert_eq!(run.epochs[1].train_loss, f64::INFINITY);
    let _ = f
        .sweeps
        .list_sweeps(Request::new(pb::ListSweepsRequest {}))
        .await
        .expect("list");
}

/// Records with every kind of non-finite epoch metric, for the report writers.
fn report_with_non_finite_metrics() -> SweepReport {
    let epochs = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MAX,
        0.0,
        1e-300,
    ]
    .iter()
    .enumerate()
    .map(|(i, &v)| advsweep_core::EpochMetrics {
        epoch: i as u32 + 1,
        train_loss: v,
        train_accuracy: v,
        test_accuracy: if i % 2 == 0 { f64::NAN } else { v },
        seconds: v,
        images_per_second: v,
    })
    .collect();
    let run = RunRecord {
        run_id: "r-0000000000000001".into(),
        model: "basic".into(),
        defense: "standard".into(),
        defense_epsilon: None,
        seed: 0,
        epsilon_space: advsweep_core::EpsilonSpace::Pixel,
        state: advsweep_core::ShownState::Done,
        attempt: 1,
        error: None,
        warnings: vec!["training diverged".into()],
        epochs,
        spec: None,
        shards: 1,
    };
    let cells = [(0.0, "none"), (8.0 / 255.0, "fgsm")]
        .iter()
        .map(|&(eps, attack)| CellRecord {
            cell_id: format!("c-{attack}"),
            run_id: run.run_id.clone(),
            model: run.model.clone(),
            defense: run.defense.clone(),
            defense_epsilon: None,
            inference: Default::default(),
            seed: 0,
            attack: attack.into(),
            attack_spec: None,
            epsilon: eps,
            epsilon_space: run.epsilon_space,
            state: advsweep_core::ShownState::Done,
            result: Some(advsweep_core::CellResult {
                accuracy: 0.5,
                ..Default::default()
            }),
            error: None,
            shards: 1,
        })
        .collect();
    SweepReport {
        sweep_id: "s-0000000000000001".into(),
        name: "..".into(),
        state: advsweep_core::SweepState::Done,
        runs: vec![run],
        cells,
    }
}

#[test]
fn every_report_format_renders_non_finite_metrics() {
    let r = report_with_non_finite_metrics();
    let out = common::temp_dir();
    let written = report::write(
        &r,
        out.path(),
        &Layout::default(),
        Some(report::plots::Canvas::default()),
    )
    .expect("report");
    assert!(written.files.len() >= 6, "{:?}", written.files);
    let csv = std::fs::read_to_string(out.path().join("epochs.csv")).expect("epochs.csv");
    assert!(csv.contains("NaN") && csv.contains(",inf,"), "{csv}");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("sweep.json")).expect("json"),
    )
    .expect("sweep.json is JSON");
    assert!(json["runs"][0]["epochs"][0]["train_loss"].is_null());
    if written.plots_skipped.is_none() {
        assert!(out.path().join("learning_curves_train_loss.svg").exists());
        assert!(out.path().join("learning_curves_train_loss.png").exists());
        assert!(out.path().join("learning_curves_train_loss.pdf").exists());
    }
    // A sweep named ".." gets a report directory of its own, not the parent.
    assert_eq!(report::plots::slug(".."), "_..");
    assert_eq!(report::plots::slug(""), "_");
}

/// The real CLI against a coordinator holding a diverged run: `status` (table, one sweep,
/// JSON) and `report` (with figures, and without) all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_report_commands_survive_a_diverged_run() {
    let f = Fixture::new().await;
    diverge(&f).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SweepServiceServer::new(f.sweeps.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let url = format!("http://{addr}");
    let out = common::temp_dir();
    let report_dir = out.path().join("report");
    let runs: Vec<Vec<String>> = vec![
        vec!["status".into()],
        vec!["status".into(), f.sweep_id.clone()],
        vec!["status".into(), f.sweep_id.clone(), "--json".into()],
        vec![
            "report".into(),
            f.sweep_id.clone(),
            "--out".into(),
            report_dir.display().to_string(),
        ],
        vec![
            "report".into(),
            "hostile".into(),
            "--no-plots".into(),
            "--metric".into(),
            "seconds".into(),
            "--out".into(),
            out.path().join("plain").display().to_string(),
        ],
    ];
    for args in runs {
        let output = tokio::task::spawn_blocking({
            let url = url.clone();
            let args = args.clone();
            let cwd = out.path().to_path_buf();
            move || {
                Command::new(env!("CARGO_BIN_EXE_advsweep"))
                    .args(&args)
                    .args(["--coordinator", &url])
                    .current_dir(cwd)
                    .env_remove("ADVSWEEP_CONFIG")
                    .env_remove("ADVSWEEP_TOKEN_FILE")
                    .output()
                    .expect("runs advsweep")
            }
        })
        .await
        .expect("joins");
        assert!(
            output.status.success(),
            "advsweep {args:?}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if args.contains(&"--json".to_owned()) {
            let _: serde_json::Value =
                serde_json::from_slice(&output.stdout).expect("status --json is JSON");
        }
    }
    let csv = std::fs::read_to_string(report_dir.join("epochs.csv")).expect("epochs.csv");
    assert!(csv.contains("NaN") && csv.contains("inf"), "{csv}");
    assert!(report_dir.join("report.md").exists());
}
