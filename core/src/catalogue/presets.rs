//! The built-in presets: model, attack and defense names a sweep file can use without defining
//! them (its `[models.NAME]`, `[attacks.NAME]` and `[defenses.NAME]` tables add presets or shadow
//! these), and the worker's bench measures. Each table below is the one list of its names.

use super::defaults::{
    ADVERSARIAL_FRACTION, DENOISER_ATTACK, DENOISER_BLOCKS, DENOISER_CHANNELS, DENOISER_EPOCHS,
    DENOISER_LEARNING_RATE, FGSM_STEP_FRACTION, MIXED_L2_ATTACK, MIXED_LINF_ATTACK, PGD_RESTARTS,
    PGD_STEPS, pgd_step_fraction,
};
use super::defaults::{
    APGD_STEPS, ATTACK_TARGETS, FAB_STEPS, PLUS_RESTARTS, RAND_EOT_SAMPLES, SQUARE_P_INIT,
    SQUARE_QUERIES,
};
use super::{ARCHITECTURES, Arch, HIDDEN_POINTS};
use crate::{
    ApgdLoss, Attack, CascadeVersion, Defense, DenoiserSpec, InferenceDefense, MixStrategy, Model,
    NoiseInjection, Norm, StepSize, TrainingMethod,
};
use std::sync::LazyLock;

/// `noisy-<model>`: the model with noise in every hidden injection point.
pub const NOISY_PREFIX: &str = "noisy-";
/// σ of the built-in `noisy-*` models (relative to each hidden layer's output std).
pub const NOISY_SIGMA: f64 = 0.1;
/// σ of the built-in inference-noise defenses (pixel units).
pub const INFERENCE_NOISE_SIGMA: f64 = 0.05;

/// The built-in model names, for error messages.
pub const MODEL_NAMES: [&str; 6] = [
    ARCHITECTURES[0],
    ARCHITECTURES[1],
    ARCHITECTURES[2],
    ARCHITECTURES[3],
    ARCHITECTURES[4],
    "noisy-<model>",
];

/// `basic`, `resnet18`, `wrn-D-K`, `vgg11`, `vgg16`, and `noisy-<any of those>` (noise in every
/// hidden injection point, σ = [`NOISY_SIGMA`]).
pub fn model(name: &str) -> Option<Model> {
    if let Some(arch_name) = name.strip_prefix(NOISY_PREFIX) {
        let arch = Arch::parse(arch_name).ok()?;
        return Some(Model {
            name: arch_name.to_owned(),
            noise: Some(NoiseInjection {
                sigma: NOISY_SIGMA,
                layers: arch.noise_layers(&[HIDDEN_POINTS.to_owned()]).ok()?,
                learnable: false,
            }),
            file: None,
        });
    }
    Arch::parse(name).ok()?;
    Some(Model::plain(name))
}

/// A named attack. Its `eot` is 1 (but `autoattack-rand`'s, the reference's 20): how many
/// gradient samples it takes against a randomized model is the resolver's choice
/// (`eot = "auto"`).
#[derive(Debug, Clone, PartialEq)]
pub struct AttackPreset {
    pub name: &'static str,
    pub attack: Attack,
}

const fn fgsm(norm: Norm, random_start: bool, step_fraction: f64) -> Attack {
    Attack::Fgsm {
        norm,
        random_start,
        step_fraction,
        eot: 1,
    }
}

/// PGD with the default step (2.5 ε / steps), a random start and one restart.
const fn pgd(norm: Norm, steps: u32) -> Attack {
    Attack::Pgd {
        norm,
        steps,
        step: StepSize::FractionOfEpsilon(pgd_step_fraction(steps)),
        random_start: true,
        restarts: PGD_RESTARTS,
        eot: 1,
    }
}

/// `fgsm`: one signed-gradient step of ε, no random start.
pub const FGSM: Attack = fgsm(Norm::Linf, false, FGSM_STEP_FRACTION);
/// `pgd-linf`: PGD-10 ℓ∞, step 2.5 ε / 10, random start, one restart.
pub const PGD_LINF: Attack = pgd(Norm::Linf, PGD_STEPS);

/// APGD with the reference's budget (100 steps, one run).
const fn apgd(norm: Norm, loss: ApgdLoss, targets: u32) -> Attack {
    apgd_runs(norm, loss, targets, 1)
}

/// APGD with the reference's 100 steps and `restarts` runs.
const fn apgd_runs(norm: Norm, loss: ApgdLoss, targets: u32, restarts: u32) -> Attack {
    Attack::Apgd {
        norm,
        loss,
        targets,
        steps: APGD_STEPS,
        restarts,
        eot: 1,
    }
}

/// FAB with the reference's budget (100 steps): FAB-T with `targets` > 0, untargeted with 0.
const fn fab(norm: Norm, targets: u32, restarts: u32) -> Attack {
    Attack::Fab {
        norm,
        targets,
        steps: FAB_STEPS,
        restarts,
        eot: 1,
    }
}

/// FAB-T with the reference's budget (100 steps, 9 targets, one run).
const fn fab_t(norm: Norm) -> Attack {
    fab(norm, ATTACK_TARGETS, 1)
}

/// Square with the reference's budget (5,000 queries, p_init 0.8, one run).
const fn square(norm: Norm) -> Attack {
    Attack::Square {
        norm,
        queries: SQUARE_QUERIES,
        p_init: SQUARE_P_INIT,
        restarts: 1,
    }
}

/// The stages of AutoAttack's `standard` version (APGD-CE, APGD-T, FAB-T, Square) for `norm`.
pub fn standard_stages(norm: Norm) -> Vec<Attack> {
    vec![
        apgd(norm, ApgdLoss::Ce, 0),
        apgd(norm, ApgdLoss::Dlr, ATTACK_TARGETS),
        fab_t(norm),
        square(norm),
    ]
}

/// The stages of AutoAttack's `rand` version (APGD-CE, APGD-DLR, each with
/// [`RAND_EOT_SAMPLES`] gradient samples) for `norm`.
pub fn rand_stages(norm: Norm) -> Vec<Attack> {
    [ApgdLoss::Ce, ApgdLoss::Dlr]
        .into_iter()
        .map(|loss| apgd(norm, loss, 0).with_eot(RAND_EOT_SAMPLES))
        .collect()
}

/// The stages of AutoAttack's `plus` version for `norm`, in the reference's order: APGD-CE and
/// APGD-DLR with [`PLUS_RESTARTS`] restarts, untargeted FAB with [`PLUS_RESTARTS`] restarts,
/// Square (5,000 queries), APGD-T and FAB-T (9 targets, one run each); 100 steps each.
pub fn plus_stages(norm: Norm) -> Vec<Attack> {
    vec![
        apgd_runs(norm, ApgdLoss::Ce, 0, PLUS_RESTARTS),
        apgd_runs(norm, ApgdLoss::Dlr, 0, PLUS_RESTARTS),
        fab(norm, 0, PLUS_RESTARTS),
        square(norm),
        apgd(norm, ApgdLoss::Dlr, ATTACK_TARGETS),
        fab_t(norm),
    ]
}

/// The cascade `version` (not `custom`) for `norm`.
pub fn cascade(norm: Norm, version: CascadeVersion) -> Attack {
    Attack::AutoAttack {
        norm,
        version,
        stages: match version {
            CascadeVersion::Rand => rand_stages(norm),
            CascadeVersion::Plus => plus_stages(norm),
            CascadeVersion::Standard | CascadeVersion::Custom => standard_stages(norm),
        },
    }
}

fn preset(name: &'static str, attack: Attack) -> AttackPreset {
    AttackPreset { name, attack }
}

/// The built-in attacks.
pub static ATTACKS: LazyLock<Vec<AttackPreset>> = LazyLock::new(|| {
    vec![
        preset("none", Attack::None),
        preset("fgsm", FGSM),
        preset("fgsm-l2", fgsm(Norm::L2, false, FGSM_STEP_FRACTION)),
        preset("fgsm-rs", fgsm(Norm::Linf, true, 1.25)),
        preset("pgd-linf", PGD_LINF),
        preset("pgd-l2", pgd(Norm::L2, PGD_STEPS)),
        preset("pgd20-linf", pgd(Norm::Linf, 20)),
        preset("apgd-ce", apgd(Norm::Linf, ApgdLoss::Ce, 0)),
        preset("apgd-dlr", apgd(Norm::Linf, ApgdLoss::Dlr, 0)),
        preset("apgd-t", apgd(Norm::Linf, ApgdLoss::Dlr, ATTACK_TARGETS)),
        preset("fab-t", fab_t(Norm::Linf)),
        preset("square", square(Norm::Linf)),
        preset("apgd-ce-l2", apgd(Norm::L2, ApgdLoss::Ce, 0)),
        preset("apgd-t-l2", apgd(Norm::L2, ApgdLoss::Dlr, ATTACK_TARGETS)),
        preset("fab-t-l2", fab_t(Norm::L2)),
        preset("square-l2", square(Norm::L2)),
        preset("autoattack", cascade(Norm::Linf, CascadeVersion::Standard)),
        preset("autoattack-l2", cascade(Norm::L2, CascadeVersion::Standard)),
        preset("autoattack-rand", cascade(Norm::Linf, CascadeVersion::Rand)),
        preset("autoattack-plus", cascade(Norm::Linf, CascadeVersion::Plus)),
        preset(
            "autoattack-plus-l2",
            cascade(Norm::L2, CascadeVersion::Plus),
        ),
    ]
});

/// The built-in attack called `name`.
pub fn attack(name: &str) -> Option<&'static Attack> {
    ATTACKS.iter().find(|p| p.name == name).map(|p| &p.attack)
}

/// The built-in attack names, in catalogue order.
pub fn attack_names() -> Vec<&'static str> {
    ATTACKS.iter().map(|p| p.name).collect()
}

/// How a built-in defense trains. Every budget of a built-in defense is tied to the grid's ε.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Recipe {
    Standard,
    /// Adversarial training with the attack preset `attack`.
    Adversarial {
        attack: &'static str,
    },
    /// Mixed-norm training with the default slots ([`MIXED_LINF_ATTACK`], [`MIXED_L2_ATTACK`]).
    Mixed {
        strategy: MixStrategy,
    },
}

/// A named defense.
#[derive(Debug, Clone, PartialEq)]
pub struct DefensePreset {
    pub name: &'static str,
    pub recipe: Recipe,
    /// σ of inference noise, if any.
    pub inference_noise: Option<f64>,
    /// A default DnCNN denoiser (the `[defenses.NAME.denoiser]` defaults) in front.
    pub denoiser: bool,
}

const fn defense(
    name: &'static str,
    recipe: Recipe,
    inference_noise: Option<f64>,
    denoiser: bool,
) -> DefensePreset {
    DefensePreset {
        name,
        recipe,
        inference_noise,
        denoiser,
    }
}

const fn adversarial(attack: &'static str) -> Recipe {
    Recipe::Adversarial { attack }
}

/// The built-in defenses.
pub static DEFENSES: [DefensePreset; 11] = [
    defense("standard", Recipe::Standard, None, false),
    defense("at-fgsm", adversarial("fgsm"), None, false),
    defense("at-fgsm-rs", adversarial("fgsm-rs"), None, false),
    defense("at-pgd-linf", adversarial("pgd-linf"), None, false),
    defense("at-pgd-l2", adversarial("pgd-l2"), None, false),
    defense(
        "at-mixed",
        Recipe::Mixed {
            strategy: MixStrategy::BothPerBatch,
        },
        None,
        false,
    ),
    defense(
        "at-mixed-worst",
        Recipe::Mixed {
            strategy: MixStrategy::WorstPerExample,
        },
        None,
        false,
    ),
    defense(
        "noise-injection",
        Recipe::Standard,
        Some(INFERENCE_NOISE_SIGMA),
        false,
    ),
    defense(
        "at-fgsm-noise",
        adversarial("fgsm"),
        Some(INFERENCE_NOISE_SIGMA),
        false,
    ),
    defense(
        "at-pgd-linf-noise",
        adversarial("pgd-linf"),
        Some(INFERENCE_NOISE_SIGMA),
        false,
    ),
    defense("dncnn", Recipe::Standard, None, true),
];

/// The built-in defense called `name`.
pub fn defense_preset(name: &str) -> Option<&'static DefensePreset> {
    DEFENSES.iter().find(|p| p.name == name)
}

/// The built-in defense names, in catalogue order.
pub fn defense_names() -> Vec<&'static str> {
    DEFENSES.iter().map(|p| p.name).collect()
}

/// A built-in attack for making training examples (one gradient sample). The catalogue only
/// names attacks it has; a missing one is `none`, which validation refuses.
fn training_attack(name: &str) -> Attack {
    attack(name).cloned().unwrap_or(Attack::None)
}

impl DefensePreset {
    /// The defense with every budget at `epsilon` (what a sweep grid's tied ε gives): how the
    /// classifier is trained, and what wraps it at evaluation.
    pub fn build(&self, epsilon: f64) -> (Defense, InferenceDefense) {
        let method = match self.recipe {
            Recipe::Standard => TrainingMethod::Standard,
            Recipe::Adversarial { attack } => TrainingMethod::Adversarial {
                attack: training_attack(attack),
                epsilon,
                fraction: ADVERSARIAL_FRACTION,
            },
            Recipe::Mixed { strategy } => TrainingMethod::Mixed {
                linf: training_attack(MIXED_LINF_ATTACK),
                l2: training_attack(MIXED_L2_ATTACK),
                epsilon_linf: epsilon,
                epsilon_l2: epsilon,
                strategy,
                fraction: ADVERSARIAL_FRACTION,
            },
        };
        let inference = InferenceDefense {
            inference_noise: self.inference_noise,
            denoiser: self.denoiser.then(|| DenoiserSpec {
                blocks: DENOISER_BLOCKS,
                channels: DENOISER_CHANNELS,
                attack: training_attack(DENOISER_ATTACK),
                epsilon,
                epochs: DENOISER_EPOCHS,
                learning_rate: DENOISER_LEARNING_RATE,
                pairs_per_epoch: 0,
            }),
        };
        (Defense { method }, inference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_valid_and_named_once() {
        for table in [attack_names(), defense_names()] {
            let mut sorted = table.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), table.len(), "{table:?}");
        }
        for p in ATTACKS.iter() {
            p.attack
                .validate()
                .unwrap_or_else(|e| panic!("{}: {e}", p.name));
        }
        for p in &DEFENSES {
            let (defense, inference) = p.build(8.0 / 255.0);
            defense
                .validate()
                .and_then(|()| inference.validate())
                .unwrap_or_else(|e| panic!("{}: {e}", p.name));
        }
        let noisy = model("noisy-resnet18").expect("built in");
        noisy.validate().expect("valid");
        assert_eq!(noisy.noise.map(|n| n.layers.len()), Some(5));
        assert_eq!(model("basic"), Some(Model::plain("basic")));
        assert_eq!(model("noisy-resnet50"), None);
    }

    #[test]
    fn autoattack_presets_follow_the_reference() {
        let Some(Attack::AutoAttack { stages, .. }) = attack("autoattack") else {
            panic!("autoattack is a cascade");
        };
        let labels: Vec<String> = stages.iter().map(Attack::label).collect();
        assert_eq!(labels, ["apgd-ce", "apgd-t", "fab-t", "square"]);
        assert_eq!(
            stages[3],
            Attack::Square {
                norm: Norm::Linf,
                queries: 5000,
                p_init: 0.8,
                restarts: 1
            }
        );
        let rand = attack("autoattack-rand").expect("built in");
        assert_eq!(rand.eot(), 20);
        let titles: Vec<String> = rand.stages().iter().map(Attack::stage_title).collect();
        assert_eq!(titles, ["APGD-CE", "APGD-DLR"]);
        assert_eq!(
            attack("autoattack-l2").and_then(Attack::norm),
            Some(Norm::L2)
        );
        assert_eq!(
            attack("autoattack-l2").map(Attack::label).as_deref(),
            Some("autoattack-l2")
        );
    }

    /// `autoattack-plus` is the reference's `set_version('plus')`: six stages in its order,
    /// five restarts for APGD-CE, APGD-DLR and the untargeted FAB, one for the targeted
    /// stages, 100 steps and 5,000 queries; `fab` (untargeted) and `fab-t` keep apart.
    #[test]
    fn the_plus_cascade_follows_the_reference() {
        for (name, norm) in [
            ("autoattack-plus", Norm::Linf),
            ("autoattack-plus-l2", Norm::L2),
        ] {
            let plus = attack(name).expect("built in");
            assert_eq!(plus.label(), name);
            assert_eq!(plus.norm(), Some(norm));
            assert_eq!(plus.eot(), 1);
            let stages = plus.stages();
            let labels: Vec<String> = stages
                .iter()
                .map(|s| s.label().trim_end_matches("-l2").to_owned())
                .collect();
            assert_eq!(
                labels,
                ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"],
                "{name}"
            );
            let titles: Vec<String> = stages.iter().map(Attack::stage_title).collect();
            assert_eq!(
                titles,
                ["APGD-CE", "APGD-DLR", "FAB", "Square", "APGD-T", "FAB-T"]
            );
            let budget: Vec<(u32, u32, u32)> = stages
                .iter()
                .map(|s| match *s {
                    Attack::Apgd {
                        targets,
                        steps,
                        restarts,
                        ..
                    }
                    | Attack::Fab {
                        targets,
                        steps,
                        restarts,
                        ..
                    } => (targets, steps, restarts),
                    Attack::Square {
                        queries, restarts, ..
                    } => (0, queries, restarts),
                    ref other => panic!("{other:?} in the plus cascade"),
                })
                .collect();
            assert_eq!(
                budget,
                [
                    (0, 100, 5),
                    (0, 100, 5),
                    (0, 100, 5),
                    (0, 5000, 1),
                    (9, 100, 1),
                    (9, 100, 1)
                ]
            );
            assert!(stages.iter().all(|s| s.norm() == Some(norm)));
        }
        assert_eq!(
            attack("autoattack-plus"),
            Some(&cascade(Norm::Linf, CascadeVersion::Plus))
        );
    }

    #[test]
    fn pgd_takes_the_default_step() {
        assert_eq!(
            attack("pgd-linf"),
            Some(&Attack::Pgd {
                norm: Norm::Linf,
                steps: 10,
                step: StepSize::FractionOfEpsilon(0.25),
                random_start: true,
                restarts: 1,
                eot: 1,
            })
        );
    }
}
