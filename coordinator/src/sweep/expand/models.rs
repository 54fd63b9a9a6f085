//! Model presets → models (architecture and noise injection points resolved).

use advsweep_core::catalogue::presets::NOISY_PREFIX;
use advsweep_core::{Arch, Model, NoiseInjection};

use super::SweepError;
use super::check::{Validator, unknown_preset};
use crate::sweep::file::{ModelPreset, SweepFile};
use crate::sweep::presets;

/// A grid model: its display name and resolved spec.
pub(super) struct ResolvedModel {
    pub(super) name: String,
    pub(super) model: Model,
}

/// The preset called `name`: the file's own, else a built-in one.
fn lookup(v: &Validator, file: &SweepFile, name: &str) -> Result<ModelPreset, SweepError> {
    if let Some(p) = file.models.get(name) {
        return Ok(p.clone());
    }
    if let Some(p) = presets::builtin_model(name) {
        return Ok(p);
    }
    // Name the architecture problem precisely when it looks like one (wrn-27-10).
    let why = match name.strip_prefix(NOISY_PREFIX).unwrap_or(name) {
        arch if arch.starts_with("wrn-") => Arch::parse(arch).err(),
        _ => None,
    };
    v.fail(why.map(|w| format!("grid.models: {w}")).unwrap_or_else(|| {
        unknown_preset(
            "model",
            "grid.models",
            name,
            presets::BUILTIN_MODELS,
            file.models.keys().map(String::as_str).collect(),
        )
    }))
}

pub(super) fn resolve_model(
    v: &Validator,
    file: &SweepFile,
    name: &str,
) -> Result<ResolvedModel, SweepError> {
    let preset = lookup(v, file, name)?;
    let at = format!("model `{name}`");
    let arch = Arch::parse(&preset.arch).or_else(|e| v.fail(format!("{at}: {e}")))?;
    let noise = match preset.noise {
        None => None,
        Some(n) => Some(NoiseInjection {
            sigma: n.sigma,
            layers: arch
                .noise_layers(&n.layers)
                .or_else(|e| v.fail(format!("{at}: noise.layers: {e}")))?,
            learnable: n.learnable,
        }),
    };
    let model = Model {
        name: preset.arch,
        noise,
    };
    v.rule(Some(&at), model.validate())?;
    Ok(ResolvedModel {
        name: name.to_owned(),
        model,
    })
}
