//! The sweep file as written by a user (TOML, `version = 1`), before presets are resolved.
//!
//! Every table denies unknown keys, so a typo (`epoch = 5`) is an error that names the key
//! instead of a silently ignored setting; every value has one type (`strict`: `epochs = "5"` is
//! an error naming `training.epochs` and its line, not 5).

use std::collections::BTreeMap;

use advsweep_core::catalogue::defaults;
use advsweep_core::{ApgdLoss, EpsilonSpace, MixStrategy, Norm, Precision};
use serde::Deserialize;

mod strict;
mod tagged;
mod values;

pub use strict::{ParseError, parse};
pub use values::{
    CascadeSetting, DefenseKind, EotSetting, Epsilon, EpsilonSetting, OptimizerKind, ScheduleKind,
};
use values::{precision, strategy};

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

/// `[data]`: where the images come from. Read as one flat table and then split by `source`
/// (`tagged`), so an error inside names its key and line.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "tagged::DataTable")]
pub enum DataSection {
    Synthetic {
        seed: u64,
        train_size: u32,
        test_size: u32,
        train_limit: u32,
    },
    Cifar10 {
        /// Directory with the binary batches; `ADVSWEEP_CIFAR10_DIR` or `--data-path` override it.
        path: String,
        train_limit: u32,
    },
    /// The CIFAR-100 binary layout (`train.bin`, `test.bin`); 100 classes.
    Cifar100 { path: String, train_limit: u32 },
    /// `train/<class>/*.png|jpg` and `test/<class>/*.png|jpg` (e.g. the CIFAR-10 JPEG mirror).
    ImageFolder { path: String, train_limit: u32 },
}

fn pixel() -> EpsilonSpace {
    EpsilonSpace::Pixel
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
    /// `fp32` or `bf16` (autocast) for the training step; evaluation is always fp32. An
    /// unknown name is a parse error naming `training.precision` and the known names.
    #[serde(default, deserialize_with = "precision")]
    pub precision: Precision,
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
            precision: Precision::Fp32,
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
    /// Disjoint slices of the test images each cell is split into, leased independently (on
    /// as many workers) and merged back into one cell by reports. Evaluate-only runs
    /// (`[training] epochs = 0`); 1 = unsharded.
    #[serde(default = "default_shards")]
    pub shards: u32,
}

impl Default for EvaluationSection {
    fn default() -> Self {
        EvaluationSection {
            limit: default_eval_limit(),
            batch_size: default_eval_batch_size(),
            eot_samples: default_eot_samples(),
            shards: default_shards(),
        }
    }
}

fn default_shards() -> u32 {
    1
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

/// `[models.NAME]`: an architecture (optionally with noisy layers, optionally starting from a
/// weights file), or a researcher's TorchScript module. File paths are relative to the sweep
/// file; the client hashes and uploads the files, the coordinator knows them by hash.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPreset {
    /// `basic`, `resnet18`, `wrn-D-K`, `vgg11`, `vgg16`; absent for a TorchScript module.
    #[serde(default)]
    pub arch: Option<String>,
    #[serde(default)]
    pub noise: Option<NoiseSection>,
    /// A safetensors state_dict of `arch` (PyTorch's keys, docs/CHECKPOINTS.md) to start from.
    #[serde(default)]
    pub weights: Option<String>,
    /// A module saved by `torch.jit.script`/`trace`: images in [0, 1] → logits.
    #[serde(default)]
    pub torchscript: Option<String>,
    /// For a TorchScript module that expects normalized input: the per-channel statistics.
    #[serde(default)]
    pub normalize: Option<NormalizeSection>,
}

/// `normalize = { mean = [...], std = [...] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizeSection {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
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

/// `[attacks.NAME]`, by `kind`. Read as one flat table and then split (`tagged`), so an error
/// inside names its key and line; the defaults of each kind are applied there.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "tagged::AttackTable")]
pub enum AttackPreset {
    None,
    Fgsm {
        norm: Norm,
        random_start: bool,
        /// Multiple of ε per step; default 1.0 (1.25 is the usual value with a random start).
        step_fraction: Option<f64>,
        eot: EotSetting,
    },
    Pgd {
        norm: Norm,
        steps: u32,
        /// Absolute step size; exclusive with `step_fraction`.
        step_size: Option<f64>,
        /// Step as a multiple of ε; default 2.5 / steps (Madry et al.).
        step_fraction: Option<f64>,
        random_start: bool,
        restarts: u32,
        eot: EotSetting,
    },
    /// APGD; `targets` > 0 is APGD-T (targeted DLR).
    Apgd {
        norm: Norm,
        loss: ApgdLoss,
        targets: u32,
        steps: u32,
        restarts: u32,
        eot: EotSetting,
    },
    /// FAB: untargeted with `targets` = 0, else FAB-T (the top-`targets` wrong classes).
    Fab {
        norm: Norm,
        targets: u32,
        steps: u32,
        restarts: u32,
        eot: EotSetting,
    },
    /// Square (no gradients, so no EOT).
    Square {
        norm: Norm,
        queries: u32,
        p_init: f64,
        restarts: u32,
    },
    /// AutoAttack: a named version or a list of stage presets; `eot` applies to every stage
    /// that takes gradients (`auto` against a randomized model: `standard` becomes the `rand`
    /// version; `plus` and a list keep their stages).
    AutoAttack {
        norm: Norm,
        version: CascadeSetting,
        eot: EotSetting,
    },
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
