//! Long-format exports, one row per cell and one per epoch, ready for pandas
//! (`pd.read_csv("cells.csv")`), and the same as JSON.
//!
//! Units, as the columns of `cells.csv` say them: rates (`accuracy`, `attack_success_rate`,
//! a stage's accuracy) are fractions in [0, 1] (`attack_success_rate` is empty for a clean
//! cell: there is no attack to succeed); `epsilon` and `defense_epsilon` are in the
//! run's `epsilon_space` (`pixel`: images in [0, 1]; `normalized`: after the per-channel
//! standardization), `epsilon_label` the same ε as the tables print it (`8/255`); the
//! perturbation sizes `mean_linf` and `mean_l2` are always measured in pixel units, whatever
//! the space of ε. Numbers carry at most nine decimals (no float noise).

use std::fmt::Write as _;

use super::pivot::csv_field;
use super::records::SweepReport;

/// A number as Rust prints it: the shortest text that reads back to the same `f64` (so an ε
/// of 2/255 survives a round trip through the CSV exactly).
fn num(v: f64) -> String {
    v.to_string()
}

fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_default()
}

/// `cells.csv`: every cell, finished or not.
pub fn cells_csv(r: &SweepReport) -> String {
    let mut out = String::from(
        "sweep_id,run_id,cell_id,model,defense,defense_epsilon,seed,attack,epsilon,epsilon_space,epsilon_label,state,accuracy,attack_success_rate,mean_linf,mean_l2,images_per_second,seconds,examples,error,stages,attack_norm,attack_spec,shards\n",
    );
    for c in &r.cells {
        let res = c.result.as_ref();
        let fields = [
            csv_field(&r.sweep_id),
            csv_field(&c.run_id),
            csv_field(&c.cell_id),
            csv_field(&c.model),
            csv_field(&c.defense),
            opt(c.defense_epsilon),
            c.seed.to_string(),
            csv_field(&c.attack),
            num(c.epsilon),
            c.epsilon_space.as_str().to_owned(),
            csv_field(&super::epsilon::label_in(c.epsilon, c.epsilon_space)),
            csv_field(c.state.as_str()),
            opt(res.map(|x| x.accuracy)),
            // Only for attacks: see `Metric::AttackSuccessRate`.
            opt(res.filter(|_| !c.is_clean()).map(|x| x.attack_success_rate)),
            opt(res.map(|x| x.mean_linf)),
            opt(res.map(|x| x.mean_l2)),
            opt(res.map(|x| x.images_per_second)),
            opt(res.map(|x| x.seconds)),
            res.map(|x| x.examples.to_string()).unwrap_or_default(),
            csv_field(c.error.as_deref().unwrap_or("")),
            // A cascade's accuracy after each stage: `apgd-ce=0.451;apgd-t=0.443;…`.
            csv_field(
                &res.map(|x| {
                    x.stages
                        .iter()
                        .map(|s| format!("{}={}", s.name, num(s.accuracy)))
                        .collect::<Vec<_>>()
                        .join(";")
                })
                .unwrap_or_default(),
            ),
            // The attack as resolved: its norm, and every parameter as JSON.
            c.attack_spec
                .as_ref()
                .and_then(|a| a.norm())
                .map_or("", |n| n.as_str())
                .to_owned(),
            csv_field(
                &c.attack_spec
                    .as_ref()
                    .and_then(|a| serde_json::to_string(a).ok())
                    .unwrap_or_default(),
            ),
            c.shards.to_string(),
        ];
        let _ = writeln!(out, "{}", fields.join(","));
    }
    out
}

/// `epochs.csv`: every epoch of every run (the learning curves).
pub fn epochs_csv(r: &SweepReport) -> String {
    let mut out = String::from(
        "sweep_id,run_id,model,defense,defense_epsilon,seed,epoch,train_loss,train_accuracy,test_accuracy,seconds,images_per_second\n",
    );
    for run in &r.runs {
        for e in &run.epochs {
            let fields = [
                csv_field(&r.sweep_id),
                csv_field(&run.run_id),
                csv_field(&run.model),
                csv_field(&run.defense),
                opt(run.defense_epsilon),
                run.seed.to_string(),
                e.epoch.to_string(),
                num(e.train_loss),
                num(e.train_accuracy),
                num(e.test_accuracy),
                num(e.seconds),
                num(e.images_per_second),
            ];
            let _ = writeln!(out, "{}", fields.join(","));
        }
    }
    out
}

/// `sweep.json`: the whole report (runs with epochs and warnings, cells with results).
/// NaN metrics (a diverged loss) become `null`.
pub fn json(r: &SweepReport) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
