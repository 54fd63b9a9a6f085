//! Defense presets → defenses whose budgets may still be tied to the grid's ε.
//!
//! Resolution runs in phases: find the preset, check that every key it sets applies to its
//! kind, resolve the training method and the denoiser (attack presets, missing keys), then
//! validate the result as the vocabulary defines it.

use advsweep_core::catalogue::defaults;
use advsweep_core::{Attack, Defense, DenoiserSpec, InferenceDefense, MixStrategy, TrainingMethod};

use super::SweepError;
use super::attacks::resolve_attack;
use super::check::{Validator, unknown_preset};
use crate::sweep::file::{DefenseKind, DefensePreset, DenoiserSection, EpsilonSetting, SweepFile};
use crate::sweep::presets;

/// A defense whose ε may still be tied to the grid's.
pub(super) struct ResolvedDefense {
    pub(super) name: String,
    method: MethodTemplate,
    inference_noise: Option<f64>,
    denoiser: Option<DenoiserTemplate>,
}

enum MethodTemplate {
    Standard,
    Adversarial {
        attack: Attack,
        epsilon: EpsilonSetting,
        fraction: f64,
    },
    Mixed {
        linf: Attack,
        l2: Attack,
        epsilon_linf: EpsilonSetting,
        epsilon_l2: EpsilonSetting,
        strategy: MixStrategy,
        fraction: f64,
    },
}

struct DenoiserTemplate {
    blocks: u32,
    channels: u32,
    attack: Attack,
    epsilon: EpsilonSetting,
    epochs: u32,
    learning_rate: f64,
    pairs_per_epoch: u32,
}

impl ResolvedDefense {
    pub(super) fn tied(&self) -> bool {
        let method_tied = match &self.method {
            MethodTemplate::Standard => false,
            MethodTemplate::Adversarial { epsilon, .. } => *epsilon == EpsilonSetting::Tied,
            MethodTemplate::Mixed {
                epsilon_linf,
                epsilon_l2,
                ..
            } => *epsilon_linf == EpsilonSetting::Tied || *epsilon_l2 == EpsilonSetting::Tied,
        };
        method_tied
            || self
                .denoiser
                .as_ref()
                .is_some_and(|d| d.epsilon == EpsilonSetting::Tied)
    }

    /// Whether anything wraps the classifier at evaluation (inference noise, a denoiser).
    pub(super) fn wraps(&self) -> bool {
        self.inference_noise.is_some() || self.denoiser.is_some()
    }

    /// The concrete defense, with tied budgets set to `tied` (a grid ε): how the classifier
    /// is trained, and what wraps it at evaluation.
    pub(super) fn build(&self, tied: f64) -> (Defense, InferenceDefense) {
        let at = |e: EpsilonSetting| match e {
            EpsilonSetting::Fixed(v) => v,
            EpsilonSetting::Tied => tied,
        };
        let method = match &self.method {
            MethodTemplate::Standard => TrainingMethod::Standard,
            MethodTemplate::Adversarial {
                attack,
                epsilon,
                fraction,
            } => TrainingMethod::Adversarial {
                attack: attack.clone(),
                epsilon: at(*epsilon),
                fraction: *fraction,
            },
            MethodTemplate::Mixed {
                linf,
                l2,
                epsilon_linf,
                epsilon_l2,
                strategy,
                fraction,
            } => TrainingMethod::Mixed {
                linf: linf.clone(),
                l2: l2.clone(),
                epsilon_linf: at(*epsilon_linf),
                epsilon_l2: at(*epsilon_l2),
                strategy: *strategy,
                fraction: *fraction,
            },
        };
        let inference = InferenceDefense {
            inference_noise: self.inference_noise,
            denoiser: self.denoiser.as_ref().map(|d| DenoiserSpec {
                blocks: d.blocks,
                channels: d.channels,
                attack: d.attack.clone(),
                epsilon: at(d.epsilon),
                epochs: d.epochs,
                learning_rate: d.learning_rate,
                pairs_per_epoch: d.pairs_per_epoch,
            }),
        };
        (Defense { method }, inference)
    }
}

/// The preset called `name`: the file's own, else a built-in one.
fn lookup(v: &Validator, file: &SweepFile, name: &str) -> Result<DefensePreset, SweepError> {
    if let Some(p) = file.defenses.get(name) {
        return Ok(p.clone());
    }
    presets::builtin_defense(name).map_or_else(
        || {
            v.fail(unknown_preset(
                "defense preset",
                "grid.defenses",
                name,
                &presets::builtin_defenses(),
                file.defenses.keys().map(String::as_str).collect(),
            ))
        },
        Ok,
    )
}

/// Every key the preset sets applies to its kind.
fn check_keys_apply(v: &Validator, at: &str, p: &DefensePreset) -> Result<(), SweepError> {
    let method_keys = [
        ("attack", p.attack.is_some()),
        ("epsilon", p.epsilon.is_some()),
        ("fraction", p.fraction.is_some()),
        ("linf", p.linf.is_some()),
        ("l2", p.l2.is_some()),
        ("epsilon_linf", p.epsilon_linf.is_some()),
        ("epsilon_l2", p.epsilon_l2.is_some()),
        ("strategy", p.strategy.is_some()),
    ];
    let applies = |key: &str| match p.kind {
        DefenseKind::Standard => false,
        DefenseKind::Adversarial => matches!(key, "attack" | "epsilon" | "fraction"),
        DefenseKind::Mixed => key != "attack",
    };
    for (key, present) in method_keys {
        v.check(!present || applies(key), || {
            format!(
                "{at}: key `{key}` does not apply to kind = \"{}\"",
                p.kind.name()
            )
        })?;
    }
    Ok(())
}

/// The attack preset `preset` as a maker of training examples (one gradient sample).
fn training_attack(
    v: &Validator,
    file: &SweepFile,
    at: &str,
    key: &str,
    preset: &str,
) -> Result<Attack, SweepError> {
    Ok(resolve_attack(v, file, preset, &format!("{at}: {key}"))?.for_training())
}

fn method(
    v: &Validator,
    file: &SweepFile,
    at: &str,
    p: &DefensePreset,
) -> Result<MethodTemplate, SweepError> {
    let fraction = p.fraction.unwrap_or(defaults::ADVERSARIAL_FRACTION);
    Ok(match p.kind {
        DefenseKind::Standard => MethodTemplate::Standard,
        DefenseKind::Adversarial => {
            let Some(attack) = p.attack.as_deref() else {
                return v.fail(format!("{at}: missing key `attack`"));
            };
            let Some(epsilon) = p.epsilon else {
                return v.fail(format!(
                    "{at}: missing key `epsilon` (a number, \"8/255\" or \"tied\")"
                ));
            };
            MethodTemplate::Adversarial {
                attack: training_attack(v, file, at, "attack", attack)?,
                epsilon,
                fraction,
            }
        }
        DefenseKind::Mixed => {
            let pick = |key: &str, own: Option<EpsilonSetting>| match (own, p.epsilon) {
                (Some(_), Some(_)) => v.fail(format!("{at}: set `epsilon` or `{key}`, not both")),
                (Some(e), None) | (None, Some(e)) => Ok(e),
                (None, None) => v.fail(format!(
                    "{at}: missing key `epsilon` (or `epsilon_linf` and `epsilon_l2`)"
                )),
            };
            let linf = p.linf.as_deref().unwrap_or(defaults::MIXED_LINF_ATTACK);
            let l2 = p.l2.as_deref().unwrap_or(defaults::MIXED_L2_ATTACK);
            MethodTemplate::Mixed {
                linf: training_attack(v, file, at, "linf", linf)?,
                l2: training_attack(v, file, at, "l2", l2)?,
                epsilon_linf: pick("epsilon_linf", p.epsilon_linf)?,
                epsilon_l2: pick("epsilon_l2", p.epsilon_l2)?,
                strategy: p.strategy.unwrap_or(MixStrategy::BothPerBatch),
                fraction,
            }
        }
    })
}

fn denoiser(
    v: &Validator,
    file: &SweepFile,
    at: &str,
    d: &DenoiserSection,
) -> Result<DenoiserTemplate, SweepError> {
    Ok(DenoiserTemplate {
        blocks: d.blocks,
        channels: d.channels,
        attack: training_attack(v, file, at, "denoiser.attack", &d.attack)?,
        epsilon: d.epsilon,
        epochs: d.epochs,
        learning_rate: d.learning_rate,
        pairs_per_epoch: d.pairs_per_epoch,
    })
}

pub(super) fn resolve_defense(
    v: &Validator,
    file: &SweepFile,
    name: &str,
) -> Result<ResolvedDefense, SweepError> {
    let p = lookup(v, file, name)?;
    let at = format!("defense preset `{name}`");
    check_keys_apply(v, &at, &p)?;
    let resolved = ResolvedDefense {
        name: name.to_owned(),
        method: method(v, file, &at, &p)?,
        inference_noise: p.inference_noise,
        denoiser: p
            .denoiser
            .as_ref()
            .map(|d| denoiser(v, file, &at, d))
            .transpose()?,
    };
    // Tied budgets are grid values, checked with the grid; 0 stands in for them here.
    let (defense, inference) = resolved.build(0.0);
    v.rule(Some(&at), defense.validate())?;
    v.rule(Some(&at), defense.validate_budgets(file.epsilon_space))?;
    v.rule(Some(&at), inference.validate())?;
    v.rule(Some(&at), inference.validate_budgets(file.epsilon_space))?;
    Ok(resolved)
}
