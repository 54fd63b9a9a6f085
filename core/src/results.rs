//! What workers measure and the coordinator stores.

use serde::{Deserialize, Serialize};

/// One epoch of training.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: u32,
    pub train_loss: f64,
    pub train_accuracy: f64,
    /// Clean accuracy on the evaluation subset after this epoch.
    pub test_accuracy: f64,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// The outcome of one cell.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CellResult {
    /// Accuracy on the attacked inputs, in [0, 1].
    pub accuracy: f64,
    /// Fraction of clean-correct examples that the attack turned wrong.
    pub attack_success_rate: f64,
    pub mean_linf: f64,
    pub mean_l2: f64,
    pub images_per_second: f64,
    pub seconds: f64,
    pub examples: u32,
}
