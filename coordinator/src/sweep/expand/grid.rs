//! The grid → runs and cells: counted first (saturating, so a huge grid is refused before it is
//! built), then built in file order with content duplicates merged.

use std::collections::HashSet;

use advsweep_core::{
    CellId, CellSpec, DataShard, DataSpec, Defense, EpsilonSpace, RunId, RunSpec, TrainingSpec,
};

use super::SweepError;
use super::attacks::AttackTemplate;
use super::check::Validator;
use super::defenses::ResolvedDefense;
use super::models::ResolvedModel;
use crate::sweep::ids::{self, RunIdentity};

/// The resolved axes of a grid and what every run shares.
pub(super) struct Grid {
    pub(super) models: Vec<ResolvedModel>,
    pub(super) defenses: Vec<ResolvedDefense>,
    pub(super) attacks: Vec<(String, AttackTemplate)>,
    pub(super) epsilons: Vec<f64>,
    pub(super) seeds: Vec<u64>,
    pub(super) training: TrainingSpec,
    pub(super) data: DataSpec,
    pub(super) epsilon_space: EpsilonSpace,
    /// What `eot = "auto"` means against a randomized model.
    pub(super) auto_eot: u32,
    /// Slices each grid point's evaluation is split into (1: unsharded).
    pub(super) shards: u32,
}

impl Grid {
    /// Runs and cells the grid asks for, before duplicates are merged (so never fewer than the
    /// plan will hold), in saturating arithmetic: a file listing 10⁴ models × 10⁴ ε is counted,
    /// not built.
    pub(super) fn count_cells(&self) -> u64 {
        let n = |x: usize| u64::try_from(x).unwrap_or(u64::MAX);
        let clean = n(self
            .attacks
            .iter()
            .filter(|(_, a)| a.attack.is_none())
            .count());
        let attacked = n(self.attacks.len()).saturating_sub(clean);
        let epsilons = n(self.epsilons.len());
        self.defenses.iter().fold(0u64, |total, d| {
            let (runs_per_seed, cells_per_run) = if d.tied() {
                // One run per ε, each evaluated at its ε only.
                (epsilons, clean.saturating_add(attacked))
            } else {
                (1, clean.saturating_add(attacked.saturating_mul(epsilons)))
            };
            total.saturating_add(
                n(self.models.len())
                    .saturating_mul(n(self.seeds.len()))
                    .saturating_mul(runs_per_seed)
                    .saturating_mul(cells_per_run)
                    .saturating_mul(u64::from(self.shards.max(1))),
            )
        })
    }

    /// The runs and cells, in file order (model, defense, seed, tied ε; attack, ε), duplicates
    /// merged; each is checked as a worker will check it.
    pub(super) fn build(&self, v: &Validator) -> Result<(Vec<RunSpec>, Vec<CellSpec>), SweepError> {
        let mut run_seen: HashSet<RunId> = HashSet::new();
        let mut cell_seen: HashSet<CellId> = HashSet::new();
        let mut runs = Vec::new();
        let mut cells = Vec::new();
        for model in &self.models {
            for defense in &self.defenses {
                let variants = self.variants(defense);
                for seed in &self.seeds {
                    for ((defense_spec, tied), data) in variants
                        .iter()
                        .flat_map(|v| self.shard_data().into_iter().map(move |d| (v, d)))
                    {
                        let id = RunIdentity {
                            model: &model.model,
                            defense: defense_spec,
                            training: &self.training,
                            data: &data,
                            seed: *seed,
                            epsilon_space: self.epsilon_space,
                        }
                        .id();
                        if !run_seen.insert(id.clone()) {
                            continue;
                        }
                        let run = RunSpec {
                            id,
                            model_name: model.name.clone(),
                            model: model.model.clone(),
                            defense_name: defense.name.clone(),
                            defense: defense_spec.clone(),
                            training: self.training.clone(),
                            data,
                            seed: *seed,
                            epsilon_space: self.epsilon_space,
                        };
                        v.rule(None, run.validate())?;
                        for cell in self.cells_of(&run, *tied) {
                            if cell_seen.insert(cell.id.clone()) {
                                let at = format!("attack `{}`", cell.attack_name);
                                v.rule(Some(&at), cell.validate_in(run.epsilon_space))?;
                                cells.push(cell);
                            }
                        }
                        runs.push(run);
                    }
                }
            }
        }
        Ok((runs, cells))
    }

    /// The data of each shard of a grid point: the grid's data once when unsharded, else once
    /// per slice ([`advsweep_core::DataShard`]), each a run of its own.
    fn shard_data(&self) -> Vec<DataSpec> {
        if self.shards <= 1 {
            return vec![self.data.clone()];
        }
        (0..self.shards)
            .map(|index| DataSpec {
                shard: Some(DataShard {
                    index,
                    count: self.shards,
                }),
                ..self.data.clone()
            })
            .collect()
    }

    /// The defense once, or once per grid ε it is tied to: (defense, the tied ε if any).
    fn variants(&self, defense: &ResolvedDefense) -> Vec<(Defense, Option<f64>)> {
        if defense.tied() {
            self.epsilons
                .iter()
                .map(|e| (defense.build(*e), Some(*e)))
                .collect()
        } else {
            vec![(defense.build(0.0), None)]
        }
    }

    /// The cells of `run`: every attack at every grid ε, or only at the ε its defense is tied
    /// to; the clean attack once (labelled with the tied ε, else 0).
    fn cells_of(&self, run: &RunSpec, tied: Option<f64>) -> Vec<CellSpec> {
        let randomized = run.randomized();
        let mut cells = Vec::new();
        for (attack_name, template) in &self.attacks {
            let attack = template.resolve(randomized, self.auto_eot);
            let cell_epsilons: Vec<f64> = match (attack.is_none(), tied) {
                (_, Some(e)) => vec![e],
                (true, None) => vec![0.0],
                (false, None) => self.epsilons.clone(),
            };
            for epsilon in cell_epsilons {
                cells.push(CellSpec {
                    id: ids::cell_id(&run.id, &attack, epsilon),
                    run_id: run.id.clone(),
                    attack_name: attack_name.clone(),
                    attack: attack.clone(),
                    epsilon,
                });
            }
        }
        cells
    }
}
