//! The one mapping between the experiment vocabulary and the v1 wire types.
//!
//! Encoding (`encode`) is total. Decoding (`decode`, `metrics`) never panics: it fills
//! in what proto3 cannot leave unset (0 restarts means 1), then checks the result with the
//! types' own `validate()` ([`crate::validate`]); a missing or out-of-range field is a
//! [`WireError`] that names it, which the gRPC layers turn into `invalid_argument`. Every size a
//! peer controls is bounded (the `MAX_*` constants of [`crate::limits`], re-exported here), and
//! the sweep-file resolver runs the same `validate()`, so whatever the coordinator hands out a
//! worker also accepts.
//!
//! Non-finite metrics: an epoch's `train_loss` may be NaN or +∞ (a diverged run is data worth
//! keeping and plotting around), its accuracies NaN ("not measured") or in [0, 1]; timings must
//! be finite and non-negative. Cell results are numbers a report averages, so every field must be
//! finite (accuracies in [0, 1]).

mod decode;
mod encode;
mod metrics;
#[cfg(test)]
mod tests;

pub use crate::limits::*;
pub use decode::{
    attack_from_wire, cell_from_wire, data_from_wire, defense_from_wire, epsilon_space_from_wire,
    inference_from_status, model_from_wire, run_from_wire, training_from_wire,
};
pub use encode::{
    attack_to_wire, cell_to_wire, data_to_wire, defense_to_wire, denoiser_to_wire,
    epsilon_space_to_wire, model_to_wire, norm_to_wire, run_to_wire, training_to_wire,
};
pub use metrics::{
    cell_chunk_from_wire, cell_chunk_to_wire, cell_result_from_wire, cell_result_to_wire,
    epoch_from_wire, epoch_metrics_from_wire, epoch_to_wire,
};

/// A decoding error: the field missing or invalid ([`crate::validate::FieldError`]).
pub type WireError = crate::validate::FieldError;

/// An identifier: 1–[`MAX_ID_BYTES`] printable ASCII characters, no spaces.
pub fn check_id(value: &str, field: &'static str) -> Result<(), WireError> {
    crate::validate::id(field, value)
}

/// A display name: at most [`MAX_NAME_BYTES`] bytes, no control or bidi characters (may be empty).
pub fn check_name(value: &str, field: &'static str) -> Result<(), WireError> {
    crate::validate::name(field, value)
}

/// A file-system path: 1–[`MAX_PATH_BYTES`] bytes, no NUL or other control characters.
pub fn check_path(value: &str, field: &'static str) -> Result<(), WireError> {
    crate::validate::path(field, value)
}
