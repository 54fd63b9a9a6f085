//! The models' rules: a catalogue architecture or a TorchScript module (named so, and only
//! it), noise only where an architecture has injection points, and a model file by content —
//! its SHA-256, a size within the bounds, and a normalization only beside a TorchScript module
//! (one finite mean and one positive standard deviation per channel). Apart because model
//! sources grow (catalogue, weights, TorchScript, …).

use super::*;

impl Model {
    pub fn validate(&self) -> Checked {
        if self.name.is_empty() {
            return Err(FieldError::Missing("run.model.name"));
        }
        name("run.model.name", &self.name)?;
        self.noise
            .as_ref()
            .map_or(Ok(()), NoiseInjection::validate)?;
        let torchscript = self.is_torchscript();
        if torchscript != (self.name == crate::experiment::TORCHSCRIPT) {
            return Err(invalid(
                "run.model.name",
                format!(
                    "{}: a TorchScript module is named `torchscript`, and only it",
                    shown(&self.name, 64)
                ),
            ));
        }
        if torchscript && self.noise.is_some() {
            return Err(invalid(
                "run.model.noise",
                "noise injection needs the injection points of a catalogue architecture; a \
                 TorchScript module has none (inference noise is a defense: `inference_noise`)",
            ));
        }
        self.file.as_ref().map_or(Ok(()), ModelFile::validate)
    }
}

impl ModelFile {
    pub fn validate(&self) -> Checked {
        sha256("run.model.file.sha256", &self.sha256)?;
        if !(1..=MAX_MODEL_FILE_BYTES).contains(&self.bytes) {
            return Err(invalid(
                "run.model.file.bytes",
                format!("{} must be in 1..={MAX_MODEL_FILE_BYTES}", self.bytes),
            ));
        }
        match &self.normalize {
            None => Ok(()),
            Some(_) if self.format != ModelFormat::TorchScript => Err(invalid(
                "run.model.file.normalize",
                "only a TorchScript module declares its normalization (a catalogue \
                 architecture normalizes inside)",
            )),
            Some(n) => n.validate(),
        }
    }
}

impl InputNormalization {
    /// One mean and one positive standard deviation per channel, all finite.
    pub fn validate(&self) -> Checked {
        let channels = self.mean.len();
        if !(1..=MAX_CHANNELS).contains(&channels) || self.std.len() != channels {
            return Err(invalid(
                "normalize",
                format!(
                    "{} means and {} standard deviations: give one of each per input channel \
                     (1..={MAX_CHANNELS})",
                    channels,
                    self.std.len()
                ),
            ));
        }
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(invalid("normalize.mean", format!("{m} is not a number")));
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(invalid(
                "normalize.std",
                format!("{s} must be a positive number"),
            ));
        }
        Ok(())
    }
}

/// A lower-case hex SHA-256 (64 digits).
pub fn sha256(field: &'static str, value: &str) -> Checked {
    if value.len() == 64
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{} is not a SHA-256 (64 lower-case hex digits)",
                shown(value, 80)
            ),
        ))
    }
}
