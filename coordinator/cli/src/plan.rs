//! `advsweep plan FILE`: the expansion, printed; nothing is written anywhere.

use std::path::Path;

use advsweep_core::{Attack, Defense, InferenceDefense};

use super::BadInput;
use advsweep_coordinator::sweep::{Overrides, load_plan};
use advsweep_report::epsilon;

pub fn defense_label(name: &str, defense: &Defense) -> String {
    match defense.epsilon() {
        Some(e) => format!("{name} (ε={})", epsilon::label(e)),
        None => name.to_owned(),
    }
}

/// `  defense=dncnn-10 (denoiser: 10 blocks, ε=0.15)` for a cell whose defense wraps the run's
/// classifier at inference; nothing for a bare cell (its run's defense is its own).
pub fn inference_label(name: &str, inference: &InferenceDefense) -> String {
    if inference.is_empty() {
        return String::new();
    }
    let mut parts = Vec::new();
    if let Some(sigma) = inference.inference_noise {
        parts.push(format!("inference noise σ={sigma}"));
    }
    if let Some(d) = &inference.denoiser {
        parts.push(format!(
            "denoiser: {} blocks, ε={}",
            d.blocks,
            epsilon::label(d.epsilon)
        ));
    }
    format!("  defense={name} ({})", parts.join(" + "))
}

/// The attack's kind (`clean` for none); a cascade lists its stages:
/// `autoattack: apgd-ce → apgd-t → fab-t → square`.
pub fn attack_label(attack: &Attack) -> String {
    match attack {
        Attack::None => "clean".to_owned(),
        Attack::AutoAttack { stages, .. } => format!(
            "{}: {}",
            attack.label(),
            stages
                .iter()
                .map(|s| match s.eot() {
                    1 => s.label(),
                    k => format!("{}-eot{k}", s.label()),
                })
                .collect::<Vec<_>>()
                .join(" → ")
        ),
        other => other.kind().to_owned(),
    }
}

/// `1 run`, `3 runs`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The model as the sweep file names it, with what it is when that is not its architecture:
/// `noisy-basic (basic, noise σ=0.1 at input)`.
fn model_label(run: &advsweep_core::RunSpec) -> String {
    let noise = run.model.noise.as_ref().map(|n| {
        format!(
            ", noise σ={}{} at {}",
            n.sigma,
            if n.learnable { " (learnable)" } else { "" },
            n.layers.join(", ")
        )
    });
    let file = run.model.file.as_ref().map(|f| {
        format!(
            "{} file sha256 {}…, {:.1} MB{}",
            if f.format == advsweep_core::ModelFormat::TorchScript {
                ""
            } else {
                ", weights"
            },
            &f.sha256[..12],
            f.bytes as f64 / 1e6,
            if f.normalize.is_some() {
                ", normalized input"
            } else {
                ""
            }
        )
    });
    if run.model_name == run.model.name && noise.is_none() && file.is_none() {
        run.model_name.clone()
    } else {
        format!(
            "{} ({}{}{})",
            run.model_name,
            run.model.name,
            noise.unwrap_or_default(),
            file.unwrap_or_default()
        )
    }
}

/// A cell's attack, its kind and, where gradients are averaged, its EOT samples.
fn cell_attack_label(attack: &Attack) -> String {
    match (attack, attack.eot()) {
        (Attack::AutoAttack { .. }, _) | (_, 1) => attack_label(attack),
        (_, k) => format!("{}, EOT {k}", attack_label(attack)),
    }
}

pub fn plan(file: &Path, data_path: Option<String>) -> anyhow::Result<()> {
    let plan = load_plan(
        file,
        &Overrides {
            data_path,
            ..Overrides::default()
        },
    )
    .map_err(|e| BadInput(e.to_string()))?;
    for problem in super::data_check::problems(&plan) {
        errln!(
            "advsweep: warning: {problem} (`advsweep run` would refuse it; a cluster's workers may see other paths)"
        );
    }
    outln!("sweep {} ({})", plan.name, plan.sweep_id);
    if !plan.description.is_empty() {
        outln!("  {}", plan.description.trim());
    }
    let shards = plan
        .runs
        .first()
        .and_then(|r| r.data.shard)
        .map(|s| {
            format!(
                "; each grid point's cells in {} shards, one run each, merged in reports",
                s.count
            )
        })
        .unwrap_or_default();
    outln!(
        "{} (training jobs), {} (evaluations{shards})",
        count(plan.runs.len(), "run", "runs"),
        count(plan.cells.len(), "cell", "cells")
    );
    outln!();
    for run in &plan.runs {
        let cells: Vec<_> = plan.cells_of(&run.id).collect();
        outln!(
            "run {}  model={} defense={} seed={}{} epochs={}  ({})",
            run.id,
            model_label(run),
            defense_label(&run.defense_name, &run.defense),
            run.seed,
            run.data
                .shard
                .map(|s| format!(" shard={}", s.label()))
                .unwrap_or_default(),
            run.training.epochs,
            count(cells.len(), "cell", "cells")
        );
        for cell in cells {
            outln!(
                "  cell {}  {} ({}) ε={}{}",
                cell.id,
                cell.attack_name,
                cell_attack_label(&cell.attack),
                epsilon::label(cell.epsilon),
                inference_label(&cell.defense_name, &cell.inference)
            );
        }
    }
    Ok(())
}
