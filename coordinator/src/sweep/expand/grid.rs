//! The grid → runs and cells: counted first (saturating, so a huge grid is refused before it is
//! built), then built in file order with content duplicates merged.

use std::collections::HashSet;

use advsweep_core::{
    CellId, CellSpec, DataShard, DataSpec, Defense, EpsilonSpace, InferenceDefense, RunId, RunSpec,
    TrainingSpec,
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

    /// The runs and cells, in file order (model, defense, seed, tied ε; attack, ε), duplicates
    /// merged; each is checked as a worker will check it. Defense presets that train the same
    /// classifier (`standard`, `noise-injection`, `dncnn`) share its run: their cells differ
    /// by what wraps it at evaluation.
    pub(super) fn build(&self, v: &Validator) -> Result<(Vec<RunSpec>, Vec<CellSpec>), SweepError> {
        let mut run_seen: HashSet<RunId> = HashSet::new();
        let mut cell_seen: HashSet<CellId> = HashSet::new();
        let mut runs = Vec::new();
        let mut cells = Vec::new();
        for model in &self.models {
            for defense in &self.defenses {
                let variants = self.variants(defense);
                for seed in &self.seeds {
                    for ((defense_spec, inference, tied), data) in variants
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
                        let run = RunSpec {
                            id,
                            model_name: model.name.clone(),
                            model: model.model.clone(),
                            defense_name: self.classifier_label(defense, defense_spec, *tied),
                            defense: defense_spec.clone(),
                            training: self.training.clone(),
                            data,
                            seed: *seed,
                            epsilon_space: self.epsilon_space,
                        };
                        if run_seen.insert(run.id.clone()) {
                            v.rule(None, run.validate())?;
                            runs.push(run.clone());
                        }
                        for cell in self.cells_of(&run, &defense.name, inference, *tied) {
                            if cell_seen.insert(cell.id.clone()) {
                                let at = format!("attack `{}`", cell.attack_name);
                                v.rule(Some(&at), cell.validate_in_run(&run))?;
                                cells.push(cell);
                            }
                        }
                    }
                }
            }
        }
        Ok((runs, cells))
    }

    /// How the run of a preset's classifier is labelled: the preset's name when nothing wraps
    /// it; else the first grid preset, or built-in one, that trains the same classifier
    /// bare (`dncnn` and `noise-injection` → `standard`, `at-fgsm-noise` → `at-fgsm`); else
    /// the preset's own name.
    fn classifier_label(
        &self,
        preset: &ResolvedDefense,
        defense: &Defense,
        tied: Option<f64>,
    ) -> String {
        if !preset.wraps() {
            return preset.name.clone();
        }
        let tied = tied.unwrap_or(0.0);
        let in_grid = self
            .defenses
            .iter()
            .find(|p| !p.wraps() && p.build(tied).0 == *defense)
            .map(|p| p.name.clone());
        let shadowed = |name: &str| self.defenses.iter().any(|p| p.name == name);
        in_grid
            .or_else(|| {
                advsweep_core::catalogue::presets::DEFENSES
                    .iter()
                    .find(|p| {
                        p.inference_noise.is_none()
                            && !p.denoiser
                            && !shadowed(p.name)
                            && p.build(tied).0 == *defense
                    })
                    .map(|p| p.name.to_owned())
            })
            .unwrap_or_else(|| preset.name.clone())
    }

    /// The defense once, or once per grid ε it is tied to: (how the classifier is trained,
    /// what wraps it, the tied ε if any).
    fn variants(&self, defense: &ResolvedDefense) -> Vec<(Defense, InferenceDefense, Option<f64>)> {
        if defense.tied() {
            self.epsilons
                .iter()
                .map(|e| {
                    let (method, inference) = defense.build(*e);
                    (method, inference, Some(*e))
                })
                .collect()
        } else {
            let (method, inference) = defense.build(0.0);
            vec![(method, inference, None)]
        }
    }

    /// The cells of `run` for the defense preset `defense_name` (wrapping its classifier in
    /// `inference`): every attack at every grid ε, or only at the ε the defense is tied to;
    /// the clean attack once (labelled with the tied ε, else 0).
    fn cells_of(
        &self,
        run: &RunSpec,
        defense_name: &str,
        inference: &InferenceDefense,
        tied: Option<f64>,
    ) -> Vec<CellSpec> {
        let randomized = run.randomized_with(inference);
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
                    id: ids::cell_id(&run.id, &attack, epsilon, inference),
                    run_id: run.id.clone(),
                    attack_name: attack_name.clone(),
                    attack: attack.clone(),
                    epsilon,
                    defense_name: defense_name.to_owned(),
                    inference: inference.clone(),
                });
            }
        }
        cells
    }
}
