//! One cell spread over many workers (issue 20): `[evaluation] shards = 3` evaluates each cell's
//! test images in three slices, each a run leased on its own worker, and every report shows one
//! cell whose numbers are exactly those of the unsharded evaluation — counts summed, random
//! attacks (PGD's random start, Square, an AutoAttack cascade) drawing the same numbers.

use std::path::Path;
use std::process::Command;

use advsweep_tests::{advsweep_in, succeeded};

fn python() -> std::ffi::OsString {
    std::env::var_os("ADVSWEEP_TORCH_PYTHON")
        .expect("ADVSWEEP_TORCH_PYTHON (source scripts/env.sh): the weights are PyTorch's")
}

/// Runs the torch environment's Python with `args`, which must succeed.
fn python_ok(args: &[&std::ffi::OsStr]) {
    succeeded(
        Command::new(python())
            .args(args)
            .output()
            .expect("python runs"),
    );
}

/// BasicNet weights as PyTorch initializes them (seed 0), in `dir/basic.safetensors`.
fn export_weights(dir: &Path) {
    let input = dir.join("input.safetensors");
    python_ok(&[
        "-c".as_ref(),
        "import sys, torch; from safetensors.torch import save_file; \
         save_file({'x': torch.zeros(4, 3, 32, 32)}, sys.argv[1])"
            .as_ref(),
        input.as_os_str(),
    ]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../worker/tests/reference/models.py");
    python_ok(&[
        script.as_os_str(),
        "export".as_ref(),
        "basic".as_ref(),
        dir.join("basic.safetensors").as_os_str(),
        input.as_os_str(),
        dir.join("logits.safetensors").as_os_str(),
    ]);
}

/// An evaluate-only sweep of 240 images in batches of 50 (five batches: slices of one, two and
/// two), with `shards` slices per cell.
fn sweep(shards: u32) -> String {
    format!(
        r#"
version = 1
name = "sharded"
[data]
source = "synthetic"
train_size = 100
test_size = 240
[training]
epochs = 0
[evaluation]
limit = 0
batch_size = 50
shards = {shards}
[attacks.square-30]
kind = "square"
queries = 30
[attacks.apgd-ce-5]
kind = "apgd"
loss = "ce"
steps = 5
[attacks.aa-small]
kind = "autoattack"
stages = ["apgd-ce-5", "square-30"]
[grid]
models = ["pretrained"]
defenses = ["standard"]
attacks = ["none", "fgsm", "pgd-linf", "square-30", "aa-small"]
epsilons = ["8/255"]
[models.pretrained]
arch = "basic"
weights = "basic.safetensors"
"#
    )
}

fn advsweep(args: &[&str], dir: &Path) -> std::process::Output {
    advsweep_in(dir, args)
}

/// Runs the sweep with `shards` on as many workers, in its own state directory; the report's
/// cells (`status --json`) by attack.
fn cells(dir: &Path, shards: u32) -> Vec<serde_json::Value> {
    let file = format!("sweep-{shards}.toml");
    let state = format!("state-{shards}");
    std::fs::write(dir.join(&file), sweep(shards)).expect("write the sweep");
    let workers = shards.to_string();
    succeeded(advsweep(
        &[
            "run",
            &file,
            "--workers",
            &workers,
            "--threads",
            "1",
            "--device",
            "cpu",
            "--state-dir",
            &state,
        ],
        dir,
    ));
    let json: serde_json::Value = serde_json::from_str(&succeeded(advsweep(
        &["status", "sharded", "--json", "--state-dir", &state],
        dir,
    )))
    .expect("status --json is JSON");
    let mut cells = json["cells"].as_array().expect("cells").clone();
    cells.sort_by_key(|c| c["attack"].as_str().unwrap_or_default().to_owned());
    cells
}

#[test]
fn three_shards_on_three_workers_give_the_unsharded_cells_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    export_weights(dir.path());
    let whole = cells(dir.path(), 1);
    let sharded = cells(dir.path(), 3);
    assert_eq!(whole.len(), 5, "one cell per attack");
    assert_eq!(
        sharded.len(),
        5,
        "reports merge a cell's three parts into one"
    );
    for (w, s) in whole.iter().zip(&sharded) {
        let attack = w["attack"].as_str().unwrap_or_default();
        assert_eq!(s["attack"], w["attack"]);
        assert_eq!(s["state"], "done", "{s}");
        assert_eq!(s["shards"], 3, "{s}");
        assert_eq!(w["shards"], 1, "{w}");
        let (wr, sr) = (&w["result"], &s["result"]);
        assert_eq!(sr["examples"], 240, "{attack}: every image once");
        for exact in [
            "accuracy",
            "attack_success_rate",
            "examples",
            "clean_correct",
            "flipped",
            "stages",
        ] {
            assert_eq!(sr[exact], wr[exact], "{attack}: {exact}");
        }
        for summed in ["mean_linf", "mean_l2"] {
            let (a, b) = (wr[summed].as_f64().unwrap(), sr[summed].as_f64().unwrap());
            assert!(
                (a - b).abs() <= 1e-12 * a.abs().max(1.0),
                "{attack}: {summed} {a} vs {b}"
            );
        }
    }
    // Something was attacked: the check above compares more than zeros.
    let fgsm = whole.iter().find(|c| c["attack"] == "fgsm").expect("fgsm");
    assert!(fgsm["result"]["flipped"].as_u64().unwrap() > 0, "{fgsm}");

    // The parts were three runs on three workers: the run table says so.
    let table = succeeded(advsweep(
        &[
            "report",
            "sharded",
            "--state-dir",
            "state-3",
            "--out",
            "report",
            "--no-plots",
        ],
        dir.path(),
    ));
    assert!(!table.is_empty());
    let csv = std::fs::read_to_string(dir.path().join("report/cells.csv")).expect("cells.csv");
    assert_eq!(csv.lines().count(), 6, "one row per merged cell:\n{csv}");
}

#[test]
fn more_shards_than_batches_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("basic.safetensors"), b"not read").expect("write");
    std::fs::write(dir.path().join("sweep.toml"), sweep(6)).expect("write");
    let out = advsweep(&["plan", "sweep.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("evaluation.shards = 6") && stderr.contains("5 batches of 50"),
        "{stderr}"
    );
}

#[test]
fn shards_with_training_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("basic.safetensors"), b"not read").expect("write");
    let trained = sweep(2).replace("epochs = 0", "epochs = 1");
    std::fs::write(dir.path().join("sweep.toml"), trained).expect("write");
    let out = advsweep(&["plan", "sweep.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("evaluation.shards") && stderr.contains("epochs = 0"),
        "{stderr}"
    );
}
