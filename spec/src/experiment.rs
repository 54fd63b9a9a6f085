//! Runs and cells, fully resolved.
//!
//! Serialization (serde) is used for content ids and for durable storage; field order is part
//! of the canonical form, so changing a field's name or order changes every id.

use serde::{Deserialize, Serialize};

/// The norm of a perturbation budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    Linf,
    L2,
}

impl Norm {
    pub fn as_str(self) -> &'static str {
        match self {
            Norm::Linf => "linf",
            Norm::L2 => "l2",
        }
    }
}

/// Step size of an iterative attack.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepSize {
    /// The same step whatever the epsilon.
    Absolute(f64),
    /// A multiple of the epsilon the attack runs at (Madry et al. use 2.5 ε / steps).
    FractionOfEpsilon(f64),
}

impl StepSize {
    pub fn resolve(self, epsilon: f64) -> f64 {
        match self {
            StepSize::Absolute(step) => step,
            StepSize::FractionOfEpsilon(fraction) => fraction * epsilon,
        }
    }
}

/// A white-box attack with all its parameters except the budget ε.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Attack {
    /// Clean evaluation.
    None,
    /// One signed-gradient (ℓ∞) or normalized-gradient (ℓ2) step.
    Fgsm {
        norm: Norm,
        random_start: bool,
        /// Step as a multiple of ε: 1.0 for FGSM, 1.25 for FGSM with random start.
        step_fraction: f64,
    },
    /// Projected gradient descent with optional random start and restarts.
    Pgd {
        norm: Norm,
        steps: u32,
        step: StepSize,
        random_start: bool,
        restarts: u32,
    },
}

impl Attack {
    pub fn is_none(&self) -> bool {
        matches!(self, Attack::None)
    }
}

/// A model from the catalogue. Inputs are images in [0, 1]; normalization is inside the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    pub name: String,
}

/// How a run's model is trained (and, later, wrapped at inference).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Defense {
    Standard,
    /// Each batch, `fraction` of the examples are replaced by `attack` at `epsilon` against the
    /// current weights.
    Adversarial {
        attack: Attack,
        epsilon: f64,
        fraction: f64,
    },
}

impl Defense {
    /// The ε the defense trains with, when it has one.
    pub fn epsilon(&self) -> Option<f64> {
        match self {
            Defense::Standard => None,
            Defense::Adversarial { epsilon, .. } => Some(*epsilon),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Optimizer {
    Sgd {
        momentum: f64,
        weight_decay: f64,
        nesterov: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSpec {
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    pub optimizer: Optimizer,
    /// Random crop with 4 px padding and horizontal flips.
    pub augment: bool,
    pub eval_batch_size: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSource {
    /// A deterministic, learnable 10-class 32×32×3 data set generated from `seed`.
    Synthetic {
        seed: u64,
        train_size: u32,
        test_size: u32,
    },
    /// The official CIFAR-10 binary layout (`data_batch_{1..5}.bin`, `test_batch.bin`).
    Cifar10Binary { path: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSpec {
    pub source: DataSource,
    /// Test images used for evaluation (0 = all).
    pub eval_limit: u32,
    /// Training images used (0 = all).
    pub train_limit: u32,
}

/// One training job. Its id is a hash of everything here except `id` and `defense_name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub id: String,
    pub model: Model,
    /// The preset name the sweep file used, for display.
    pub defense_name: String,
    pub defense: Defense,
    pub training: TrainingSpec,
    pub data: DataSpec,
    pub seed: u64,
}

/// One evaluation of a run's trained weights. Its id hashes the run id, attack and ε.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellSpec {
    pub id: String,
    pub run_id: String,
    /// The preset name the sweep file used, for display.
    pub attack_name: String,
    pub attack: Attack,
    /// The budget; for the clean attack `none` it labels the run's training ε (0 if none).
    pub epsilon: f64,
}
