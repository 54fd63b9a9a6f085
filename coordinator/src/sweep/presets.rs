//! The built-in catalogue: attack and defense presets a sweep file can name without defining.
//!
//! A sweep file's `[attacks.NAME]` / `[defenses.NAME]` tables add presets or shadow these.

use super::file::{AttackPreset, DefensePreset, EpsilonSetting, NormName};

/// Models this build's workers implement.
pub const MODELS: &[&str] = &["basic"];

pub fn builtin_attack(name: &str) -> Option<AttackPreset> {
    let pgd = |norm| AttackPreset::Pgd {
        norm,
        steps: 10,
        step_size: None,
        step_fraction: None,
        random_start: true,
        restarts: 1,
    };
    Some(match name {
        "none" => AttackPreset::None,
        "fgsm" => AttackPreset::Fgsm {
            norm: NormName::Linf,
            random_start: false,
            step_fraction: None,
        },
        "fgsm-l2" => AttackPreset::Fgsm {
            norm: NormName::L2,
            random_start: false,
            step_fraction: None,
        },
        "fgsm-rs" => AttackPreset::Fgsm {
            norm: NormName::Linf,
            random_start: true,
            step_fraction: Some(1.25),
        },
        "pgd-linf" => pgd(NormName::Linf),
        "pgd-l2" => pgd(NormName::L2),
        _ => return None,
    })
}

pub const BUILTIN_ATTACKS: &[&str] = &["none", "fgsm", "fgsm-l2", "fgsm-rs", "pgd-linf", "pgd-l2"];

pub fn builtin_defense(name: &str) -> Option<DefensePreset> {
    let adversarial = |attack: &str| DefensePreset::Adversarial {
        attack: attack.to_owned(),
        epsilon: EpsilonSetting::Tied,
        fraction: 1.0,
    };
    Some(match name {
        "standard" => DefensePreset::Standard,
        "at-fgsm" => adversarial("fgsm"),
        "at-fgsm-rs" => adversarial("fgsm-rs"),
        "at-pgd-linf" => adversarial("pgd-linf"),
        "at-pgd-l2" => adversarial("pgd-l2"),
        _ => return None,
    })
}

pub const BUILTIN_DEFENSES: &[&str] = &[
    "standard",
    "at-fgsm",
    "at-fgsm-rs",
    "at-pgd-linf",
    "at-pgd-l2",
];
