//! A researcher's own model through the whole system (issue 20): a TorchScript module and a
//! safetensors state_dict, both exported by PyTorch from the same reference BasicNet, named in a
//! sweep file beside it; `advsweep run` hashes and uploads them, the workers download them by
//! hash into their cache, evaluate them as given (`epochs = 0`) and report the same cells; a
//! second run uploads nothing new and reuses every cell; a missing file is refused before
//! anything starts, naming it; a sweep naming a file the coordinator never received is refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use advsweep_tests::advsweep_in;

fn python() -> std::ffi::OsString {
    std::env::var_os("ADVSWEEP_TORCH_PYTHON")
        .expect("ADVSWEEP_TORCH_PYTHON (source scripts/env.sh): the models are exported by PyTorch")
}

fn reference_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../worker/tests/reference/models.py")
}

/// The stdout of `command`, which must succeed (its stderr shown otherwise).
fn succeeded(command: &mut Command) -> String {
    let out = command.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn reference(args: &[&Path]) {
    succeeded(Command::new(python()).arg(reference_script()).args(args));
}

/// BasicNet weights (PyTorch's, seed 0) as `basic.safetensors` and the same network scripted
/// as `mine.pt`, in `dir`.
fn export_models(dir: &Path) {
    let input = dir.join("input.safetensors");
    // models.py export needs an input to write logits for: 4 zero images.
    succeeded(
        Command::new(python())
            .args([
                "-c",
                "import sys, torch; from safetensors.torch import save_file; \
             save_file({'x': torch.zeros(4, 3, 32, 32)}, sys.argv[1])",
            ])
            .arg(&input),
    );
    reference(&[
        Path::new("export"),
        Path::new("basic"),
        &dir.join("basic.safetensors"),
        &input,
        &dir.join("logits.safetensors"),
    ]);
    reference(&[
        Path::new("torchscript"),
        Path::new("basic"),
        &dir.join("basic.safetensors"),
        &dir.join("mine.pt"),
        Path::new("script"),
    ]);
}

const SWEEP: &str = r#"
version = 1
name = "own-model"
[data]
source = "synthetic"
train_size = 200
test_size = 200
[training]
epochs = 0
[grid]
models = ["mine", "pretrained"]
defenses = ["standard"]
attacks = ["none", "fgsm", "pgd-linf"]
epsilons = ["2/255"]
[models.mine]
torchscript = "models/mine.pt"
[models.pretrained]
arch = "basic"
weights = "models/basic.safetensors"
"#;

fn advsweep(args: &[&str], dir: &Path) -> std::process::Output {
    advsweep_in(dir, args)
}

/// `advsweep run sweep.toml` with two local workers, the state in `state`, and the settings
/// file `settings` (`run --config`).
fn run_with(dir: &Path, state: &str, settings: &str) -> std::process::Output {
    advsweep(
        &[
            "run",
            "sweep.toml",
            "--workers",
            "2",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--state-dir",
            state,
            "--config",
            settings,
        ],
        dir,
    )
}

/// The workers cache model files where `settings.toml` says, not in their default cache.
fn run(dir: &Path) -> std::process::Output {
    let settings = format!(
        "[coordinator]\nmax_model_file_bytes = 10000000\n[worker]\nmodel_cache = \"{}\"\n",
        dir.join("cache").display()
    );
    std::fs::write(dir.join("settings.toml"), settings).expect("write settings");
    run_with(dir, "state", "settings.toml")
}

/// `(model, attack) → accuracy` of the sweep's cells, from `status --json`.
fn accuracies(dir: &Path) -> Vec<(String, String, f64)> {
    let out = advsweep(
        &["status", "own-model", "--json", "--state-dir", "state"],
        dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let cells = json["cells"].as_array().expect("cells").clone();
    let mut rows: Vec<(String, String, f64)> = cells
        .iter()
        .map(|c| {
            (
                c["model"].as_str().unwrap_or_default().to_owned(),
                c["attack"].as_str().unwrap_or_default().to_owned(),
                c["result"]["accuracy"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect();
    rows.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    assert_eq!(rows.len(), 6, "{json}");
    rows
}

#[test]
fn own_torchscript_and_weights_files_are_uploaded_evaluated_and_agree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).expect("mkdir");
    export_models(&models);
    std::fs::write(dir.path().join("sweep.toml"), SWEEP).expect("write sweep");

    let out = run(dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("model file `models/mine.pt`") && stderr.contains("uploaded"),
        "{stderr}"
    );
    assert!(
        stdout.contains(": done (6 cells done, 0 failed)"),
        "{stdout}"
    );
    // Stored once by hash on the coordinator, cached once by hash on the workers' machine.
    assert_eq!(
        std::fs::read_dir(dir.path().join("state/models"))
            .expect("models")
            .count(),
        2
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("cache"))
            .expect("the worker cache of settings.toml")
            .count(),
        2
    );
    assert!(
        !dir.path().join("worker-cache").exists(),
        "run --config's model_cache wins"
    );

    let rows = accuracies(dir.path());
    for pair in rows.chunks(2) {
        let [(m1, a1, acc1), (m2, a2, acc2)] = pair else {
            panic!("pairs of rows: {rows:?}");
        };
        assert_eq!(
            (a1, m1.as_str(), m2.as_str()),
            (a2, "mine", "pretrained"),
            "{rows:?}"
        );
        // The same network: logits agree to ~1e-6, so at most an image on a boundary differs.
        assert!(
            (acc1 - acc2).abs() <= 1.0 / 200.0 + 1e-9,
            "{a1}: {acc1} vs {acc2}"
        );
    }

    // Again: nothing new to upload, every cell reused.
    let again = run(dir.path());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(stderr.contains("already on the coordinator"), "{stderr}");
    assert!(stderr.contains("(6 already done, reused)"), "{stderr}");

    // The settings file's [coordinator] limits hold for the embedded coordinator too.
    std::fs::write(
        dir.path().join("small.toml"),
        "[coordinator]\nmax_model_file_bytes = 1000\n",
    )
    .expect("write settings");
    let small = run_with(dir.path(), "state-small", "small.toml");
    let stderr = String::from_utf8_lossy(&small.stderr);
    assert!(!small.status.success(), "{stderr}");
    assert!(
        stderr.contains("models/mine.pt") && stderr.contains("max_model_file_bytes"),
        "{stderr}"
    );
    // A typo in the file is named.
    std::fs::write(
        dir.path().join("typo.toml"),
        "[worker]\nmodel_cahce = \"x\"\n",
    )
    .expect("write settings");
    let typo = run_with(dir.path(), "state-typo", "typo.toml");
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert_eq!(typo.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("model_cahce"), "{stderr}");
}

#[test]
fn a_missing_model_file_is_named_before_anything_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("sweep.toml"), SWEEP).expect("write sweep");
    for args in [
        &["plan", "sweep.toml"][..],
        &[
            "run",
            "sweep.toml",
            "--workers",
            "1",
            "--device",
            "cpu",
            "--state-dir",
            "state",
        ],
    ] {
        let out = advsweep(args, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("model `mine`: torchscript file `models/mine.pt`"),
            "{args:?}: {stderr}"
        );
        assert!(!dir.path().join("state").exists(), "nothing written");
    }
}

/// The README's recipe: `examples/export_torchscript.py` writes both files for the sweep
/// `sweeps/own-model.toml` names (from a state_dict, as a user's checkpoint), and `advsweep
/// plan` finds, hashes and shows them; `--unnormalized` prints the `normalize` line to add.
#[test]
fn the_example_exports_what_the_own_model_sweep_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::copy(
        root.join("sweeps/own-model.toml"),
        dir.path().join("own-model.toml"),
    )
    .expect("copy the sweep");
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).expect("mkdir");
    export_models(&models); // a state_dict from PyTorch, standing in for the user's checkpoint
    std::fs::rename(
        models.join("basic.safetensors"),
        dir.path().join("trained.safetensors"),
    )
    .expect("move");
    let example = |extra: &[&str]| {
        succeeded(
            Command::new(python())
                .arg(root.join("examples/export_torchscript.py"))
                .args(["basic", "--weights"])
                .arg(dir.path().join("trained.safetensors"))
                .arg("--out")
                .arg(&models)
                .args(extra),
        )
    };
    let said = example(&["--unnormalized"]);
    assert!(said.contains("normalize = { mean = [0.4914"), "{said}");
    example(&[]);
    // The exported weights are the trained ones, byte for byte in value.
    let trained = tensor_summary(&dir.path().join("trained.safetensors"));
    assert_eq!(trained, tensor_summary(&models.join("basic.safetensors")));

    let out = advsweep(&["plan", "own-model.toml"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("model=mine (torchscript file sha256"),
        "{stdout}"
    );
    assert!(
        stdout.contains("model=mine-as-basic (basic, weights file sha256"),
        "{stdout}"
    );
    assert!(stdout.contains("epochs=0"), "{stdout}");
}

/// The tensors of a safetensors file, as text (names, shapes, values), for comparing files
/// written by different writers.
fn tensor_summary(path: &Path) -> String {
    succeeded(
        Command::new(python())
            .args([
                "-c",
                "import sys; from safetensors.numpy import load_file; \
             d = load_file(sys.argv[1]); \
             print({k: (v.shape, float(abs(v).sum())) for k, v in sorted(d.items())})",
            ])
            .arg(path),
    )
}
