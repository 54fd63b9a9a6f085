//! What a valid run and cell are: one `validate()` per vocabulary type, each rule written once.
//!
//! The sweep-file resolver (the coordinator's `sweep::expand`) and [`crate::wire`] decoding call
//! these and nothing else does, so a run the coordinator hands out is exactly a run a worker
//! accepts. A failed rule is a [`FieldError`] naming the field by its wire path (`attack.pgd.steps`,
//! `training.sgd.momentum`: the one spelling every field has); its reason starts with the value
//! (`4294967295 must be in 1..=10000`), so the sweep file can show it as `steps = 4294967295 must
//! be in 1..=10000` and the wire as ``field `attack.pgd.steps` is invalid: …``.
//!
//! Decoding may first normalize what proto3 cannot leave unset (0 restarts means 1); the rules
//! here judge the normalized value.

use crate::catalogue::datasets::CIFAR10_CLASSES;
use crate::limits::{
    MAX_BATCH_SIZE, MAX_DENOISER_BLOCKS, MAX_DENOISER_CHANNELS, MAX_EOT_SAMPLES, MAX_EPOCHS,
    MAX_ID_BYTES, MAX_NAME_BYTES, MAX_NOISE_LAYERS, MAX_PATH_BYTES, MAX_PGD_STEPS, MAX_RESTARTS,
    MAX_SHARDS, MAX_SYNTHETIC_IMAGES, MIN_SYNTHETIC_IMAGES, max_epsilon,
};
use crate::limits::{
    MAX_CASCADE_STAGES, MAX_CHANNELS, MAX_MODEL_FILE_BYTES, MAX_SQUARE_QUERIES, MAX_TARGETS,
};
use crate::{
    ApgdLoss, Attack, CellSpec, DataSource, DataSpec, Defense, DenoiserSpec, EpsilonSpace,
    InferenceDefense, InputNormalization, LrSchedule, Model, ModelFile, ModelFormat,
    NoiseInjection, Norm, Optimizer, RunSpec, StepSize, TrainingMethod, TrainingSpec,
};

/// A field that is missing or breaks a rule, named by its wire path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FieldError {
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` is invalid: {why}")]
    Invalid { field: &'static str, why: String },
}

impl FieldError {
    /// The field's wire path.
    pub fn field(&self) -> &'static str {
        match self {
            FieldError::Missing(field) | FieldError::Invalid { field, .. } => field,
        }
    }
}

/// The result of a rule.
pub type Checked<T = ()> = Result<T, FieldError>;

/// `field` breaks a rule, for the reason `why` (which starts with the value).
pub fn invalid(field: &'static str, why: impl Into<String>) -> FieldError {
    FieldError::Invalid {
        field,
        why: why.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// the rules, each once
// ---------------------------------------------------------------------------------------------

/// At most `max` bytes of `value`, quoted and escaped, cut at a character boundary: how a value
/// a peer or a user sent is shown in an error message.
pub fn shown(value: &str, max: usize) -> String {
    if value.len() <= max {
        return format!("{value:?}");
    }
    let mut cut = max;
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}… ({} bytes)", &value[..cut], value.len())
}

/// `value` in `min..=max`.
pub fn in_range(field: &'static str, value: u32, min: u32, max: u32) -> Checked {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(field, format!("{value} must be in {min}..={max}")))
    }
}

/// A finite number greater than 0.
pub fn positive(field: &'static str, value: f64) -> Checked {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value} must be positive and finite"),
        ))
    }
}

/// A finite number, 0 or more.
pub fn non_negative(field: &'static str, value: f64) -> Checked {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value} must be non-negative and finite"),
        ))
    }
}

/// A perturbation budget ε: finite, 0 or more.
pub fn epsilon(field: &'static str, value: f64) -> Checked {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value}: ε must be a non-negative finite number"),
        ))
    }
}

/// A budget ε of norm `norm` measured in `space`: an [`epsilon`] no larger than the image's
/// diameter in that norm ([`max_epsilon`]).
pub fn epsilon_within(field: &'static str, value: f64, norm: Norm, space: EpsilonSpace) -> Checked {
    // `1e300` as written, not 301 digits.
    let shown_value = if value.abs() >= 1e9 {
        format!("{value:e}")
    } else {
        value.to_string()
    };
    epsilon(field, value)?;
    let max = max_epsilon(norm, space);
    if value <= max {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{shown_value}: an {} budget in {} space must be at most {}, the image's diameter",
                match norm {
                    Norm::Linf => "ℓ∞",
                    Norm::L2 => "ℓ2",
                },
                space.as_str(),
                (max * 1e4).floor() / 1e4
            ) + &pixel_hint(value, norm, space),
        ))
    }
}

/// For an ℓ∞ pixel budget written in 0–255 units (`8` meant as 8/255): the fraction to write.
fn pixel_hint(value: f64, norm: Norm, space: EpsilonSpace) -> String {
    if norm == Norm::Linf && space == EpsilonSpace::Pixel && value > 1.0 && value <= 255.0 {
        let k = if value.fract() == 0.0 {
            format!("{value}")
        } else {
            format!("{value:.1}")
        };
        format!(" (pixels are in [0, 1]: did you mean \"{k}/255\"?)")
    } else {
        String::new()
    }
}

/// A share of a batch: in (0, 1].
pub fn fraction(field: &'static str, value: f64) -> Checked {
    if value > 0.0 && value <= 1.0 {
        Ok(())
    } else {
        Err(invalid(field, format!("{value} must be in (0, 1]")))
    }
}

/// A decay rate (momentum, Adam's β): in [0, 1).
pub fn decay_rate(field: &'static str, value: f64) -> Checked {
    if (0.0..1.0).contains(&value) {
        Ok(())
    } else {
        Err(invalid(field, format!("{value} must be in [0, 1)")))
    }
}

/// Gradient samples per attack step: 1..=[`MAX_EOT_SAMPLES`].
pub fn eot_samples(field: &'static str, value: u32) -> Checked {
    in_range(field, value, 1, MAX_EOT_SAMPLES)
}

/// An identifier: 1–[`MAX_ID_BYTES`] printable ASCII characters, no spaces.
pub fn id(field: &'static str, value: &str) -> Checked {
    if value.is_empty() {
        return Err(FieldError::Missing(field));
    }
    if value.len() > MAX_ID_BYTES || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            field,
            format!(
                "{} is not an id (1-{MAX_ID_BYTES} printable ASCII characters, no spaces)",
                shown(value, 64)
            ),
        ));
    }
    Ok(())
}

/// A display name: at most [`MAX_NAME_BYTES`] bytes, no control or bidi characters
/// ([`hides_text`]; may be empty).
pub fn name(field: &'static str, value: &str) -> Checked {
    if value.len() > MAX_NAME_BYTES || value.chars().any(hides_text) {
        return Err(invalid(
            field,
            format!(
                "{} is not a name (at most {MAX_NAME_BYTES} bytes, no control or bidi characters)",
                shown(value, 64)
            ),
        ));
    }
    Ok(())
}

/// A character that must not be in a name shown to people: a control character (it can move
/// the cursor or recolour a terminal) or a bidirectional formatting character (U+202A–U+202E,
/// U+2066–U+2069, the marks U+200E, U+200F, U+061C: it can make a name read as something
/// else, "Trojan Source").
pub fn hides_text(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
        )
}

/// A file-system path: 1–[`MAX_PATH_BYTES`] bytes, no NUL or other control characters.
pub fn path(field: &'static str, value: &str) -> Checked {
    if value.trim().is_empty() {
        return Err(FieldError::Missing(field));
    }
    if value.len() > MAX_PATH_BYTES || value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!(
                "{} is not a path (at most {MAX_PATH_BYTES} bytes, no NUL or control characters)",
                shown(value, 64)
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// one validate() per type (the attacks' in `attacks.rs`)
// ---------------------------------------------------------------------------------------------

mod attacks;
mod models;

pub use models::sha256;

impl NoiseInjection {
    /// σ finite and ≥ 0; 1–[`MAX_NOISE_LAYERS`] injection points with printable names. (Whether
    /// the points exist is the architecture's business: [`crate::Arch::noise_layers`].)
    pub fn validate(&self) -> Checked {
        non_negative("run.model.noise.sigma", self.sigma)?;
        if self.layers.is_empty() {
            return Err(FieldError::Missing("run.model.noise.layers"));
        }
        if self.layers.len() > MAX_NOISE_LAYERS {
            return Err(invalid(
                "run.model.noise.layers",
                format!("{} layers, more than {MAX_NOISE_LAYERS}", self.layers.len()),
            ));
        }
        self.layers
            .iter()
            .try_for_each(|layer| name("run.model.noise.layers", layer))
    }
}

impl TrainingMethod {
    /// Its attacks make training examples of the right norm; budgets and fractions in range.
    pub fn validate(&self) -> Checked {
        match self {
            TrainingMethod::Standard => Ok(()),
            TrainingMethod::Adversarial {
                attack,
                epsilon: e,
                fraction: f,
            } => {
                attack.validate_for_training("defense.adversarial.attack", None)?;
                epsilon("defense.adversarial.epsilon", *e)?;
                fraction("defense.adversarial.fraction", *f)
            }
            TrainingMethod::Mixed {
                linf,
                l2,
                epsilon_linf,
                epsilon_l2,
                strategy: _,
                fraction: f,
            } => {
                linf.validate_for_training("defense.mixed.linf", Some(Norm::Linf))?;
                l2.validate_for_training("defense.mixed.l2", Some(Norm::L2))?;
                epsilon("defense.mixed.epsilon_linf", *epsilon_linf)?;
                epsilon("defense.mixed.epsilon_l2", *epsilon_l2)?;
                fraction("defense.mixed.fraction", *f)
            }
        }
    }
}

impl DenoiserSpec {
    pub fn validate(&self) -> Checked {
        in_range(
            "defense.denoiser.blocks",
            self.blocks,
            1,
            MAX_DENOISER_BLOCKS,
        )?;
        in_range(
            "defense.denoiser.channels",
            self.channels,
            1,
            MAX_DENOISER_CHANNELS,
        )?;
        self.attack
            .validate_for_training("defense.denoiser.attack", None)?;
        epsilon("defense.denoiser.epsilon", self.epsilon)?;
        in_range("defense.denoiser.epochs", self.epochs, 1, MAX_EPOCHS)?;
        positive("defense.denoiser.learning_rate", self.learning_rate)
    }
}

impl TrainingMethod {
    /// Its budgets within the image's diameter in `space`, each in the norm of the attack that
    /// uses it ([`epsilon_within`]).
    pub fn validate_budgets(&self, space: EpsilonSpace) -> Checked {
        match self {
            TrainingMethod::Standard => Ok(()),
            TrainingMethod::Adversarial {
                attack, epsilon, ..
            } => attack.norm().map_or(Ok(()), |norm| {
                epsilon_within("defense.adversarial.epsilon", *epsilon, norm, space)
            }),
            TrainingMethod::Mixed {
                epsilon_linf,
                epsilon_l2,
                ..
            } => {
                epsilon_within(
                    "defense.mixed.epsilon_linf",
                    *epsilon_linf,
                    Norm::Linf,
                    space,
                )?;
                epsilon_within("defense.mixed.epsilon_l2", *epsilon_l2, Norm::L2, space)
            }
        }
    }
}

impl Defense {
    /// The training method's budgets within the image's diameter in `space`;
    /// [`RunSpec::validate`] applies it with the run's space.
    pub fn validate_budgets(&self, space: EpsilonSpace) -> Checked {
        self.method.validate_budgets(space)
    }

    pub fn validate(&self) -> Checked {
        self.method.validate()
    }
}

impl InferenceDefense {
    /// A positive inference-noise σ when there is one, and the denoiser.
    pub fn validate(&self) -> Checked {
        if let Some(sigma) = self.inference_noise {
            positive("defense.inference_noise", sigma)?;
        }
        self.denoiser
            .as_ref()
            .map_or(Ok(()), DenoiserSpec::validate)
    }

    /// The denoiser's training budget within the image's diameter in `space`.
    pub fn validate_budgets(&self, space: EpsilonSpace) -> Checked {
        match &self.denoiser {
            Some(d) => d.attack.norm().map_or(Ok(()), |norm| {
                epsilon_within("defense.denoiser.epsilon", d.epsilon, norm, space)
            }),
            None => Ok(()),
        }
    }
}

impl Optimizer {
    pub fn validate(&self) -> Checked {
        match *self {
            Optimizer::Sgd {
                momentum,
                weight_decay,
                nesterov,
            } => {
                decay_rate("training.sgd.momentum", momentum)?;
                non_negative("training.sgd.weight_decay", weight_decay)?;
                if nesterov && momentum <= 0.0 {
                    return Err(invalid(
                        "training.sgd.nesterov",
                        "true needs a momentum greater than 0",
                    ));
                }
                Ok(())
            }
            Optimizer::Adam {
                beta1,
                beta2,
                weight_decay,
            } => {
                decay_rate("training.adam.beta1", beta1)?;
                decay_rate("training.adam.beta2", beta2)?;
                non_negative("training.adam.weight_decay", weight_decay)
            }
        }
    }
}

impl LrSchedule {
    pub fn validate(&self) -> Checked {
        match *self {
            LrSchedule::Step {
                every_epochs,
                gamma,
            } => {
                in_range(
                    "training.schedule.step.every_epochs",
                    every_epochs,
                    1,
                    u32::MAX,
                )?;
                positive("training.schedule.step.gamma", gamma)
            }
            LrSchedule::Constant | LrSchedule::Cosine | LrSchedule::OneCycle => Ok(()),
        }
    }
}

impl TrainingSpec {
    pub fn validate(&self) -> Checked {
        // 0: evaluate the model as given (its weights file, or a TorchScript module).
        in_range("training.epochs", self.epochs, 0, MAX_EPOCHS)?;
        in_range("training.batch_size", self.batch_size, 1, MAX_BATCH_SIZE)?;
        positive("training.learning_rate", self.learning_rate)?;
        self.optimizer.validate()?;
        self.schedule.validate()?;
        in_range(
            "training.checkpoint_every",
            self.checkpoint_every,
            1,
            u32::MAX,
        )?;
        in_range(
            "training.eval_batch_size",
            self.eval_batch_size,
            1,
            MAX_BATCH_SIZE,
        )
    }
}

impl DataSpec {
    pub fn validate(&self) -> Checked {
        if let Some(shard) = &self.shard {
            in_range("data.shard.count", shard.count, 2, MAX_SHARDS)?;
            if shard.index >= shard.count {
                return Err(invalid(
                    "data.shard.index",
                    format!("{} is not below the count {}", shard.index, shard.count),
                ));
            }
        }
        match &self.source {
            DataSource::Synthetic {
                train_size,
                test_size,
                ..
            } => {
                for (field, size) in [
                    ("data.synthetic.train_size", *train_size),
                    ("data.synthetic.test_size", *test_size),
                ] {
                    in_range(field, size, MIN_SYNTHETIC_IMAGES, MAX_SYNTHETIC_IMAGES)?;
                }
                Ok(())
            }
            DataSource::Cifar10Binary { path: p } => path("data.cifar10_binary.path", p),
            DataSource::Cifar100Binary { path: p } => path("data.cifar100_binary.path", p),
            DataSource::ImageFolder { path: p } => path("data.image_folder.path", p),
        }
    }
}

impl RunSpec {
    /// Its display names, then everything it trains on and with (its id is a [`crate::RunId`],
    /// checked when made).
    pub fn validate(&self) -> Checked {
        name("run.model_name", &self.model_name)?;
        name("run.defense_name", &self.defense_name)?;
        self.model.validate()?;
        self.defense.validate()?;
        self.defense.validate_budgets(self.epsilon_space)?;
        self.training.validate()?;
        self.data.validate()?;
        if self.training.epochs == 0 && self.model.file.is_none() {
            return Err(invalid(
                "training.epochs",
                format!(
                    "0 evaluates the model as given, but model `{}` is built from scratch (random \
                     weights): give it a `weights` file, or train it (epochs ≥ 1)",
                    self.model_name
                ),
            ));
        }
        if self.training.epochs == 0 && self.defense.method != TrainingMethod::Standard {
            return Err(invalid(
                "training.epochs",
                "0 evaluates the model as given, but the defense trains it adversarially \
                 (give epochs, or use a defense that does not train: none, inference noise, \
                 a denoiser)",
            ));
        }
        if self.data.shard.is_some() && self.training.epochs > 0 {
            return Err(invalid(
                "data.shard",
                "sharding splits an evaluate-only run's test images across workers; with \
                 training (epochs ≥ 1) every shard would train its own copy of the model \
                 (set `[training] epochs = 0` with a weights or TorchScript file, or drop \
                 `[evaluation] shards`)",
            ));
        }
        if self.model.is_torchscript() && self.epsilon_space == EpsilonSpace::Normalized {
            return Err(invalid(
                "epsilon_space",
                "normalized measures ε after the catalogue's CIFAR-10 normalization, which a \
                 TorchScript module does not have; use pixel (RobustBench's convention)",
            ));
        }
        Ok(())
    }
}

impl CellSpec {
    /// Its display names, attack, ε and inference defense (its ids are typed, checked when
    /// made). The defense name may be empty (cells stored before it existed).
    pub fn validate(&self) -> Checked {
        name("cell.attack_name", &self.attack_name)?;
        if !self.defense_name.is_empty() {
            name("cell.defense_name", &self.defense_name)?;
        }
        self.attack.validate()?;
        self.inference.validate()?;
        epsilon("cell.epsilon", self.epsilon)
    }

    /// [`CellSpec::validate_in`] its run's ε space, and what the cell asks of its run: a
    /// denoiser is trained by the run that evaluates it, so a shard of a sharded evaluation
    /// (each shard a run of its own) cannot host one.
    pub fn validate_in_run(&self, run: &RunSpec) -> Checked {
        self.validate_in(run.epsilon_space)?;
        self.inference.validate_budgets(run.epsilon_space)?;
        if run.data.shard.is_some() && self.inference.denoiser.is_some() {
            return Err(invalid(
                "data.shard",
                "a denoiser is trained by the run that evaluates it, so every shard would \
                 train its own; shard the evaluation of defenses that train nothing",
            ));
        }
        Ok(())
    }

    /// [`CellSpec::validate`], and its ε within the image's diameter in the norm of its attack,
    /// measured in `space` (its run's). The clean attack's ε only labels the run's training ε,
    /// which the run's own validation bounds.
    pub fn validate_in(&self, space: EpsilonSpace) -> Checked {
        self.validate()?;
        match self.attack.norm() {
            Some(norm) => epsilon_within("cell.epsilon", self.epsilon, norm, space),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
