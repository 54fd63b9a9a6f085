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

/// The robust accuracy after one stage of a cascade (AutoAttack).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StageAccuracy {
    /// The stage's label ([`crate::Attack::label`]): `apgd-ce`, `apgd-t`, `fab-t`, `square`, …
    pub name: String,
    /// Accuracy on the evaluated images once this stage and every earlier one have run, in
    /// [0, 1] (never above the previous stage's).
    pub accuracy: f64,
}

impl StageAccuracy {
    /// The stage's name as reports show it: `APGD-CE`, `APGD-DLR`, `APGD-T`, `FAB-T`, `Square`
    /// (an ℓ2 stage's label ends in `-l2`, which the cell's norm already says).
    pub fn title(&self) -> String {
        stage_title(&self.name)
    }

    /// Whether the stage is the black-box one (Square), which queries scores only.
    pub fn is_black_box(&self) -> bool {
        self.name.trim_end_matches("-l2") == "square"
    }
}

/// A stage label ([`crate::Attack::label`]) as reports show it.
pub fn stage_title(label: &str) -> String {
    match label.trim_end_matches("-l2") {
        "apgd-ce" => "APGD-CE".to_owned(),
        "apgd-dlr" => "APGD-DLR".to_owned(),
        "apgd-t" => "APGD-T".to_owned(),
        "fab-t" => "FAB-T".to_owned(),
        "square" => "Square".to_owned(),
        _ => label.to_owned(),
    }
}

/// The outcome of one cell.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
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
    /// A cascade's robust accuracy after each of its stages, in order (the last one is
    /// `accuracy`); empty for any other attack.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageAccuracy>,
}
