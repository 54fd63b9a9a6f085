//! What `advsweep export tensorboard` and `advsweep export mlflow` share: the sweep read from
//! the state directory (read-only, like `export weights`) into the records `advsweep report`
//! prints (`grpc::rows::sweep_report`: sharded cells merged), split into *targets*, and each
//! target's scalars under one set of names.
//!
//! A target is one trained classifier as one defense evaluates it: (run, the cell's defense,
//! its ε). Usually that is one run; inference-only defenses (`noise-injection`, a denoiser)
//! that share a run's classifier are targets of their own, so a tracker shows them side by side
//! like the report's columns. A run's learning curves go to the target of its own defense.
//!
//! Scalar names (TensorBoard tags and MLflow metric keys alike):
//! * per epoch, step = the epoch (1-based): `train/loss`, `train/accuracy`, `test/accuracy`
//!   (clean accuracy on the evaluation subset), `train/images_per_second`,
//!   `train/epoch_seconds`;
//! * per finished cell, step = its ε (see [`EpsilonSteps`]): `cells/<attack>/accuracy`,
//!   `cells/<attack>/attack_success_rate` (not for the clean `none` cell),
//!   `cells/<attack>/mean_linf`, `cells/<attack>/mean_l2` (pixel units),
//!   `cells/<attack>/epsilon` (the exact ε, in the run's `epsilon_space`), and for a cascade
//!   `cells/<attack>/stages/<stage>` (the accuracy after each stage).
//!
//! Times: the export has no clock of the training, so an epoch's time is the export's time
//! plus the seconds of the epochs before it and itself (a tracker's "relative" axis is then
//! training time); cells come after the run's last epoch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use advsweep_coordinator::grpc::{convert, rows};
use advsweep_coordinator::store::{SqliteStore, StateStore};
use advsweep_core::{EpsilonSpace, ShownState, SweepId};
use advsweep_report::plots::slug;
use advsweep_report::records::{CellRecord, RunRecord, SweepReport};

use super::BadInput;
use super::source::pick_sweep;

#[derive(Debug, Clone, clap::Args)]
pub struct TrackerArgs {
    /// A sweep id or name (the newest sweep of that name).
    pub sweep: String,
    /// Directory to write into (created if needed).
    #[arg(long)]
    pub out: PathBuf,
    /// The coordinator's state directory (default ./advsweep-state, where `advsweep run`
    /// writes).
    #[arg(long, default_value = "advsweep-state")]
    pub state_dir: PathBuf,
}

/// The sweep `args.sweep` names, as `advsweep report` sees it.
pub fn load(args: &TrackerArgs) -> anyhow::Result<SweepReport> {
    let store =
        SqliteStore::open_read_only(&args.state_dir).map_err(|e| BadInput(e.to_string()))?;
    let summaries: Vec<_> = store.list_sweeps()?.iter().map(convert::summary).collect();
    let sweep_id = pick_sweep(&summaries, &args.sweep)?;
    let sweep_id = SweepId::new(sweep_id).map_err(|e| BadInput(e.to_string()))?;
    let detail = convert::detail(&store.sweep_detail(&sweep_id)?);
    rows::sweep_report(&detail)
}

/// One classifier under one defense: a TensorBoard run directory, an MLflow run.
#[derive(Debug)]
pub struct Target<'a> {
    /// Unique within the export, file-name safe: `<model>-<defense>[-eps<k>_255]-s<seed>`.
    pub name: String,
    pub model: String,
    pub defense: String,
    pub defense_epsilon: Option<f64>,
    pub seed: u64,
    pub epsilon_space: EpsilonSpace,
    /// The run whose classifier this is (absent only for cells of a run the sweep lacks).
    pub run: Option<&'a RunRecord>,
    /// Whether the run's learning curves belong here (the run's own defense).
    pub trains: bool,
    /// The target's cells, by attack then ε.
    pub cells: Vec<&'a CellRecord>,
}

impl Target<'_> {
    /// The target's state: failed or cancelled if its run or any cell is, done when the run
    /// and every cell are, else running (or pending when nothing has started).
    pub fn state(&self) -> ShownState {
        let states = self
            .run
            .map(|r| r.state)
            .into_iter()
            .chain(self.cells.iter().map(|c| c.state));
        let states: Vec<ShownState> = states.collect();
        if states.contains(&ShownState::Failed) {
            ShownState::Failed
        } else if states.contains(&ShownState::Cancelled) {
            ShownState::Cancelled
        } else if states.iter().all(|s| *s == ShownState::Done) {
            ShownState::Done
        } else if states.iter().all(|s| *s == ShownState::Pending) {
            ShownState::Pending
        } else {
            ShownState::Running
        }
    }
}

fn finite_or_zero(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 { v } else { 0.0 }
}

/// The report's runs and cells as targets, in the report's order (runs first, then targets
/// that only cells name).
pub fn targets(r: &SweepReport) -> Vec<Target<'_>> {
    let mut out: Vec<Target<'_>> = Vec::new();
    let mut index: HashMap<(String, String, Option<u64>), usize> = HashMap::new();
    let runs: HashMap<&str, &RunRecord> = r.runs.iter().map(|x| (x.run_id.as_str(), x)).collect();
    for run in &r.runs {
        let key = (
            run.run_id.clone(),
            run.defense.clone(),
            run.defense_epsilon.map(f64::to_bits),
        );
        index.entry(key).or_insert_with(|| {
            out.push(Target {
                name: String::new(),
                model: run.model.clone(),
                defense: run.defense.clone(),
                defense_epsilon: run.defense_epsilon,
                seed: run.seed,
                epsilon_space: run.epsilon_space,
                run: Some(run),
                trains: true,
                cells: Vec::new(),
            });
            out.len() - 1
        });
    }
    for cell in &r.cells {
        let key = (
            cell.run_id.clone(),
            cell.defense.clone(),
            cell.defense_epsilon.map(f64::to_bits),
        );
        let i = *index.entry(key).or_insert_with(|| {
            out.push(Target {
                name: String::new(),
                model: cell.model.clone(),
                defense: cell.defense.clone(),
                defense_epsilon: cell.defense_epsilon,
                seed: cell.seed,
                epsilon_space: cell.epsilon_space,
                run: runs.get(cell.run_id.as_str()).copied(),
                trains: false,
                cells: Vec::new(),
            });
            out.len() - 1
        });
        out[i].cells.push(cell);
    }
    let mut taken: HashMap<String, usize> = HashMap::new();
    for t in &mut out {
        t.cells.sort_by(|a, b| {
            a.attack
                .cmp(&b.attack)
                .then(a.epsilon.total_cmp(&b.epsilon))
        });
        let mut stem = format!("{}-{}", t.model, t.defense);
        if let Some(e) = t.defense_epsilon {
            let label = advsweep_report::epsilon::label_in(e, t.epsilon_space);
            stem.push_str(&format!("-eps{}", label.replace('/', "_")));
        }
        stem.push_str(&format!("-s{}", t.seed));
        let mut name = slug(&stem);
        // Two runs alike in all four (two model files of one name, say): the run id tells
        // them apart.
        let seen = taken.entry(name.clone()).or_insert(0);
        *seen += 1;
        if *seen > 1 {
            let id = t.run.map_or("", |r| r.run_id.as_str());
            name = slug(&format!("{name}-{id}-{seen}"));
        }
        t.name = name;
    }
    out
}

/// Cells' integer steps from their ε: `round(ε × 255 × scale)`, so the usual k/255 budgets
/// are steps k (8/255 → 8) with `scale` 1. When that would give two different ε of the sweep
/// one step (½/255 beside 1/255, or close normalized budgets), `scale` is the smallest power of
/// ten that keeps them apart (at most 10⁶); the exact ε is always its own scalar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpsilonSteps {
    pub scale: f64,
}

impl EpsilonSteps {
    pub fn for_report(r: &SweepReport) -> EpsilonSteps {
        EpsilonSteps::for_epsilons(r.cells.iter().map(|c| c.epsilon))
    }

    fn for_epsilons(epsilons: impl Iterator<Item = f64>) -> EpsilonSteps {
        let mut eps: Vec<f64> = epsilons.collect();
        eps.sort_by(f64::total_cmp);
        eps.dedup();
        let mut scale = 1.0;
        while scale < 1e6 {
            let steps = EpsilonSteps { scale };
            let mut s: Vec<i64> = eps.iter().map(|&e| steps.step(e)).collect();
            s.dedup();
            if s.len() == eps.len() {
                break;
            }
            scale *= 10.0;
        }
        EpsilonSteps { scale }
    }

    pub fn step(&self, epsilon: f64) -> i64 {
        let v = (epsilon * 255.0 * self.scale).round();
        if v.is_finite() { v as i64 } else { 0 }
    }
}

/// One scalar point of a target.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub tag: String,
    pub step: i64,
    pub value: f64,
    /// Unix time, seconds.
    pub wall_time: f64,
}

/// A name part (an attack, a cascade stage) safe in a tag or metric key (no `/`).
pub fn part(s: &str) -> String {
    slug(s)
}

/// The target's scalars in writing order: epochs in order, then the cells by step (so every
/// tag's steps only grow, as TensorBoard's reader wants).
pub fn points(t: &Target<'_>, steps: EpsilonSteps, t0: f64) -> Vec<Point> {
    let mut out = Vec::new();
    let mut clock = t0;
    if let Some(run) = t.run {
        for e in &run.epochs {
            clock += finite_or_zero(e.seconds);
            if !t.trains {
                continue;
            }
            let step = i64::from(e.epoch);
            for (tag, value) in [
                ("train/loss", e.train_loss),
                ("train/accuracy", e.train_accuracy),
                ("test/accuracy", e.test_accuracy),
                ("train/images_per_second", e.images_per_second),
                ("train/epoch_seconds", e.seconds),
            ] {
                out.push(Point {
                    tag: tag.to_owned(),
                    step,
                    value,
                    wall_time: clock,
                });
            }
        }
    }
    let mut cells: Vec<(i64, &CellRecord)> = t
        .cells
        .iter()
        .filter(|c| c.result.is_some())
        .map(|c| (steps.step(c.epsilon), *c))
        .collect();
    cells.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.attack.cmp(&b.1.attack)));
    for (step, c) in cells {
        let Some(res) = c.result.as_ref() else {
            continue;
        };
        let prefix = format!("cells/{}", part(&c.attack));
        let mut add = |name: &str, value: f64| {
            out.push(Point {
                tag: format!("{prefix}/{name}"),
                step,
                value,
                wall_time: clock,
            });
        };
        add("accuracy", res.accuracy);
        if !c.is_clean() {
            add("attack_success_rate", res.attack_success_rate);
        }
        add("mean_linf", res.mean_linf);
        add("mean_l2", res.mean_l2);
        add("epsilon", c.epsilon);
        for s in &res.stages {
            add(&format!("stages/{}", part(&s.name)), s.accuracy);
        }
    }
    out
}

/// The target's parameters, as text: who it is, then the run's resolved spec flattened
/// (`spec.training.epochs`, …) and the cells' inference defense (`inference.…`).
pub fn params(r: &SweepReport, t: &Target<'_>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![
        ("model".into(), t.model.clone()),
        ("defense".into(), t.defense.clone()),
        ("seed".into(), t.seed.to_string()),
        ("epsilon_space".into(), t.epsilon_space.as_str().to_owned()),
    ];
    if let Some(e) = t.defense_epsilon {
        out.push(("defense_epsilon".into(), e.to_string()));
        out.push((
            "defense_epsilon_label".into(),
            advsweep_report::epsilon::label_in(e, t.epsilon_space),
        ));
    }
    out.push(("sweep".into(), r.name.clone()));
    if let Some(run) = t.run {
        out.push(("training_defense".into(), run.defense.clone()));
        if run.shards > 1 {
            out.push(("shards".into(), run.shards.to_string()));
        }
        if let Some(spec) = &run.spec
            && let Ok(json) = serde_json::to_value(spec)
        {
            flatten("spec", &json, &mut out);
        }
    }
    if let Some(c) = t.cells.iter().find(|c| !c.inference.is_empty())
        && let Ok(json) = serde_json::to_value(&c.inference)
    {
        flatten("inference", &json, &mut out);
    }
    // What the spec repeats of the above (and its id, the run's own).
    let repeated = [
        "spec.id",
        "spec.model_name",
        "spec.defense_name",
        "spec.seed",
        "spec.epsilon_space",
    ];
    out.retain(|(k, _)| !repeated.contains(&k.as_str()));
    out
}

/// `value` as `prefix.key…` pairs: objects descend, everything else is its JSON text (strings
/// bare); nulls are left out.
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Null => {}
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                flatten(&format!("{prefix}.{}", part(k)), v, out);
            }
        }
        serde_json::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

/// Now, Unix seconds.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `dir`, created (with its parents) if needed, as an error that names it otherwise.
pub fn create_out(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create the output directory {}: {e}", dir.display()))
}

/// An error for a sweep with nothing a tracker could show yet.
pub fn nothing_yet(r: &SweepReport) -> BadInput {
    BadInput(format!(
        "sweep {} ({}) has no epoch and no finished cell yet: nothing to export",
        r.sweep_id, r.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_over_255_budgets_are_steps_k_and_close_budgets_get_a_finer_scale() {
        let steps = EpsilonSteps::for_epsilons([0.0, 2.0 / 255.0, 8.0 / 255.0].into_iter());
        assert_eq!(steps.scale, 1.0);
        assert_eq!(steps.step(8.0 / 255.0), 8);
        assert_eq!(steps.step(0.0), 0);
        let steps = EpsilonSteps::for_epsilons([0.5 / 255.0, 1.0 / 255.0, 1.0 / 255.0].into_iter());
        assert_eq!(steps.scale, 10.0);
        assert_eq!((steps.step(0.5 / 255.0), steps.step(1.0 / 255.0)), (5, 10));
        // Normalized budgets 0.030 and 0.031 are 7.65 and 7.9 × 1/255.
        let steps = EpsilonSteps::for_epsilons([0.030, 0.031].into_iter());
        assert_eq!(steps.scale, 10.0);
        assert_eq!(steps.step(f64::NAN), 0);
    }

    #[test]
    fn flattened_params_descend_objects_and_skip_nulls() {
        let mut out = Vec::new();
        let json = serde_json::json!({
            "epochs": 2, "optimizer": {"kind": "sgd", "nesterov": false}, "gone": null,
            "layers": [1, 2], "odd key/": "x"
        });
        flatten("spec", &json, &mut out);
        out.sort();
        let keys: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "spec.epochs",
                "spec.layers",
                "spec.odd_key_",
                "spec.optimizer.kind",
                "spec.optimizer.nesterov"
            ]
        );
        assert_eq!(out[1].1, "[1,2]");
        assert_eq!(out[3].1, "sgd");
    }
}
