//! `advsweep plan FILE`: the expansion, printed; nothing is written anywhere.

use std::path::Path;

use advsweep_core::{Attack, Defense};

use super::BadInput;
use advsweep_coordinator::sweep::{Overrides, load_plan};
use advsweep_report::epsilon;

pub fn defense_label(name: &str, defense: &Defense) -> String {
    match defense.epsilon() {
        Some(e) => format!("{name} (ε={})", epsilon::label(e)),
        None => name.to_owned(),
    }
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

pub fn plan(file: &Path, data_path: Option<String>) -> anyhow::Result<()> {
    let plan = load_plan(file, &Overrides { data_path }).map_err(|e| BadInput(e.to_string()))?;
    outln!("sweep {} ({})", plan.name, plan.sweep_id);
    if !plan.description.is_empty() {
        outln!("  {}", plan.description.trim());
    }
    outln!(
        "{} runs (training jobs), {} cells (evaluations)",
        plan.runs.len(),
        plan.cells.len()
    );
    outln!();
    for run in &plan.runs {
        let cells: Vec<_> = plan.cells_of(&run.id).collect();
        outln!(
            "run {}  model={} defense={} seed={} epochs={}  ({} cells)",
            run.id,
            run.model.name,
            defense_label(&run.defense_name, &run.defense),
            run.seed,
            run.training.epochs,
            cells.len()
        );
        for cell in cells {
            outln!(
                "  cell {}  {} ({}) ε={}",
                cell.id,
                cell.attack_name,
                attack_label(&cell.attack),
                epsilon::label(cell.epsilon)
            );
        }
    }
    Ok(())
}
