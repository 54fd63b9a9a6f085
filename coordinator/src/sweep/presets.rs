//! The built-in catalogue (`advsweep_core::catalogue::presets`, the one list of its names) in the
//! sweep file's own terms: the preset tables a file could have written to get the same
//! experiments. A sweep file's `[models.NAME]`, `[attacks.NAME]` and `[defenses.NAME]` tables add
//! presets or shadow these.

use advsweep_core::catalogue::defaults;
use advsweep_core::catalogue::presets::{self as catalogue, Recipe};
use advsweep_core::{Attack, CascadeVersion, StepSize};

use super::file::{
    AttackPreset, CascadeSetting, DefenseKind, DefensePreset, DenoiserSection, EotSetting,
    EpsilonSetting, ModelPreset, NoiseSection,
};

pub use catalogue::{INFERENCE_NOISE_SIGMA, NOISY_SIGMA};

/// `basic`, `resnet18`, `wrn-D-K`, `vgg11`, `vgg16`, and `noisy-<any of those>` (noise in every
/// hidden injection point, σ = [`NOISY_SIGMA`]).
pub fn builtin_model(name: &str) -> Option<ModelPreset> {
    let model = catalogue::model(name)?;
    Some(ModelPreset {
        arch: Some(model.name),
        noise: model.noise.map(|n| NoiseSection {
            sigma: n.sigma,
            layers: n.layers,
            learnable: n.learnable,
        }),
        weights: None,
        torchscript: None,
        normalize: None,
    })
}

pub const BUILTIN_MODELS: &[&str] = &catalogue::MODEL_NAMES;

/// A built-in attack, with `eot = "auto"`.
pub fn builtin_attack(name: &str) -> Option<AttackPreset> {
    Some(match *catalogue::attack(name)? {
        Attack::None => AttackPreset::None,
        Attack::Fgsm {
            norm,
            random_start,
            step_fraction,
            eot: _,
        } => AttackPreset::Fgsm {
            norm,
            random_start,
            step_fraction: Some(step_fraction),
            eot: EotSetting::Auto,
        },
        Attack::Pgd {
            norm,
            steps,
            step,
            random_start,
            restarts,
            eot: _,
        } => {
            let (step_size, step_fraction) = match step {
                StepSize::Absolute(s) => (Some(s), None),
                StepSize::FractionOfEpsilon(f) => (None, Some(f)),
            };
            AttackPreset::Pgd {
                norm,
                steps,
                step_size,
                step_fraction,
                random_start,
                restarts,
                eot: EotSetting::Auto,
            }
        }
        Attack::Apgd {
            norm,
            loss,
            targets,
            steps,
            restarts,
            eot: _,
        } => AttackPreset::Apgd {
            norm,
            loss,
            targets,
            steps,
            restarts,
            eot: EotSetting::Auto,
        },
        Attack::Fab {
            norm,
            targets,
            steps,
            restarts,
            eot: _,
        } => AttackPreset::Fab {
            norm,
            targets,
            steps,
            restarts,
            eot: EotSetting::Auto,
        },
        Attack::Square {
            norm,
            queries,
            p_init,
            restarts,
        } => AttackPreset::Square {
            norm,
            queries,
            p_init,
            restarts,
        },
        Attack::AutoAttack {
            norm,
            version,
            ref stages,
        } => AttackPreset::AutoAttack {
            norm,
            version: match version {
                CascadeVersion::Custom => {
                    CascadeSetting::Stages(stages.iter().map(Attack::label).collect())
                }
                named => CascadeSetting::Version(named),
            },
            eot: EotSetting::Auto,
        },
    })
}

/// The built-in attack names, in catalogue order.
pub fn builtin_attacks() -> Vec<&'static str> {
    catalogue::attack_names()
}

/// A built-in defense: every budget tied to the grid's ε.
pub fn builtin_defense(name: &str) -> Option<DefensePreset> {
    let p = catalogue::defense_preset(name)?;
    let mut preset = match p.recipe {
        Recipe::Standard => DefensePreset::default(),
        Recipe::Adversarial { attack } => DefensePreset {
            kind: DefenseKind::Adversarial,
            attack: Some(attack.to_owned()),
            epsilon: Some(EpsilonSetting::Tied),
            ..DefensePreset::default()
        },
        Recipe::Mixed { strategy } => DefensePreset {
            kind: DefenseKind::Mixed,
            epsilon: Some(EpsilonSetting::Tied),
            strategy: Some(strategy),
            ..DefensePreset::default()
        },
    };
    preset.inference_noise = p.inference_noise;
    preset.denoiser = p.denoiser.then(|| DenoiserSection {
        blocks: defaults::DENOISER_BLOCKS,
        channels: defaults::DENOISER_CHANNELS,
        attack: defaults::DENOISER_ATTACK.to_owned(),
        epsilon: EpsilonSetting::Tied,
        epochs: defaults::DENOISER_EPOCHS,
        learning_rate: defaults::DENOISER_LEARNING_RATE,
        pairs_per_epoch: 0,
    });
    Some(preset)
}

/// The built-in defense names, in catalogue order.
pub fn builtin_defenses() -> Vec<&'static str> {
    catalogue::defense_names()
}
