//! Train once across inference-only defenses (issue 20), through `advsweep run`: a grid of
//! `standard`, `noise-injection` and a small DnCNN trains one classifier (one run, one set of
//! epochs), evaluates it bare, behind inference noise and behind a denoiser trained on top of
//! it, and every report shows the three defenses as their own columns and rows.

use std::path::Path;

use advsweep_tests::{advsweep_in, succeeded};

const SWEEP: &str = r#"
version = 1
name = "shared"
[data]
source = "synthetic"
train_size = 300
test_size = 100
[training]
epochs = 2
[evaluation]
limit = 100
eot_samples = 2
[grid]
models = ["basic"]
defenses = ["standard", "noise-injection", "dn"]
attacks = ["none", "fgsm"]
epsilons = ["8/255"]
[defenses.dn]
kind = "standard"
denoiser = { blocks = 1, channels = 8, attack = "fgsm", epsilon = "8/255", epochs = 1 }
"#;

fn advsweep(args: &[&str], dir: &Path) -> std::process::Output {
    advsweep_in(dir, args)
}

#[test]
fn inference_only_defenses_evaluate_one_trained_classifier() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("sweep.toml"), SWEEP).expect("write the sweep");
    let plan = succeeded(advsweep(&["plan", "sweep.toml"], dir.path()));
    assert!(plan.contains("1 run (training jobs), 6 cells"), "{plan}");
    succeeded(advsweep(
        &[
            "run",
            "sweep.toml",
            "--workers",
            "1",
            "--threads",
            "1",
            "--device",
            "cpu",
        ],
        dir.path(),
    ));
    let json: serde_json::Value = serde_json::from_str(&succeeded(advsweep(
        &["status", "shared", "--json"],
        dir.path(),
    )))
    .expect("JSON");
    let runs = json["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "one classifier trained");
    assert_eq!(runs[0]["defense"], "standard");
    assert_eq!(runs[0]["epochs"].as_array().map(Vec::len), Some(2));
    let cells = json["cells"].as_array().expect("cells");
    let accuracy = |defense: &str, attack: &str| -> f64 {
        cells
            .iter()
            .find(|c| c["defense"] == defense && c["attack"] == attack)
            .unwrap_or_else(|| panic!("{defense}/{attack} in {json}"))["result"]["accuracy"]
            .as_f64()
            .expect("done")
    };
    for defense in ["standard", "noise-injection", "dn"] {
        for attack in ["none", "fgsm"] {
            let a = accuracy(defense, attack);
            assert!((0.0..=1.0).contains(&a), "{defense}/{attack}: {a}");
        }
    }
    // The noisy cells are attacked with EOT (`auto`), the bare ones without.
    let eot = |defense: &str| {
        cells
            .iter()
            .find(|c| c["defense"] == defense && c["attack"] == "fgsm")
            .and_then(|c| c["attack_spec"]["eot"].as_u64())
    };
    assert_eq!(
        (eot("standard"), eot("noise-injection")),
        (Some(1), Some(2))
    );
    // The pivot table has a column per defense, as before runs were shared.
    succeeded(advsweep(
        &["report", "shared", "--out", "report", "--no-plots"],
        dir.path(),
    ));
    let table = std::fs::read_to_string(dir.path().join("report/table.csv")).expect("table.csv");
    let header = table.lines().next().unwrap_or_default();
    for column in ["basic/standard", "basic/noise-injection", "basic/dn"] {
        assert!(header.contains(column), "{header}");
    }
}
