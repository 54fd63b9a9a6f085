//! The built-in catalogue: model, attack and defense presets a sweep file can name without
//! defining. A sweep file's `[models.NAME]`, `[attacks.NAME]` and `[defenses.NAME]` tables add
//! presets or shadow these.

use advsweep_core::Arch;

use super::file::{
    AttackPreset, DefensePreset, DenoiserSection, EotSetting, EpsilonSetting, ModelPreset,
    NoiseSection, NormName,
};

/// σ of the built-in `noisy-*` models (relative to each hidden layer's output std).
pub const NOISY_SIGMA: f64 = 0.1;
/// σ of the built-in inference-noise defenses (pixel units).
pub const INFERENCE_NOISE_SIGMA: f64 = 0.05;

/// `basic`, `resnet18`, `wrn-D-K`, `vgg11`, `vgg16`, and `noisy-<any of those>` (noise in every
/// hidden injection point, σ = [`NOISY_SIGMA`]).
pub fn builtin_model(name: &str) -> Option<ModelPreset> {
    if let Some(arch) = name.strip_prefix("noisy-") {
        Arch::parse(arch).ok()?;
        return Some(ModelPreset {
            arch: arch.to_owned(),
            noise: Some(NoiseSection {
                sigma: NOISY_SIGMA,
                layers: vec!["hidden".to_owned()],
                learnable: false,
            }),
        });
    }
    Arch::parse(name).ok()?;
    Some(ModelPreset {
        arch: name.to_owned(),
        noise: None,
    })
}

pub const BUILTIN_MODELS: &[&str] = &[
    "basic",
    "resnet18",
    "wrn-D-K (e.g. wrn-16-4, wrn-28-10)",
    "vgg11",
    "vgg16",
    "noisy-<model>",
];

pub fn builtin_attack(name: &str) -> Option<AttackPreset> {
    let pgd = |norm| AttackPreset::Pgd {
        norm,
        steps: 10,
        step_size: None,
        step_fraction: None,
        random_start: true,
        restarts: 1,
        eot: EotSetting::Auto,
    };
    let fgsm = |norm, random_start, step_fraction| AttackPreset::Fgsm {
        norm,
        random_start,
        step_fraction,
        eot: EotSetting::Auto,
    };
    Some(match name {
        "none" => AttackPreset::None,
        "fgsm" => fgsm(NormName::Linf, false, None),
        "fgsm-l2" => fgsm(NormName::L2, false, None),
        "fgsm-rs" => fgsm(NormName::Linf, true, Some(1.25)),
        "pgd-linf" => pgd(NormName::Linf),
        "pgd-l2" => pgd(NormName::L2),
        "pgd20-linf" => AttackPreset::Pgd {
            norm: NormName::Linf,
            steps: 20,
            step_size: None,
            step_fraction: None,
            random_start: true,
            restarts: 1,
            eot: EotSetting::Auto,
        },
        _ => return None,
    })
}

pub const BUILTIN_ATTACKS: &[&str] = &[
    "none",
    "fgsm",
    "fgsm-l2",
    "fgsm-rs",
    "pgd-linf",
    "pgd-l2",
    "pgd20-linf",
];

pub fn builtin_defense(name: &str) -> Option<DefensePreset> {
    let adversarial = |attack: &str| DefensePreset {
        kind: "adversarial".into(),
        attack: Some(attack.to_owned()),
        epsilon: Some(EpsilonSetting::Tied),
        ..DefensePreset::default()
    };
    let mixed = |strategy: &str| DefensePreset {
        kind: "mixed".into(),
        epsilon: Some(EpsilonSetting::Tied),
        strategy: Some(strategy.to_owned()),
        ..DefensePreset::default()
    };
    let with_noise = |mut d: DefensePreset| {
        d.inference_noise = Some(INFERENCE_NOISE_SIGMA);
        d
    };
    Some(match name {
        "standard" => DefensePreset {
            kind: "standard".into(),
            ..DefensePreset::default()
        },
        "at-fgsm" => adversarial("fgsm"),
        "at-fgsm-rs" => adversarial("fgsm-rs"),
        "at-pgd-linf" => adversarial("pgd-linf"),
        "at-pgd-l2" => adversarial("pgd-l2"),
        "at-mixed" => mixed("both"),
        "at-mixed-worst" => mixed("worst"),
        "noise-injection" => with_noise(DefensePreset {
            kind: "standard".into(),
            ..DefensePreset::default()
        }),
        "at-fgsm-noise" => with_noise(adversarial("fgsm")),
        "at-pgd-linf-noise" => with_noise(adversarial("pgd-linf")),
        "dncnn" => DefensePreset {
            kind: "standard".into(),
            denoiser: Some(DenoiserSection {
                blocks: 10,
                channels: 64,
                attack: "pgd-linf".into(),
                epsilon: EpsilonSetting::Tied,
                epochs: 5,
                learning_rate: 1e-3,
                pairs_per_epoch: 0,
            }),
            ..DefensePreset::default()
        },
        _ => return None,
    })
}

pub const BUILTIN_DEFENSES: &[&str] = &[
    "standard",
    "at-fgsm",
    "at-fgsm-rs",
    "at-pgd-linf",
    "at-pgd-l2",
    "at-mixed",
    "at-mixed-worst",
    "noise-injection",
    "at-fgsm-noise",
    "at-pgd-linf-noise",
    "dncnn",
];
