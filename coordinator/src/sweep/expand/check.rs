//! How the resolver refuses a sweep file: the rules that belong to the file's own syntax
//! (names, axes, keys) live here; the rules on what the file describes are the vocabulary's
//! `validate()` (`advsweep_core::validate`), whose errors are shown here in the file's spelling.

use std::collections::HashSet;

use advsweep_core::FieldError;
use advsweep_core::validate::shown;

use super::SweepError;

pub(super) struct Validator<'a> {
    pub(super) origin: &'a str,
}

impl Validator<'_> {
    pub(super) fn fail<T>(&self, message: impl Into<String>) -> Result<T, SweepError> {
        Err(SweepError::Invalid {
            origin: self.origin.to_owned(),
            message: message.into(),
        })
    }

    pub(super) fn check(
        &self,
        ok: bool,
        message: impl FnOnce() -> String,
    ) -> Result<(), SweepError> {
        if ok { Ok(()) } else { self.fail(message()) }
    }

    /// A vocabulary rule's verdict, shown with the file's key for the field, after `context`
    /// (the preset it is in, if any).
    pub(super) fn rule<T>(
        &self,
        context: Option<&str>,
        verdict: Result<T, FieldError>,
    ) -> Result<T, SweepError> {
        verdict.or_else(|e| {
            let message = match &e {
                FieldError::Missing(field) => format!("{} is empty", file_key(field)),
                FieldError::Invalid { field, why } => format!("{} = {why}", file_key(field)),
            };
            self.fail(match context {
                Some(context) => format!("{context}: {message}"),
                None => message,
            })
        })
    }

    pub(super) fn non_empty<T>(&self, axis: &str, values: &[T]) -> Result<(), SweepError> {
        self.check(!values.is_empty(), || {
            format!("grid.{axis} is empty: list at least one value")
        })
    }

    pub(super) fn unique_names(&self, axis: &str, names: &[String]) -> Result<(), SweepError> {
        let mut seen = HashSet::new();
        for name in names {
            if !seen.insert(name) {
                return self.fail(format!("grid.{axis} lists `{name}` twice"));
            }
        }
        Ok(())
    }
}

/// The sweep-file key of a vocabulary field (named by its wire path): the file spells some
/// fields differently (`eot`, `training.momentum`, `evaluation.batch_size`, `data.path`) and
/// names attack and defense fields inside the preset that holds them (`steps`, `fraction`).
pub(super) fn file_key(field: &'static str) -> &'static str {
    match field {
        "attack.fgsm.eot_samples" | "attack.pgd.eot_samples" => "eot",
        "training.sgd.momentum" => "training.momentum",
        "training.sgd.nesterov" => "training.nesterov",
        "training.sgd.weight_decay" | "training.adam.weight_decay" => "training.weight_decay",
        "training.adam.beta1" => "training.beta1",
        "training.adam.beta2" => "training.beta2",
        "training.schedule.step.every_epochs" => "training.step_every",
        "training.schedule.step.gamma" => "training.step_gamma",
        "training.eval_batch_size" => "evaluation.batch_size",
        "data.synthetic.train_size" => "data.train_size",
        "data.synthetic.test_size" => "data.test_size",
        "data.cifar10_binary.path" | "data.image_folder.path" => "data.path",
        "cell.epsilon" => "grid.epsilons",
        "data.shard" | "data.shard.count" | "data.shard.index" => "evaluation.shards",
        "run.model.noise.sigma" => "noise.sigma",
        "run.model.noise.layers" => "noise.layers",
        "defense.inference_noise" => "inference_noise",
        denoiser if denoiser.starts_with("defense.denoiser.") => &denoiser["defense.".len()..],
        absolute if absolute.starts_with("training.") || absolute.starts_with("evaluation.") => {
            absolute
        }
        // attack.pgd.steps, defense.mixed.linf, defense.adversarial.fraction, …
        other => other.rsplit('.').next().unwrap_or(other),
    }
}

/// `… (built-in: …; defined in this file: …)` for a name that is neither.
pub(super) fn unknown_preset(
    what: &str,
    key: &str,
    name: &str,
    builtin: &[&str],
    defined: Vec<&str>,
) -> String {
    let hint = advsweep_core::suggest::closest(
        name,
        builtin.iter().copied().chain(defined.iter().copied()),
    )
    .map(|c| format!("did you mean `{c}`? "))
    .unwrap_or_default();
    format!(
        "{key}: unknown {what} `{name}` ({hint}built-in: {}{})",
        builtin.join(", "),
        if defined.is_empty() {
            String::new()
        } else {
            format!("; defined in this file: {}", defined.join(", "))
        }
    )
}

/// Longest sweep, model, defense or attack name.
pub const MAX_NAME_LEN: usize = 64;

/// A name that is safe as a file name, a directory (`reports/<name>/`), a Markdown table cell
/// and a CSV field: 1-64 ASCII letters, digits, '-', '_' or '.', starting with a letter or digit
/// (so never `.`, `..` or a hidden file).
pub fn valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The sweep's name is a [`valid_name`].
pub(super) fn check_sweep_name(v: &Validator, name: &str) -> Result<(), SweepError> {
    v.check(valid_name(name), || {
        format!(
            "name = {}: use 1-{MAX_NAME_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit",
            shown(name, 64)
        )
    })
}

/// Every name on a grid axis is a [`valid_name`].
pub(super) fn check_names(v: &Validator, axis: &str, names: &[String]) -> Result<(), SweepError> {
    for (i, name) in names.iter().enumerate() {
        v.check(valid_name(name), || {
            format!(
                "grid.{axis}[{i}] = {}: names use 1-{MAX_NAME_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit",
                shown(name, 64)
            )
        })?;
    }
    Ok(())
}
