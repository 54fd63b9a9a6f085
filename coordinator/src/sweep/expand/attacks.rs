//! Attack presets → attacks (their EOT may still depend on the run they attack).

use advsweep_core::catalogue::defaults;
use advsweep_core::catalogue::presets as catalogue;
use advsweep_core::{Attack, CascadeVersion, StepSize};

use super::SweepError;
use super::check::{Validator, unknown_preset};
use crate::sweep::file::{AttackPreset, CascadeSetting, EotSetting, SweepFile};
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
    ///
    /// An AutoAttack `standard` or `rand` cascade with `eot = "auto"` against a randomized
    /// model is the reference's `rand` version (APGD-CE and APGD-DLR with
    /// [`defaults::RAND_EOT_SAMPLES`] gradient samples), as AutoAttack prescribes for
    /// randomized defenses; a custom list keeps its stages with `auto_samples`.
    pub(super) fn resolve(&self, randomized: bool, auto_samples: u32) -> Attack {
        if let (
            EotSetting::Auto,
            true,
            Attack::AutoAttack {
                norm,
                version: CascadeVersion::Standard | CascadeVersion::Rand,
                ..
            },
        ) = (self.eot, randomized, &self.attack)
        {
            return catalogue::cascade(*norm, CascadeVersion::Rand);
        }
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
        AttackPreset::Apgd {
            norm,
            loss,
            targets,
            steps,
            restarts,
            eot,
        } => (
            Attack::Apgd {
                norm,
                loss,
                targets,
                steps,
                restarts,
                eot: 1,
            },
            eot,
        ),
        AttackPreset::Fab {
            norm,
            targets,
            steps,
            restarts,
            eot,
        } => (
            Attack::Fab {
                norm,
                targets,
                steps,
                restarts,
                eot: 1,
            },
            eot,
        ),
        AttackPreset::Square {
            norm,
            queries,
            p_init,
            restarts,
        } => (
            Attack::Square {
                norm,
                queries,
                p_init,
                restarts,
            },
            EotSetting::Samples(1),
        ),
        AttackPreset::AutoAttack { norm, version, eot } => {
            let attack = match version {
                CascadeSetting::Version(version) => catalogue::cascade(norm, version),
                CascadeSetting::Stages(names) => Attack::AutoAttack {
                    norm,
                    version: CascadeVersion::Custom,
                    stages: names
                        .iter()
                        .map(|stage| resolve_stage(v, file, name, stage))
                        .collect::<Result<_, _>>()?,
                },
            };
            (attack, eot)
        }
    };
    let samples = match eot {
        EotSetting::Samples(k) => k,
        EotSetting::Auto => 1,
    };
    v.rule(Some(&at), attack.with_eot(samples).validate())?;
    Ok(AttackTemplate { attack, eot })
}

/// The stage `stage` of the cascade preset `cascade` (one gradient sample: the cascade's
/// `eot` applies to every stage). A stage that is itself a cascade is refused before it is
/// resolved, so no list can name itself.
fn resolve_stage(
    v: &Validator,
    file: &SweepFile,
    cascade: &str,
    stage: &str,
) -> Result<Attack, SweepError> {
    let key = format!("attacks.{cascade}.stages");
    if let AttackPreset::AutoAttack { .. } = lookup(v, file, stage, &key)? {
        return v.fail(format!(
            "{key}: `{stage}` is an autoattack cascade; a stage is an apgd, fab or square attack"
        ));
    }
    Ok(resolve_attack(v, file, stage, &key)?.resolve(false, 1))
}
