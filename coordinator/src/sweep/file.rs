//! The sweep file as written by a user (TOML, `version = 1`), before presets are resolved.
//!
//! Every table denies unknown keys, so a typo (`epoch = 5`) is an error that names the key
//! instead of a silently ignored setting.

use std::collections::BTreeMap;

use advsweep_core::catalogue::defaults;
use advsweep_core::{EpsilonSpace, MixStrategy, Norm, Precision};
use serde::{Deserialize, Deserializer};

/// The only sweep-file version this build reads.
pub const SWEEP_FILE_VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    pub version: u32,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Where every ε of the file is measured: `pixel` (inputs in [0, 1], the default) or
    /// `normalized` (after the model's per-channel normalization, as the seed quotes them).
    #[serde(default = "pixel")]
    pub epsilon_space: EpsilonSpace,
    pub data: DataSection,
    #[serde(default)]
    pub training: TrainingSection,
    #[serde(default)]
    pub evaluation: EvaluationSection,
    #[serde(default)]
    pub retry: RetrySection,
    pub grid: GridSection,
    /// User model presets (an architecture plus noise); they may shadow built-in names.
    #[serde(default)]
    pub models: BTreeMap<String, ModelPreset>,
    /// User attack presets; they may shadow built-in names.
    #[serde(default)]
    pub attacks: BTreeMap<String, AttackPreset>,
    /// User defense presets; they may shadow built-in names.
    #[serde(default)]
    pub defenses: BTreeMap<String, DefensePreset>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSection {
    Synthetic {
        #[serde(default)]
        seed: u64,
        #[serde(default = "default_synthetic_train")]
        train_size: u32,
        #[serde(default = "default_synthetic_test")]
        test_size: u32,
        #[serde(default)]
        train_limit: u32,
    },
    Cifar10 {
        /// Directory with the binary batches; `ADVSWEEP_CIFAR10_DIR` or `--data-path` override it.
        path: String,
        #[serde(default)]
        train_limit: u32,
    },
    /// `train/<class>/*.png|jpg` and `test/<class>/*.png|jpg` (e.g. the CIFAR-10 JPEG mirror).
    ImageFolder {
        path: String,
        #[serde(default)]
        train_limit: u32,
    },
}

fn pixel() -> EpsilonSpace {
    EpsilonSpace::Pixel
}

fn default_synthetic_train() -> u32 {
    defaults::SYNTHETIC_TRAIN_SIZE
}
fn default_synthetic_test() -> u32 {
    defaults::SYNTHETIC_TEST_SIZE
}

/// A word from a closed list (`optimizer = "sgd"`): its value, or an error that names the key
/// and lists the words it knows (the parser adds the key's full path).
fn word<'de, D: Deserializer<'de>, T: Copy>(
    d: D,
    key: &str,
    words: &[(&str, T)],
) -> Result<T, D::Error> {
    let text = String::deserialize(d)?;
    words
        .iter()
        .find(|(word, _)| *word == text)
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let known: Vec<&str> = words.iter().map(|(word, _)| *word).collect();
            serde::de::Error::custom(format!(
                "{key} = {text:?} is unknown (known: {})",
                known.join(", ")
            ))
        })
}

/// `training.optimizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    Sgd,
    Adam,
}

impl<'de> Deserialize<'de> for OptimizerKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        word(
            d,
            "optimizer",
            &[("sgd", OptimizerKind::Sgd), ("adam", OptimizerKind::Adam)],
        )
    }
}

/// `training.schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleKind {
    Constant,
    Step,
    Cosine,
    OneCycle,
}

impl<'de> Deserialize<'de> for ScheduleKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        word(
            d,
            "schedule",
            &[
                ("constant", ScheduleKind::Constant),
                ("step", ScheduleKind::Step),
                ("cosine", ScheduleKind::Cosine),
                ("one-cycle", ScheduleKind::OneCycle),
            ],
        )
    }
}

/// `[defenses.NAME] kind`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DefenseKind {
    #[default]
    Standard,
    Adversarial,
    Mixed,
}

impl DefenseKind {
    pub fn name(self) -> &'static str {
        match self {
            DefenseKind::Standard => "standard",
            DefenseKind::Adversarial => "adversarial",
            DefenseKind::Mixed => "mixed",
        }
    }
}

impl<'de> Deserialize<'de> for DefenseKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let kinds = [
            DefenseKind::Standard,
            DefenseKind::Adversarial,
            DefenseKind::Mixed,
        ];
        word(d, "kind", &kinds.map(|k| (k.name(), k)))
    }
}

/// `strategy` of a mixed defense: `both` or `worst`.
fn strategy<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MixStrategy>, D::Error> {
    word(
        d,
        "strategy",
        &[
            ("both", MixStrategy::BothPerBatch),
            ("worst", MixStrategy::WorstPerExample),
        ],
    )
    .map(Some)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSection {
    #[serde(default = "default_epochs")]
    pub epochs: u32,
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    #[serde(default = "default_optimizer")]
    pub optimizer: OptimizerKind,
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    #[serde(default)]
    pub nesterov: bool,
    /// Adam's β₁ and β₂.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// `constant`, `step`, `cosine` or `one-cycle`.
    #[serde(default = "default_schedule")]
    pub schedule: ScheduleKind,
    /// `step` schedule: multiply the learning rate by `step_gamma` every `step_every` epochs.
    #[serde(default = "default_step_every")]
    pub step_every: u32,
    #[serde(default = "default_step_gamma")]
    pub step_gamma: f64,
    #[serde(default)]
    pub augment: bool,
    /// Epochs between resumable checkpoints (streamed to the coordinator).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u32,
    /// `fp32` or `bf16` (autocast) for the training step; evaluation is always fp32. A name,
    /// resolved by `Precision::from_name` when the file is expanded (an unknown one is an
    /// expansion error, as tests pin).
    #[serde(default = "default_precision")]
    pub precision: String,
}

fn default_precision() -> String {
    Precision::Fp32.name().to_owned()
}

fn default_checkpoint_every() -> u32 {
    defaults::CHECKPOINT_EVERY
}

fn default_beta1() -> f64 {
    defaults::BETA1
}
fn default_beta2() -> f64 {
    defaults::BETA2
}
fn default_schedule() -> ScheduleKind {
    ScheduleKind::Constant
}
fn default_step_every() -> u32 {
    defaults::STEP_EVERY
}
fn default_step_gamma() -> f64 {
    defaults::STEP_GAMMA
}

impl Default for TrainingSection {
    fn default() -> Self {
        TrainingSection {
            epochs: default_epochs(),
            batch_size: default_batch_size(),
            optimizer: default_optimizer(),
            learning_rate: default_lr(),
            momentum: default_momentum(),
            weight_decay: default_weight_decay(),
            nesterov: false,
            beta1: default_beta1(),
            beta2: default_beta2(),
            schedule: default_schedule(),
            step_every: default_step_every(),
            step_gamma: default_step_gamma(),
            augment: false,
            checkpoint_every: default_checkpoint_every(),
            precision: default_precision(),
        }
    }
}

fn default_epochs() -> u32 {
    defaults::EPOCHS
}
fn default_batch_size() -> u32 {
    defaults::BATCH_SIZE
}
fn default_optimizer() -> OptimizerKind {
    OptimizerKind::Sgd
}
fn default_lr() -> f64 {
    defaults::LEARNING_RATE
}
fn default_momentum() -> f64 {
    defaults::MOMENTUM
}
fn default_weight_decay() -> f64 {
    defaults::WEIGHT_DECAY
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationSection {
    /// Test images evaluated per cell (0 = the whole test set).
    #[serde(default = "default_eval_limit")]
    pub limit: u32,
    #[serde(default = "default_eval_batch_size")]
    pub batch_size: u32,
    /// Gradient samples per attack step that `eot = "auto"` gives when the model under attack
    /// is randomized (noisy layers, inference noise).
    #[serde(default = "default_eot_samples")]
    pub eot_samples: u32,
}

impl Default for EvaluationSection {
    fn default() -> Self {
        EvaluationSection {
            limit: default_eval_limit(),
            batch_size: default_eval_batch_size(),
            eot_samples: default_eot_samples(),
        }
    }
}

fn default_eot_samples() -> u32 {
    defaults::AUTO_EOT_SAMPLES
}

fn default_eval_limit() -> u32 {
    defaults::EVAL_LIMIT
}
fn default_eval_batch_size() -> u32 {
    defaults::EVAL_BATCH_SIZE
}

/// `[retry]`: how hard to try before a run is failed for good.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Failed attempts (errors, lost workers; not preemptions) before giving up.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

impl Default for RetrySection {
    fn default() -> Self {
        RetrySection {
            max_attempts: default_max_attempts(),
        }
    }
}

fn default_max_attempts() -> u32 {
    defaults::MAX_ATTEMPTS
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridSection {
    pub models: Vec<String>,
    pub defenses: Vec<String>,
    pub attacks: Vec<String>,
    pub epsilons: Vec<Epsilon>,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

/// `[models.NAME]`: an architecture, optionally with noisy layers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPreset {
    /// `basic`, `resnet18`, `wrn-D-K`, `vgg11`, `vgg16`.
    pub arch: String,
    #[serde(default)]
    pub noise: Option<NoiseSection>,
}

/// Gaussian noise injected inside the model in training and inference.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseSection {
    pub sigma: f64,
    /// Injection points; `"all"` = every hidden point of the architecture.
    #[serde(default = "default_noise_layers")]
    pub layers: Vec<String>,
    #[serde(default)]
    pub learnable: bool,
}

fn default_noise_layers() -> Vec<String> {
    vec!["all".to_owned()]
}

/// `eot = "auto"` (default: EOT only against randomized models) or a number of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EotSetting {
    #[default]
    Auto,
    Samples(u32),
}

impl<'de> Deserialize<'de> for EotSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = EotSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("eot = \"auto\" or a number of gradient samples (1 or more)")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<EotSetting, E> {
                u32::try_from(v)
                    .ok()
                    .filter(|n| *n >= 1)
                    .map(EotSetting::Samples)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<EotSetting, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EotSetting, E> {
                if v.trim() == "auto" {
                    Ok(EotSetting::Auto)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AttackPreset {
    None,
    Fgsm {
        #[serde(default = "linf")]
        norm: Norm,
        #[serde(default)]
        random_start: bool,
        /// Multiple of ε per step; default 1.0 (1.25 is the usual value with a random start).
        #[serde(default)]
        step_fraction: Option<f64>,
        #[serde(default)]
        eot: EotSetting,
    },
    Pgd {
        #[serde(default = "linf")]
        norm: Norm,
        #[serde(default = "default_pgd_steps")]
        steps: u32,
        /// Absolute step size; exclusive with `step_fraction`.
        #[serde(default)]
        step_size: Option<f64>,
        /// Step as a multiple of ε; default 2.5 / steps (Madry et al.).
        #[serde(default)]
        step_fraction: Option<f64>,
        #[serde(default = "default_true")]
        random_start: bool,
        #[serde(default = "default_restarts")]
        restarts: u32,
        #[serde(default)]
        eot: EotSetting,
    },
}

fn linf() -> Norm {
    Norm::Linf
}
fn default_pgd_steps() -> u32 {
    defaults::PGD_STEPS
}
fn default_true() -> bool {
    true
}
fn default_restarts() -> u32 {
    defaults::PGD_RESTARTS
}

/// `[defenses.NAME]`: a training procedure plus optional inference-time defenses. Which keys
/// apply depends on `kind`; a key that does not apply is an error naming it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefensePreset {
    /// `standard`, `adversarial` or `mixed`.
    pub kind: DefenseKind,
    /// adversarial: the attack preset that makes the training examples.
    #[serde(default)]
    pub attack: Option<String>,
    /// adversarial: a number, "8/255" or "tied"; mixed: the ε of both norms.
    #[serde(default)]
    pub epsilon: Option<EpsilonSetting>,
    /// Fraction of each batch replaced by adversarial examples (default 1).
    #[serde(default)]
    pub fraction: Option<f64>,
    /// mixed: the ℓ∞ and ℓ2 attack presets (default `pgd-linf`, `pgd-l2`).
    #[serde(default)]
    pub linf: Option<String>,
    #[serde(default)]
    pub l2: Option<String>,
    /// mixed: separate budgets per norm instead of `epsilon`.
    #[serde(default)]
    pub epsilon_linf: Option<EpsilonSetting>,
    #[serde(default)]
    pub epsilon_l2: Option<EpsilonSetting>,
    /// mixed: `both` (both versions in every batch, the default) or `worst` (per example).
    #[serde(default, deserialize_with = "strategy")]
    pub strategy: Option<MixStrategy>,
    /// σ of Gaussian noise added to inputs at inference (pixel units).
    #[serde(default)]
    pub inference_noise: Option<f64>,
    /// A DnCNN denoiser in front of the classifier.
    #[serde(default)]
    pub denoiser: Option<DenoiserSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenoiserSection {
    #[serde(default = "default_denoiser_blocks")]
    pub blocks: u32,
    #[serde(default = "default_denoiser_channels")]
    pub channels: u32,
    /// The attack preset that makes the (attacked, clean) training pairs.
    #[serde(default = "default_denoiser_attack")]
    pub attack: String,
    #[serde(default = "default_tied")]
    pub epsilon: EpsilonSetting,
    #[serde(default = "default_denoiser_epochs")]
    pub epochs: u32,
    #[serde(default = "default_denoiser_lr")]
    pub learning_rate: f64,
    /// Training pairs per denoiser epoch (0 = the whole training set): a compute budget.
    #[serde(default)]
    pub pairs_per_epoch: u32,
}

fn default_denoiser_blocks() -> u32 {
    defaults::DENOISER_BLOCKS
}
fn default_denoiser_channels() -> u32 {
    defaults::DENOISER_CHANNELS
}
fn default_denoiser_attack() -> String {
    defaults::DENOISER_ATTACK.to_owned()
}
fn default_tied() -> EpsilonSetting {
    EpsilonSetting::Tied
}
fn default_denoiser_epochs() -> u32 {
    defaults::DENOISER_EPOCHS
}
fn default_denoiser_lr() -> f64 {
    defaults::DENOISER_LEARNING_RATE
}

/// An ε written as a number or as a fraction string like `"8/255"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Epsilon(pub f64);

/// The ε of an adversarial-training defense.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EpsilonSetting {
    Fixed(f64),
    /// Train at the ε each cell is attacked with: one run per grid ε.
    Tied,
}

fn parse_fraction(text: &str) -> Option<f64> {
    let text = text.trim();
    match text.split_once('/') {
        Some((num, den)) => {
            let num: f64 = num.trim().parse().ok()?;
            let den: f64 = den.trim().parse().ok()?;
            (den != 0.0).then_some(num / den)
        }
        None => text.parse().ok(),
    }
}

struct EpsilonVisitor {
    allow_tied: bool,
}

impl serde::de::Visitor<'_> for EpsilonVisitor {
    type Value = EpsilonSetting;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if self.allow_tied {
            f.write_str("a number, a fraction such as \"8/255\", or \"tied\"")
        } else {
            f.write_str("a number or a fraction such as \"8/255\"")
        }
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(EpsilonSetting::Fixed(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(EpsilonSetting::Fixed(v as f64))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(EpsilonSetting::Fixed(v as f64))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if self.allow_tied && v.trim() == "tied" {
            return Ok(EpsilonSetting::Tied);
        }
        parse_fraction(v)
            .map(EpsilonSetting::Fixed)
            .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
    }
}

impl<'de> Deserialize<'de> for EpsilonSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EpsilonVisitor { allow_tied: true })
    }
}

impl<'de> Deserialize<'de> for Epsilon {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(EpsilonVisitor { allow_tied: false })? {
            EpsilonSetting::Fixed(v) => Ok(Epsilon(v)),
            EpsilonSetting::Tied => unreachable_tied(),
        }
    }
}

/// The visitor above never yields `Tied` when `allow_tied` is false.
fn unreachable_tied<E>() -> Result<Epsilon, E> {
    Ok(Epsilon(f64::NAN))
}

#[cfg(test)]
mod tests {
    use super::parse_fraction;

    #[test]
    fn fractions_parse() {
        assert_eq!(parse_fraction("8/255"), Some(8.0 / 255.0));
        assert_eq!(parse_fraction(" 0.5 "), Some(0.5));
        assert_eq!(parse_fraction("1/0"), None);
        assert_eq!(parse_fraction("eight"), None);
    }
}
