//! Model presets → models (architecture and noise injection points resolved).

use advsweep_core::catalogue::presets::NOISY_PREFIX;
use advsweep_core::experiment::TORCHSCRIPT;
use advsweep_core::{Arch, InputNormalization, Model, ModelFile, ModelFormat, NoiseInjection};

use super::SweepError;
use super::check::{Validator, unknown_preset};
use crate::sweep::file::{ModelPreset, SweepFile};
use crate::sweep::model_files::ModelFiles;
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
    files: &ModelFiles,
    name: &str,
) -> Result<ResolvedModel, SweepError> {
    let preset = lookup(v, file, name)?;
    let at = format!("model `{name}`");
    let model = match (&preset.arch, &preset.torchscript) {
        (Some(_), Some(_)) => {
            return v.fail(format!(
                "{at}: set either `arch` (a catalogue architecture) or `torchscript` (your \
                 module), not both"
            ));
        }
        (None, None) => {
            return v.fail(format!(
                "{at}: missing `arch` (one of {}) or `torchscript = \"path/model.pt\"`",
                advsweep_core::catalogue::ARCHITECTURES.join(", ")
            ));
        }
        (None, Some(path)) => torchscript_model(v, &at, &preset, path, files)?,
        (Some(arch), None) => arch_model(v, &at, &preset, arch, files)?,
    };
    v.rule(Some(&at), model.validate())?;
    Ok(ResolvedModel {
        name: name.to_owned(),
        model,
    })
}

/// The file `path` (as written) from `files`, or an error saying it was not provided.
fn model_file(
    v: &Validator,
    at: &str,
    format: ModelFormat,
    path: &str,
    files: &ModelFiles,
) -> Result<ModelFile, SweepError> {
    let Some(found) = files.get(path) else {
        return v.fail(format!(
            "{at}: {} file `{path}` was not sent with the sweep (`advsweep submit`, `run` and \
             `plan` read it beside the sweep file and upload it)",
            format.key()
        ));
    };
    Ok(ModelFile {
        format,
        sha256: found.sha256.clone(),
        bytes: found.bytes,
        normalize: None,
    })
}

fn torchscript_model(
    v: &Validator,
    at: &str,
    preset: &ModelPreset,
    path: &str,
    files: &ModelFiles,
) -> Result<Model, SweepError> {
    if preset.noise.is_some() || preset.weights.is_some() {
        return v.fail(format!(
            "{at}: a TorchScript module takes neither `noise` (it has no injection points; \
             inference noise is a defense) nor `weights` (its weights are inside it)"
        ));
    }
    let mut file = model_file(v, at, ModelFormat::TorchScript, path, files)?;
    file.normalize = preset.normalize.as_ref().map(|n| InputNormalization {
        mean: n.mean.clone(),
        std: n.std.clone(),
    });
    Ok(Model {
        name: TORCHSCRIPT.to_owned(),
        noise: None,
        file: Some(file),
    })
}

fn arch_model(
    v: &Validator,
    at: &str,
    preset: &ModelPreset,
    arch_name: &str,
    files: &ModelFiles,
) -> Result<Model, SweepError> {
    let arch = Arch::parse(arch_name).or_else(|e| v.fail(format!("{at}: {e}")))?;
    if preset.normalize.is_some() {
        return v.fail(format!(
            "{at}: `normalize` is for a TorchScript module; a catalogue architecture \
             normalizes its input itself"
        ));
    }
    let noise = match &preset.noise {
        None => None,
        Some(n) => Some(NoiseInjection {
            sigma: n.sigma,
            layers: arch
                .noise_layers(&n.layers)
                .or_else(|e| v.fail(format!("{at}: noise.layers: {e}")))?,
            learnable: n.learnable,
        }),
    };
    let file = match &preset.weights {
        None => None,
        Some(path) => Some(model_file(v, at, ModelFormat::Safetensors, path, files)?),
    };
    Ok(Model {
        name: arch_name.to_owned(),
        noise,
        file,
    })
}
