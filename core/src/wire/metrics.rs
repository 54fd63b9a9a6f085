//! Epoch metrics and cell results, both ways. Reports from workers are checked against the NaN
//! policy of the module docs ([`super`]); what the coordinator stored is shown as it is.

use advsweep_proto::v1 as pb;

use super::{MAX_EPOCHS, WireError};
use crate::limits::MAX_CASCADE_STAGES;
use crate::validate::name;
use crate::validate::{hides_text, in_range, invalid, shown};
use crate::{CellChunk, CellResult, EpochMetrics, StageAccuracy};

/// The copies both ways between a core type and its wire message, which have the same fields
/// (listed once here): into the message, and out of it as it is (no validation).
macro_rules! same_fields {
    (
        $ty:ident { $($field:ident),+ $(,)? }
        $(#[$to_doc:meta])* $to_vis:vis fn $to_wire:ident;
        $(#[$from_doc:meta])* $from_vis:vis fn $from_wire:ident;
    ) => {
        $(#[$to_doc])*
        $to_vis fn $to_wire(v: &$ty) -> pb::$ty {
            pb::$ty { $($field: v.$field),+ }
        }

        $(#[$from_doc])*
        $from_vis fn $from_wire(v: &pb::$ty) -> $ty {
            $ty { $($field: v.$field),+ }
        }
    };
}

same_fields! {
    EpochMetrics { epoch, train_loss, train_accuracy, test_accuracy, seconds, images_per_second }
    pub fn epoch_to_wire;
    /// An epoch as shown by `status` and reports: no validation (what the coordinator stored).
    /// Reports from workers go through [`epoch_metrics_from_wire`].
    pub fn epoch_from_wire;
}

/// A result into its message.
pub fn cell_result_to_wire(v: &CellResult) -> pb::CellResult {
    pb::CellResult {
        accuracy: v.accuracy,
        attack_success_rate: v.attack_success_rate,
        mean_linf: v.mean_linf,
        mean_l2: v.mean_l2,
        images_per_second: v.images_per_second,
        seconds: v.seconds,
        examples: v.examples,
        stages: v
            .stages
            .iter()
            .map(|s| pb::StageAccuracy {
                name: s.name.clone(),
                accuracy: s.accuracy,
            })
            .collect(),
        warnings: v.warnings.clone(),
        clean_correct: v.clean_correct,
        flipped: v.flipped,
    }
}

/// A result as reported, copied; [`cell_result_from_wire`] checks it first.
fn copy_cell_result_from_wire(v: &pb::CellResult) -> CellResult {
    CellResult {
        accuracy: v.accuracy,
        attack_success_rate: v.attack_success_rate,
        mean_linf: v.mean_linf,
        mean_l2: v.mean_l2,
        images_per_second: v.images_per_second,
        seconds: v.seconds,
        examples: v.examples,
        stages: v
            .stages
            .iter()
            .map(|s| StageAccuracy {
                name: s.name.clone(),
                accuracy: s.accuracy,
            })
            .collect(),
        warnings: v.warnings.clone(),
        clean_correct: v.clean_correct,
        flipped: v.flipped,
    }
}

/// An accuracy: in [0, 1], or NaN when it was not measured.
fn accuracy_or_nan(value: f64, field: &'static str) -> Result<f64, WireError> {
    if value.is_nan() || (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(invalid(field, format!("{value} is not in [0, 1] (or NaN)")))
    }
}

/// A training loss: non-negative, or NaN / +∞ for a diverged run (kept as data).
fn loss(value: f64, field: &'static str) -> Result<f64, WireError> {
    if value.is_nan() || value >= 0.0 {
        Ok(value)
    } else {
        Err(invalid(
            field,
            format!("{value} is negative (a loss is ≥ 0, or NaN / inf when diverged)"),
        ))
    }
}

fn finite_non_negative(value: f64, field: &'static str) -> Result<f64, WireError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(invalid(
            field,
            format!("{value} is not a finite non-negative number"),
        ))
    }
}

/// An epoch reported by a worker, validated (see the module docs for the NaN policy).
pub fn epoch_metrics_from_wire(m: &pb::EpochMetrics) -> Result<EpochMetrics, WireError> {
    Ok(EpochMetrics {
        epoch: {
            in_range("epochs.epoch", m.epoch, 1, MAX_EPOCHS)?;
            m.epoch
        },
        train_loss: loss(m.train_loss, "epochs.train_loss")?,
        train_accuracy: accuracy_or_nan(m.train_accuracy, "epochs.train_accuracy")?,
        test_accuracy: accuracy_or_nan(m.test_accuracy, "epochs.test_accuracy")?,
        seconds: finite_non_negative(m.seconds, "epochs.seconds")?,
        images_per_second: finite_non_negative(m.images_per_second, "epochs.images_per_second")?,
    })
}

pub fn cell_result_from_wire(r: &pb::CellResult) -> Result<CellResult, WireError> {
    for (value, field) in [
        (r.accuracy, "result.accuracy"),
        (r.attack_success_rate, "result.attack_success_rate"),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return Err(invalid(field, format!("{value} is not in [0, 1]")));
        }
    }
    for (value, field) in [
        (r.mean_linf, "result.mean_linf"),
        (r.mean_l2, "result.mean_l2"),
        (r.images_per_second, "result.images_per_second"),
        (r.seconds, "result.seconds"),
    ] {
        finite_non_negative(value, field)?;
    }
    if r.stages.len() > MAX_CASCADE_STAGES {
        return Err(invalid(
            "result.stages",
            format!("{} stages, more than {MAX_CASCADE_STAGES}", r.stages.len()),
        ));
    }
    for stage in &r.stages {
        if stage.name.is_empty() {
            return Err(WireError::Missing("result.stages.name"));
        }
        name("result.stages.name", &stage.name)?;
        if !(0.0..=1.0).contains(&stage.accuracy) {
            return Err(invalid(
                "result.stages.accuracy",
                format!("{} is not in [0, 1]", stage.accuracy),
            ));
        }
    }
    if r.warnings.len() > MAX_CELL_WARNINGS {
        return Err(invalid(
            "result.warnings",
            format!(
                "{} warnings, more than {MAX_CELL_WARNINGS}",
                r.warnings.len()
            ),
        ));
    }
    for warning in &r.warnings {
        if warning.is_empty()
            || warning.len() > MAX_CELL_WARNING_BYTES
            || warning.chars().any(hides_text)
        {
            return Err(invalid(
                "result.warnings",
                format!(
                    "{} is not a warning (1–{MAX_CELL_WARNING_BYTES} bytes, no control or bidi \
                     characters)",
                    shown(warning, 64)
                ),
            ));
        }
    }
    if r.clean_correct > r.examples {
        return Err(invalid(
            "result.clean_correct",
            format!(
                "{} is more than the {} examples",
                r.clean_correct, r.examples
            ),
        ));
    }
    if r.flipped > r.clean_correct {
        return Err(invalid(
            "result.flipped",
            format!(
                "{} is more than the {} clean-correct examples",
                r.flipped, r.clean_correct
            ),
        ));
    }
    Ok(copy_cell_result_from_wire(r))
}

/// Most sanity warnings one cell result may carry.
pub const MAX_CELL_WARNINGS: usize = 8;
/// Longest sanity warning.
pub const MAX_CELL_WARNING_BYTES: usize = 1000;

/// A chunk into its message.
pub fn cell_chunk_to_wire(v: &CellChunk) -> pb::CellChunk {
    pb::CellChunk {
        start: v.start,
        images: v.images,
        adversarial_correct: v.adversarial_correct,
        clean_correct: v.clean_correct,
        flipped: v.flipped,
        linf_sum: v.linf_sum,
        l2_sum: v.l2_sum,
        stage_robust: v.stage_robust.clone(),
        seconds: v.seconds,
        rng_state: v.rng_state,
    }
}

/// A chunk from its message, checked by [`CellChunk::validate`] (and no more stages than a
/// cascade may have).
pub fn cell_chunk_from_wire(v: &pb::CellChunk) -> Result<CellChunk, WireError> {
    if v.stage_robust.len() > MAX_CASCADE_STAGES {
        return Err(invalid(
            "chunk.stage_robust",
            format!(
                "{} stages, more than {MAX_CASCADE_STAGES}",
                v.stage_robust.len()
            ),
        ));
    }
    let chunk = CellChunk {
        start: v.start,
        images: v.images,
        adversarial_correct: v.adversarial_correct,
        clean_correct: v.clean_correct,
        flipped: v.flipped,
        linf_sum: v.linf_sum,
        l2_sum: v.l2_sum,
        stage_robust: v.stage_robust.clone(),
        seconds: v.seconds,
        rng_state: v.rng_state,
    };
    chunk.validate()?;
    Ok(chunk)
}
