//! Attack presets → attacks (their EOT may still depend on the run they attack).

use advsweep_core::catalogue::defaults;
use advsweep_core::{Attack, StepSize};

use super::SweepError;
use super::check::{Validator, unknown_preset};
use crate::sweep::file::{AttackPreset, EotSetting, SweepFile};
use crate::sweep::presets;

/// A resolved attack whose EOT may still depend on the run it attacks.
#[derive(Debug, Clone)]
pub(super) struct AttackTemplate {
    pub(super) attack: Attack,
    eot: EotSetting,
}

impl AttackTemplate {
    /// The attack against a model that is (or is not) randomized; `auto_samples` is what
    /// `eot = "auto"` means against a randomized model.
    pub(super) fn resolve(&self, randomized: bool, auto_samples: u32) -> Attack {
        match self.eot {
            EotSetting::Samples(k) => self.attack.with_eot(k),
            EotSetting::Auto if randomized => self.attack.with_eot(auto_samples),
            EotSetting::Auto => self.attack.with_eot(1),
        }
    }

    /// For training-time attacks, `auto` means a single sample (EOT is an evaluation tool).
    pub(super) fn for_training(&self) -> Attack {
        self.resolve(false, 1)
    }
}

/// The preset called `name`: the file's own, else a built-in one.
fn lookup(
    v: &Validator,
    file: &SweepFile,
    name: &str,
    key: &str,
) -> Result<AttackPreset, SweepError> {
    if let Some(p) = file.attacks.get(name) {
        return Ok(p.clone());
    }
    presets::builtin_attack(name).map_or_else(
        || {
            v.fail(unknown_preset(
                "attack preset",
                key,
                name,
                &presets::builtin_attacks(),
                file.attacks.keys().map(String::as_str).collect(),
            ))
        },
        Ok,
    )
}

/// The attack preset `name` (named at `key` of the file), validated.
pub(super) fn resolve_attack(
    v: &Validator,
    file: &SweepFile,
    name: &str,
    key: &str,
) -> Result<AttackTemplate, SweepError> {
    let at = format!("attack preset `{name}`");
    let (attack, eot) = match lookup(v, file, name, key)? {
        AttackPreset::None => (Attack::None, EotSetting::Samples(1)),
        AttackPreset::Fgsm {
            norm,
            random_start,
            step_fraction,
            eot,
        } => (
            Attack::Fgsm {
                norm,
                random_start,
                step_fraction: step_fraction.unwrap_or(defaults::FGSM_STEP_FRACTION),
                eot: 1,
            },
            eot,
        ),
        AttackPreset::Pgd {
            norm,
            steps,
            step_size,
            step_fraction,
            random_start,
            restarts,
            eot,
        } => {
            let step = match (step_size, step_fraction) {
                (Some(_), Some(_)) => {
                    return v.fail(format!(
                        "{at}: set either step_size or step_fraction, not both"
                    ));
                }
                (Some(s), None) => StepSize::Absolute(s),
                (None, Some(f)) => StepSize::FractionOfEpsilon(f),
                (None, None) => StepSize::FractionOfEpsilon(defaults::pgd_step_fraction(steps)),
            };
            (
                Attack::Pgd {
                    norm,
                    steps,
                    step,
                    random_start,
                    restarts,
                    eot: 1,
                },
                eot,
            )
        }
    };
    let samples = match eot {
        EotSetting::Samples(k) => k,
        EotSetting::Auto => 1,
    };
    v.rule(Some(&at), attack.with_eot(samples).validate())?;
    Ok(AttackTemplate { attack, eot })
}
