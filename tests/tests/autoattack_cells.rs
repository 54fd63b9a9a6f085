//! An AutoAttack cascade through the whole product (issue 19): a sweep file with a custom
//! cascade, a real coordinator and a real worker process, then what a user reads back: the
//! robust accuracy after each stage in `advsweep status --json`, in cells.csv and in report.md.

use std::process::{Command, Output};
use std::time::Duration;

use advsweep_tests::{TestCoordinator, spawn_worker, submit, wait_for_exit, workspace_bin};

const SWEEP: &str = r#"
version = 1
name = "cascade-e2e"
[data]
source = "synthetic"
train_size = 3000
test_size = 100
[training]
epochs = 3
batch_size = 100
learning_rate = 0.05
[evaluation]
limit = 100
[attacks.apgd-ce-10]
kind = "apgd"
loss = "ce"
steps = 10
[attacks.apgd-t-10]
kind = "apgd"
targets = 2
steps = 10
[attacks.square-100]
kind = "square"
queries = 100
[attacks.aa-small]
kind = "autoattack"
stages = ["apgd-ce-10", "apgd-t-10", "square-100"]
[grid]
models = ["basic"]
defenses = ["standard"]
attacks = ["none", "aa-small"]
epsilons = ["2/255"]
"#;

fn cli(url: &str, args: &[&str]) -> Output {
    let out = Command::new(workspace_bin("advsweep"))
        .args(args)
        .env("ADVSWEEP_COORDINATOR", url)
        .output()
        .expect("advsweep runs");
    assert!(
        out.status.success(),
        "advsweep {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascade_cell_shows_each_stage_in_status_csv_and_report() {
    let c = TestCoordinator::start().await;
    let sweep = submit(&c.url, SWEEP).await;
    let log = c.state_dir.path().join("worker.log");
    let mut worker = spawn_worker(&c.url, &log, &["--exit-when-idle"]);
    let (status, text) = wait_for_exit(
        &mut worker,
        Duration::from_secs(300),
        "the worker finishes",
        &log,
    )
    .await;
    assert!(status.success(), "{text}");

    // status --json: the cascade's stages, in order, never rising, ending at the cell's result.
    let out = cli(&c.url, &["status", &sweep, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let cells = status["cells"].as_array().expect("cells");
    let cascade = cells
        .iter()
        .find(|cell| cell["attack"] == "aa-small")
        .unwrap_or_else(|| panic!("the cascade cell in {status}"));
    let result = &cascade["result"];
    let stages = result["stages"].as_array().expect("stages");
    let names: Vec<&str> = stages.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["apgd-ce", "apgd-t", "square"]);
    let accuracies: Vec<f64> = stages
        .iter()
        .filter_map(|s| s["accuracy"].as_f64())
        .collect();
    assert!(
        accuracies.windows(2).all(|w| w[1] <= w[0]),
        "{accuracies:?}"
    );
    assert_eq!(accuracies.last().copied(), result["accuracy"].as_f64());
    let clean = cells
        .iter()
        .find(|cell| cell["attack"] == "none")
        .and_then(|cell| cell["result"]["accuracy"].as_f64())
        .expect("clean accuracy");
    assert!(accuracies[0] <= clean, "{} > clean {clean}", accuracies[0]);
    assert!(clean > 0.25, "the model learned something: {clean}");

    // The report: cells.csv's stages column and report.md's Cascades section.
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("report");
    cli(
        &c.url,
        &["report", &sweep, "--out", out_dir.to_str().expect("utf-8")],
    );
    let csv = std::fs::read_to_string(out_dir.join("cells.csv")).expect("cells.csv");
    let header = csv.lines().next().expect("a header");
    assert!(header.split(',').any(|h| h == "stages"), "{header}");
    let row = csv
        .lines()
        .find(|l| l.contains("aa-small"))
        .unwrap_or_else(|| panic!("the cascade's row in\n{csv}"));
    assert!(row.contains("apgd-ce") && row.contains("square"), "{row}");
    let md = std::fs::read_to_string(out_dir.join("report.md")).expect("report.md");
    let line = md
        .lines()
        .find(|l| l.contains("aa-small ε=2/255: APGD-CE"))
        .unwrap_or_else(|| panic!("the Cascades line in\n{md}"));
    assert!(
        line.contains("→ APGD-T") && line.contains("→ Square"),
        "{line}"
    );
}
