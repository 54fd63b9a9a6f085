//! What a sweep file means when it leaves a key out, and what the worker's bench runs with:
//! one value each.

use crate::{LrSchedule, Optimizer, Precision, TrainingSpec};

/// `[training]`
pub const EPOCHS: u32 = 5;
pub const BATCH_SIZE: u32 = 128;
pub const LEARNING_RATE: f64 = 0.01;
pub const MOMENTUM: f64 = 0.9;
pub const WEIGHT_DECAY: f64 = 5e-4;
pub const BETA1: f64 = 0.9;
pub const BETA2: f64 = 0.999;
/// `step` schedule: multiply the learning rate by [`STEP_GAMMA`] every [`STEP_EVERY`] epochs.
pub const STEP_EVERY: u32 = 10;
pub const STEP_GAMMA: f64 = 0.1;
pub const CHECKPOINT_EVERY: u32 = 1;

/// `[evaluation]`: test images per cell, the evaluation batch, and the gradient samples per
/// step `eot = "auto"` gives against a randomized model.
pub const EVAL_LIMIT: u32 = 1000;
pub const EVAL_BATCH_SIZE: u32 = 500;
pub const AUTO_EOT_SAMPLES: u32 = 10;

/// `[retry]`: failed attempts before a run is failed for good.
pub const MAX_ATTEMPTS: u32 = 3;

/// `[data] source = "synthetic"`: training and test images.
pub const SYNTHETIC_TRAIN_SIZE: u32 = 4000;
pub const SYNTHETIC_TEST_SIZE: u32 = 1000;

/// `[attacks.NAME] kind = "pgd"`: steps and restarts.
pub const PGD_STEPS: u32 = 10;
pub const PGD_RESTARTS: u32 = 1;
/// PGD's step when none is given: 2.5 ε / steps (Madry et al.).
pub const fn pgd_step_fraction(steps: u32) -> f64 {
    2.5 / steps as f64
}
/// `kind = "apgd"`, `"fab"`, `"square"`: the AutoAttack reference's budgets (Croce & Hein
/// 2020; Andriushchenko et al. 2020): 100 steps, 9 target classes (CIFAR-10's wrong ones),
/// 5,000 queries from p_init = 0.8, 20 gradient samples in the `rand` version and 5 restarts
/// of APGD-CE, APGD-DLR and (untargeted) FAB in the `plus` version.
pub const APGD_STEPS: u32 = 100;
pub const FAB_STEPS: u32 = 100;
pub const ATTACK_TARGETS: u32 = 9;
pub const SQUARE_QUERIES: u32 = 5000;
pub const SQUARE_P_INIT: f64 = 0.8;
pub const RAND_EOT_SAMPLES: u32 = 20;
pub const PLUS_RESTARTS: u32 = 5;
/// `kind = "fgsm"`: its step as a multiple of ε.
pub const FGSM_STEP_FRACTION: f64 = 1.0;

/// `[defenses.NAME] kind = "mixed"`: the attack presets of its two slots.
pub const MIXED_LINF_ATTACK: &str = "pgd-linf";
pub const MIXED_L2_ATTACK: &str = "pgd-l2";
/// Share of each batch replaced by adversarial examples.
pub const ADVERSARIAL_FRACTION: f64 = 1.0;

/// `[defenses.NAME.denoiser]`: a DnCNN of [`DENOISER_BLOCKS`] blocks of [`DENOISER_CHANNELS`]
/// channels, trained on pairs [`DENOISER_ATTACK`] makes.
pub const DENOISER_BLOCKS: u32 = 10;
pub const DENOISER_CHANNELS: u32 = 64;
pub const DENOISER_ATTACK: &str = "pgd-linf";
pub const DENOISER_EPOCHS: u32 = 5;
pub const DENOISER_LEARNING_RATE: f64 = 1e-3;

/// The SGD of a `[training]` table that sets nothing else.
pub const SGD: Optimizer = Optimizer::Sgd {
    momentum: MOMENTUM,
    weight_decay: WEIGHT_DECAY,
    nesterov: false,
};

/// A `[training]` table that sets nothing but `epochs` and `batch_size` (constant schedule, no
/// augmentation, fp32), with the default evaluation batch.
pub fn training(epochs: u32, batch_size: u32) -> TrainingSpec {
    TrainingSpec {
        epochs,
        batch_size,
        learning_rate: LEARNING_RATE,
        optimizer: SGD,
        schedule: LrSchedule::Constant,
        augment: false,
        eval_batch_size: EVAL_BATCH_SIZE,
        checkpoint_every: CHECKPOINT_EVERY,
        precision: Precision::Fp32,
    }
}
