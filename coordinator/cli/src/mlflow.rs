//! `advsweep export mlflow SWEEP --out DIR`: the sweep as an MLflow experiment in a file store
//! (the `mlruns` layout), readable with `MlflowClient(tracking_uri="file:///abs/DIR")`, the
//! MLflow UI (`mlflow ui --backend-store-uri file:///abs/DIR`) or migrated into a database
//! store with `mlflow migrate-filestore`. MLflow 3 refuses file stores unless
//! `MLFLOW_ALLOW_FILE_STORE=true` is set.
//!
//! One MLflow run per target ([`super::trackers`]: a trained classifier under one defense),
//! named like the TensorBoard run directories, with:
//! * params: model, defense, seed, ε space, defense ε, the run's resolved spec flattened
//!   (`spec.training.epochs`, …) and the cells' inference defense;
//! * metrics: the scalars of [`super::trackers`] (`train/loss` by epoch, `cells/<attack>/…`
//!   by ε step), each a metric history;
//! * tags: `mlflow.runName`, `advsweep.sweep_id`, `advsweep.run_id` (the run that trained the
//!   classifier), `advsweep.state`;
//! * status FINISHED, FAILED, KILLED (cancelled) or RUNNING, as the target's run and cells are.
//!
//! The experiment is named after the sweep (plus its id when the store already holds another
//! experiment of that name); its id and the runs' ids are derived from the sweep and run ids,
//! so exporting the sweep again replaces its experiment instead of adding another.
//!
//! Layout written (MLflow's `FileStore`):
//! `DIR/<experiment_id>/meta.yaml`, `DIR/<experiment_id>/<run_id>/{meta.yaml, params/<key>,
//! metrics/<key> ("<timestamp_ms> <value> <step>" lines), tags/<key>, artifacts/}`, beside
//! MLflow's own `DIR/0/` (the Default experiment) and `DIR/.trash/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use advsweep_core::ShownState;
use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

use super::trackers::{self, EpsilonSteps, Target, TrackerArgs};

/// MLflow's `RunStatus` numbers as the file store keeps them.
fn status(state: ShownState) -> u8 {
    match state {
        ShownState::Pending | ShownState::Running => 1,
        ShownState::Done => 3,
        ShownState::Failed => 4,
        ShownState::Cancelled => 5,
    }
}

/// A YAML scalar that reads back as this exact string (single-quoted: only `'` is escaped).
fn yaml_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A `file://` URI for an absolute path, percent-encoding what a URI path cannot hold.
fn file_uri(path: &Path) -> String {
    let mut out = String::from("file://");
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A decimal id from the sweep id's SHA-256 (63 bits: MLflow's own experiment ids are such
/// numbers).
fn experiment_id(sweep_id: &str) -> String {
    let digest = Sha256::digest(format!("advsweep experiment {sweep_id}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) >> 1).to_string()
}

/// A 32-hex-digit run id (MLflow's are UUIDs without dashes).
fn run_id(sweep_id: &str, target: &str) -> String {
    let digest = Sha256::digest(format!("advsweep run {sweep_id} {target}").as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// A metric or param value as the file store keeps it (Python's `float()` reads it back).
fn number(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        v.to_string()
    }
}

/// The experiment name another experiment of the store has, from its `meta.yaml`.
fn experiment_name(meta: &str) -> Option<String> {
    let line = meta.lines().find_map(|l| l.strip_prefix("name: "))?.trim();
    if let Some(inner) = line.strip_prefix('\'').and_then(|l| l.strip_suffix('\'')) {
        Some(inner.replace("''", "'"))
    } else if let Some(inner) = line.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        Some(inner.to_owned())
    } else {
        Some(line.to_owned())
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The name the sweep's experiment takes in the store at `root` (`exp_id` being its own).
fn unique_name(root: &Path, exp_id: &str, wanted: &str, sweep_id: &str) -> String {
    let taken = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy() != exp_id)
        .filter_map(|e| std::fs::read_to_string(e.path().join("meta.yaml")).ok())
        .any(|meta| experiment_name(&meta).as_deref() == Some(wanted));
    if taken {
        format!("{wanted} ({sweep_id})")
    } else {
        wanted.to_owned()
    }
}

pub fn export(args: TrackerArgs) -> anyhow::Result<ExitCode> {
    let report = trackers::load(&args)?;
    let steps = EpsilonSteps::for_report(&report);
    let targets = trackers::targets(&report);
    let t0 = trackers::now();
    if targets
        .iter()
        .all(|t| trackers::points(t, steps, t0).is_empty())
    {
        return Err(trackers::nothing_yet(&report).into());
    }
    trackers::create_out(&args.out)?;
    let root = std::fs::canonicalize(&args.out)
        .with_context(|| format!("cannot resolve {}", args.out.display()))?;
    let t0_ms = (t0 * 1000.0) as i64;
    // What MLflow itself makes in a new store: the Default experiment and the trash.
    if !root.join("0").exists() {
        let meta = format!(
            "artifact_location: {}\ncreation_time: {t0_ms}\nexperiment_id: '0'\n\
             last_update_time: {t0_ms}\nlifecycle_stage: active\nname: Default\n",
            file_uri(&root.join("0"))
        );
        write(&root.join("0").join("meta.yaml"), &meta)?;
    }
    std::fs::create_dir_all(root.join(".trash"))
        .with_context(|| format!("cannot create {}", root.join(".trash").display()))?;

    let exp_id = experiment_id(&report.sweep_id);
    let name = unique_name(&root, &exp_id, &report.name, &report.sweep_id);
    let final_dir = root.join(&exp_id);
    // Built beside, then swapped in: a reader never sees half an experiment.
    let tmp = root.join(format!(".advsweep-tmp-{exp_id}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    let experiment = format!(
        "artifact_location: {}\ncreation_time: {t0_ms}\nexperiment_id: {}\n\
         last_update_time: {t0_ms}\nlifecycle_stage: active\nname: {}\n",
        file_uri(&final_dir),
        yaml_str(&exp_id),
        yaml_str(&name)
    );
    write(&tmp.join("meta.yaml"), &experiment)?;
    write(
        &tmp.join("tags").join("advsweep.sweep_id"),
        &report.sweep_id,
    )?;
    let mut runs = 0usize;
    for target in &targets {
        write_run(&tmp, &final_dir, &exp_id, &report, target, steps, t0)?;
        runs += 1;
    }
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)
            .with_context(|| format!("cannot replace {}", final_dir.display()))?;
    }
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("cannot write {}", final_dir.display()))?;
    outln!(
        "{} (experiment {exp_id}, `{name}`: {runs} runs)",
        final_dir.display()
    );
    outln!(
        "tracking URI: {} (MLflow 3 reads file stores with MLFLOW_ALLOW_FILE_STORE=true)",
        file_uri(&root)
    );
    Ok(ExitCode::SUCCESS)
}

fn write_run(
    exp_dir: &Path,
    final_exp_dir: &Path,
    exp_id: &str,
    report: &advsweep_report::SweepReport,
    target: &Target<'_>,
    steps: EpsilonSteps,
    t0: f64,
) -> anyhow::Result<()> {
    let id = run_id(&report.sweep_id, &target.name);
    let dir: PathBuf = exp_dir.join(&id);
    let points = trackers::points(target, steps, t0);
    let start_ms = (t0 * 1000.0) as i64;
    let state = target.state();
    let end_ms = points
        .iter()
        .map(|p| (p.wall_time * 1000.0) as i64)
        .max()
        .unwrap_or(start_ms);
    let end_time = if matches!(state, ShownState::Pending | ShownState::Running) {
        "null".to_owned()
    } else {
        end_ms.to_string()
    };
    // `run_uuid` beside `run_id` for MLflow 1.x readers; newer ones ignore it.
    let meta = format!(
        "artifact_uri: {}\nend_time: {end_time}\nentry_point_name: ''\nexperiment_id: {}\n\
         lifecycle_stage: active\nrun_id: {id}\nrun_name: {}\nrun_uuid: {id}\nsource_name: ''\n\
         source_type: 4\nsource_version: ''\nstart_time: {start_ms}\nstatus: {}\ntags: []\n\
         user_id: advsweep\n",
        file_uri(&final_exp_dir.join(&id).join("artifacts")),
        yaml_str(exp_id),
        yaml_str(&target.name),
        status(state),
    );
    write(&dir.join("meta.yaml"), &meta)?;
    std::fs::create_dir_all(dir.join("artifacts"))
        .with_context(|| format!("cannot create {}", dir.join("artifacts").display()))?;
    for (key, value) in trackers::params(report, target) {
        write(&dir.join("params").join(&key), &value)?;
    }
    let mut tags = vec![
        ("mlflow.runName", target.name.clone()),
        ("mlflow.user", "advsweep".to_owned()),
        ("advsweep.sweep_id", report.sweep_id.clone()),
        ("advsweep.sweep_name", report.name.clone()),
        ("advsweep.state", state.as_str().to_owned()),
    ];
    if let Some(run) = target.run {
        tags.push(("advsweep.run_id", run.run_id.clone()));
    }
    for (key, value) in tags {
        write(&dir.join("tags").join(key), &value)?;
    }
    // One file per metric key (a `/` in a key is a sub-directory, as MLflow writes it).
    let mut histories: Vec<(String, String)> = Vec::new();
    for p in &points {
        let line = format!(
            "{} {} {}\n",
            (p.wall_time * 1000.0) as i64,
            number(p.value),
            p.step
        );
        match histories.iter_mut().find(|(k, _)| *k == p.tag) {
            Some((_, text)) => text.push_str(&line),
            None => histories.push((p.tag.clone(), line)),
        }
    }
    for (key, text) in histories {
        let mut path = dir.join("metrics");
        for part in key.split('/') {
            path.push(part);
        }
        write(&path, &text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_shaped_like_mlflow_ids() {
        let e = experiment_id("s-abc");
        assert_eq!(e, experiment_id("s-abc"));
        assert_ne!(e, experiment_id("s-abd"));
        assert!(e.parse::<i64>().is_ok_and(|n| n >= 0), "{e}");
        let r = run_id("s-abc", "basic-standard-s0");
        assert_eq!(r.len(), 32);
        assert!(r.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(r, run_id("s-abc", "basic-standard-s1"));
    }

    #[test]
    fn yaml_and_uris_quote_what_they_must() {
        assert_eq!(yaml_str("it's: #1"), "'it''s: #1'");
        assert_eq!(
            experiment_name("artifact_location: x\nname: 'it''s: #1'\n").as_deref(),
            Some("it's: #1")
        );
        assert_eq!(
            experiment_name("name: Default\n").as_deref(),
            Some("Default")
        );
        assert_eq!(
            file_uri(Path::new("/tmp/a b/mlruns")),
            "file:///tmp/a%20b/mlruns"
        );
        assert_eq!(number(f64::NAN), "nan");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(f64::NEG_INFINITY), "-inf");
    }
}
