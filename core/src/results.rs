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
        "fab" => "FAB".to_owned(),
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
    /// What the worker's sanity checks found while evaluating the cell (AutoAttack's: hidden
    /// randomness, zero input gradients); shown with the run's warnings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Examples classified correctly without the attack (the success rate's denominator) and
    /// those of them the attack made wrong: with `examples` and the accuracies, the counts a
    /// sharded cell's parts are merged by exactly. 0 in results stored before they existed.
    #[serde(default)]
    pub clean_correct: u32,
    #[serde(default)]
    pub flipped: u32,
}

impl CellResult {
    /// Examples classified correctly under the attack (`accuracy` is this over `examples`).
    pub fn correct(&self) -> u32 {
        count_of(self.accuracy, self.examples)
    }
}

/// The count behind a fraction of `examples` (exact: the fraction was computed from it).
pub fn count_of(fraction: f64, examples: u32) -> u32 {
    (fraction * f64::from(examples))
        .round()
        .clamp(0.0, f64::from(examples)) as u32
}

/// A cell's finished part: the sums over evaluation examples `start .. start + images` (one or
/// more evaluation batches), and the cell's random stream where it stopped. A long cell (an
/// AutoAttack on 10,000 images) reports one after another through the coordinator, which
/// stores them durably; a worker that leases the run again resumes the cell after the last one
/// instead of starting over, with results identical to an uninterrupted evaluation (the chunk
/// boundaries are batch boundaries, and `rng_state` continues the random stream exactly).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CellChunk {
    /// First evaluation example (0-based); a cell's chunks are contiguous from 0.
    pub start: u32,
    pub images: u32,
    /// Attacked inputs classified correctly.
    pub adversarial_correct: u32,
    /// Clean inputs classified correctly.
    pub clean_correct: u32,
    /// Clean-correct inputs the attack made wrong.
    pub flipped: u32,
    /// Σ‖δ‖∞ and Σ‖δ‖₂ over the chunk's examples, in pixel space.
    pub linf_sum: f64,
    pub l2_sum: f64,
    /// A cascade's robust images after each stage (empty for other attacks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stage_robust: Vec<u32>,
    /// Wall time spent on the chunk.
    pub seconds: f64,
    /// The cell's random stream after the chunk (SplitMix64 state).
    pub rng_state: u64,
}

impl CellChunk {
    /// One past the chunk's last example.
    pub fn end(&self) -> u64 {
        u64::from(self.start) + u64::from(self.images)
    }

    /// Names the first field that cannot be: no images, counts above the images (or stage
    /// counts rising), sums that are not finite and non-negative.
    pub fn validate(&self) -> Result<(), crate::FieldError> {
        let bad = |field: &'static str, why: String| Err(crate::validate::invalid(field, why));
        if self.images == 0 {
            return bad(
                "chunk.images",
                "a chunk holds at least one image".to_owned(),
            );
        }
        for (field, count) in [
            ("chunk.adversarial_correct", self.adversarial_correct),
            ("chunk.clean_correct", self.clean_correct),
            ("chunk.flipped", self.flipped),
        ] {
            if count > self.images {
                return bad(
                    field,
                    format!("{count} is more than the chunk's {} images", self.images),
                );
            }
        }
        if self.flipped > self.clean_correct {
            return bad(
                "chunk.flipped",
                format!(
                    "{} is more than the {} clean-correct images",
                    self.flipped, self.clean_correct
                ),
            );
        }
        let mut previous = self.images;
        for &robust in &self.stage_robust {
            if robust > previous {
                return bad(
                    "chunk.stage_robust",
                    format!("{robust} robust after a stage that left {previous}"),
                );
            }
            previous = robust;
        }
        for (field, value) in [
            ("chunk.linf_sum", self.linf_sum),
            ("chunk.l2_sum", self.l2_sum),
            ("chunk.seconds", self.seconds),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return bad(
                    field,
                    format!("{value} is not a finite non-negative number"),
                );
            }
        }
        Ok(())
    }
}
