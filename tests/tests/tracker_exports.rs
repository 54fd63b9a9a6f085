//! Exports for experiment trackers (issue 22): `advsweep export tensorboard` and `advsweep
//! export mlflow` on a small finished sweep, read back with the official Python packages —
//! TensorBoard's `EventAccumulator` (and its TFRecord CRC check) and MLflow's `MlflowClient`
//! on a `file:` store — and compared, value by value, with what `advsweep report` writes
//! (`epochs.csv`, `cells.csv`) for the same sweep.

use std::path::Path;
use std::process::Command;

use advsweep_tests::{advsweep_in, succeeded, text};

/// Two seeds of one classifier evaluated bare and behind inference noise (a target of its own
/// that trains nothing), a clean cell, two attacks at two ε.
const SWEEP: &str = r#"
version = 1
name = "trackers"
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
defenses = ["standard", "noise-injection"]
attacks = ["none", "fgsm", "pgd-linf"]
epsilons = ["4/255", "8/255"]
seeds = [0, 1]
"#;

fn python() -> std::ffi::OsString {
    std::env::var_os("ADVSWEEP_TORCH_PYTHON").expect(
        "ADVSWEEP_TORCH_PYTHON (source scripts/env.sh): the exports are read with tensorboard and mlflow",
    )
}

/// Runs `script` in the test virtualenv's Python with `args`; it must succeed. Its stdout.
fn python_ok(script: &str, args: &[&Path]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        // MLflow 3 refuses file stores without it (they are in maintenance mode there).
        .env("MLFLOW_ALLOW_FILE_STORE", "true")
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .expect("python runs");
    succeeded(out)
}

/// What every reader below shares: the report's CSVs, and the run names the exports use.
const COMMON: &str = r#"
import csv, math, os, sys

def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))

def name(model, defense, defense_epsilon, seed):
    assert defense_epsilon == "", defense_epsilon  # none in this sweep
    return f"{model}-{defense}-s{seed}"

report = sys.argv[1]
epochs = rows(os.path.join(report, "epochs.csv"))
cells = [c for c in rows(os.path.join(report, "cells.csv")) if c["state"] == "done"]
assert epochs and cells, (len(epochs), len(cells))

def epoch_series(row):
    return {
        "train/loss": row["train_loss"],
        "train/accuracy": row["train_accuracy"],
        "test/accuracy": row["test_accuracy"],
        "train/images_per_second": row["images_per_second"],
        "train/epoch_seconds": row["seconds"],
    }

def cell_series(row):
    out = {
        "accuracy": row["accuracy"],
        "mean_linf": row["mean_linf"],
        "mean_l2": row["mean_l2"],
        "epsilon": row["epsilon"],
    }
    if row["attack_success_rate"] != "":
        out["attack_success_rate"] = row["attack_success_rate"]
    return {f"cells/{row['attack']}/{k}": v for k, v in out.items()}

# expected[run name][tag] = {step: value as the CSV writes it}
expected = {}
for r in epochs:
    series = expected.setdefault(name(r["model"], r["defense"], r["defense_epsilon"], r["seed"]), {})
    for tag, v in epoch_series(r).items():
        series.setdefault(tag, {})[int(r["epoch"])] = v
for c in cells:
    series = expected.setdefault(name(c["model"], c["defense"], c["defense_epsilon"], c["seed"]), {})
    step = round(float(c["epsilon"]) * 255)
    for tag, v in cell_series(c).items():
        assert step not in series.setdefault(tag, {}), (tag, step)
        series[tag][step] = v
run_of = {name(c["model"], c["defense"], c["defense_epsilon"], c["seed"]): c["run_id"] for c in cells}
"#;

const TENSORBOARD: &str = r#"
import glob, json, struct
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from tensorboard.plugins.hparams import plugin_data_pb2

logdir = sys.argv[2]
assert sorted(os.listdir(logdir)) == sorted(expected), (os.listdir(logdir), sorted(expected))
checked = 0
for run, series in expected.items():
    files = glob.glob(os.path.join(logdir, run, "events.out.tfevents.*"))
    assert len(files) == 1, files
    # The framing by hand: length, masked CRC-32C of it, data, masked CRC-32C of the data.
    raw = open(files[0], "rb").read()
    records, pos = [], 0
    while pos < len(raw):
        header = raw[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (crc,) = struct.unpack("<I", raw[pos + 8:pos + 12])
        assert crc == masked_crc32c(header), "length CRC"
        data = raw[pos + 12:pos + 12 + length]
        (crc,) = struct.unpack("<I", raw[pos + 12 + length:pos + 16 + length])
        assert crc == masked_crc32c(data), "data CRC"
        records.append(data)
        pos += 16 + length
    assert pos == len(raw)
    assert event_pb2.Event.FromString(records[0]).file_version == "brain.Event:2"

    acc = EventAccumulator(os.path.join(logdir, run), size_guidance={"scalars": 0})
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == sorted(series), (run, acc.Tags()["scalars"])
    for tag, points in series.items():
        got = {e.step: e.value for e in acc.Scalars(tag)}
        assert sorted(got) == sorted(points), (run, tag, got, points)
        for step, text in points.items():
            want = float(text)
            # TensorBoard's scalars are 32-bit floats.
            assert math.isclose(got[step], want, rel_tol=1e-6, abs_tol=1e-9), (run, tag, step, got[step], want)
            checked += 1
    hp = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    ).session_start_info.hparams
    model, defense, seed = run.split("-", 1)[0], run.split("-", 1)[1].rsplit("-s", 1)[0], run.rsplit("-s", 1)[1]
    assert hp["model"].string_value == model, hp
    assert hp["defense"].string_value == defense, hp
    assert hp["seed"].number_value == int(seed), hp
    assert hp["spec.training.epochs"].number_value == 2, hp
print(json.dumps({"runs": len(expected), "values": checked}))
"#;

const MLFLOW: &str = r#"
import json, pathlib
from mlflow import MlflowClient

client = MlflowClient(tracking_uri=pathlib.Path(sys.argv[2]).resolve().as_uri())
experiments = [e for e in client.search_experiments() if e.name == "trackers"]
assert len(experiments) == 1, [e.name for e in client.search_experiments()]
runs = client.search_runs([experiments[0].experiment_id], max_results=1000)
assert sorted(r.info.run_name for r in runs) == sorted(expected), [r.info.run_name for r in runs]
checked = 0
for r in runs:
    series = expected[r.info.run_name]
    assert r.info.status == "FINISHED", r.info
    assert r.data.tags["mlflow.runName"] == r.info.run_name
    assert r.data.tags["advsweep.run_id"] == run_of[r.info.run_name], r.data.tags
    p = r.data.params
    assert f"{p['model']}-{p['defense']}-s{p['seed']}" == r.info.run_name, p
    assert p["spec.training.epochs"] == "2", p
    assert p["epsilon_space"] == "pixel", p
    if p["defense"] == "noise-injection":
        assert float(p["inference.inference_noise"]) > 0, p
        assert p["training_defense"] == "standard", p
    assert sorted(r.data.metrics) == sorted(series), (r.info.run_name, sorted(r.data.metrics))
    for tag, points in series.items():
        history = client.get_metric_history(r.info.run_id, tag)
        got = {m.step: m.value for m in history}
        assert len(history) == len(got) == len(points), (tag, history)
        for step, text in points.items():
            # Both sides print an f64 as its shortest round trip: equal exactly.
            assert got[step] == float(text), (r.info.run_name, tag, step, got[step], text)
            checked += 1
    # The latest value of a series is its last step's.
    assert r.data.metrics["train/loss" if "train/loss" in series else "cells/none/accuracy"] is not None
filtered = client.search_runs(
    [experiments[0].experiment_id],
    filter_string="params.defense = 'noise-injection' and metrics.`cells/fgsm/accuracy` >= 0",
)
assert len(filtered) == 2, [x.info.run_name for x in filtered]
print(json.dumps({"runs": len(runs), "values": checked}))
"#;

fn advsweep(dir: &Path, args: &[&str]) -> std::process::Output {
    advsweep_in(dir, args)
}

#[test]
fn tensorboard_and_mlflow_read_back_what_the_report_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("sweep.toml"), SWEEP).expect("write the sweep");
    succeeded(advsweep(
        d,
        &[
            "run",
            "sweep.toml",
            "--workers",
            "2",
            "--threads",
            "1",
            "--device",
            "cpu",
        ],
    ));
    succeeded(advsweep(
        d,
        &[
            "report",
            "trackers",
            "--out",
            "report",
            "--no-plots",
            "--state-dir",
            "advsweep-state",
        ],
    ));
    let report = d.join("report");

    // Exported twice: the second export replaces the first instead of adding to it.
    for _ in 0..2 {
        let tb = succeeded(advsweep(
            d,
            &["export", "tensorboard", "trackers", "--out", "tb"],
        ));
        assert!(tb.contains("wrote 4 run directories"), "{tb}");
        let ml = succeeded(advsweep(
            d,
            &["export", "mlflow", "trackers", "--out", "mlruns"],
        ));
        assert!(ml.contains("4 runs"), "{ml}");
    }

    let tb = python_ok(&format!("{COMMON}{TENSORBOARD}"), &[&report, &d.join("tb")]);
    let tb: serde_json::Value = serde_json::from_str(tb.trim()).expect("JSON");
    assert_eq!(tb["runs"], 4, "{tb}");
    // 2 training runs × 2 epochs × 5 series; 4 targets × (1 clean cell × 4 + 4 attacked × 5).
    assert_eq!(tb["values"], 2 * 2 * 5 + 4 * (4 + 4 * 5), "{tb}");

    let ml = python_ok(&format!("{COMMON}{MLFLOW}"), &[&report, &d.join("mlruns")]);
    let ml: serde_json::Value = serde_json::from_str(ml.trim()).expect("JSON");
    assert_eq!(ml["runs"], 4, "{ml}");
    assert_eq!(ml["values"], tb["values"], "{ml}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for what in ["tensorboard", "mlflow"] {
        // No state directory at all.
        let out = advsweep(d, &["export", what, "anything", "--out", "x"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
    std::fs::write(
        d.join("sweep.toml"),
        SWEEP.replace("seeds = [0, 1]", "seeds = [0]"),
    )
    .expect("write the sweep");
    succeeded(advsweep(
        d,
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
    ));
    std::fs::write(d.join("a-file"), "").expect("write a file");
    for what in ["tensorboard", "mlflow"] {
        let out = advsweep(d, &["export", what, "no-such-sweep", "--out", "x"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            stderr.contains("no sweep with id or name `no-such-sweep`"),
            "{stderr}"
        );
        // An output directory that cannot be made (a file is in the way).
        let out = advsweep(d, &["export", what, "trackers", "--out", "a-file/out"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            stderr.contains("cannot create the output directory a-file/out"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
