//! Checkpoints: a model's weights as a safetensors file whose keys are exactly PyTorch's
//! `state_dict()` keys for the reference architecture (`worker/tests/reference/models.py`), so
//! that in Python
//!
//! ```python
//! model.load_state_dict(safetensors.torch.load_file(path))   # strict
//! ```
//!
//! loads it, and [`load`] reads files PyTorch wrote the same way. docs/CHECKPOINTS.md lists the
//! keys per model.
//!
//! A checkpoint holds every named tensor of the model's [`Weights`] (parameters, batch-norm
//! `running_mean` / `running_var`, learnable noise scales `noise.<point>.alpha`), all float32
//! as in the model, plus, for every batch norm (a prefix with `running_mean` and
//! `running_var`), PyTorch's `<prefix>.num_batches_tracked`: an int64 scalar that tch does not
//! store, written from [`Classifier::batches_tracked`] (0 for bare weights) and, on load,
//! accepted when present (and restored into the model's counter), not required.
//!
//! Loading is all-or-nothing: every expected key must be present with the model's shape and
//! dtype and no other key may be there (except `num_batches_tracked`), otherwise nothing is
//! changed and the error, a [`Permanent`] one, names what is missing, mismatched or unexpected.
//! Files are written to a temporary name and renamed into place, so a crash never leaves a
//! truncated checkpoint behind.
//!
//! [`save_weights`] / [`load_weights`] do the same for any [`Weights`] (a denoiser's VarStore,
//! a training checkpoint, …), with extra named tensors written beside the model's and handed
//! back on load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use tch::{Device, Kind, TchError, Tensor};

use crate::error::Permanent;
use crate::models::{Classifier, Weights};

/// The per-batch-norm buffer PyTorch has and tch has not.
pub const NUM_BATCHES_TRACKED: &str = "num_batches_tracked";

/// How many names an error message lists per category before "and N more".
const LIST_LIMIT: usize = 8;

/// The tensors [`save`] writes for `model`, by key: detached CPU tensors (sharing storage with
/// the model's variables when those are on the CPU) plus the synthesized
/// `num_batches_tracked` scalars.
pub fn state_dict(model: &dyn Classifier) -> Result<BTreeMap<String, Tensor>, TchError> {
    let batches = model
        .batches_tracked()
        .map_or(0, |c| c.load(Ordering::Relaxed));
    weights_state(model.weights(), batches)
}

/// Writes `model`'s checkpoint to `path` (conventionally `*.safetensors`).
pub fn save(model: &dyn Classifier, path: impl AsRef<Path>) -> anyhow::Result<()> {
    let path = path.as_ref();
    let state = state_dict(model)
        .with_context(|| format!("collecting the weights of model `{}`", model.name()))?;
    write(&state, path)
}

/// Writes every named tensor of `weights` (plus `num_batches_tracked` = 0 for each batch norm)
/// and the `extra` tensors to `path`. An extra tensor may replace a synthesized
/// `num_batches_tracked` but not one of the weights.
pub fn save_weights(
    weights: &dyn Weights,
    extra: &[(&str, &Tensor)],
    path: impl AsRef<Path>,
) -> anyhow::Result<()> {
    let path = path.as_ref();
    let variables = weights.named_tensors();
    let mut state = weights_state(weights, 0)?;
    for (key, tensor) in extra {
        if variables.contains_key(*key) {
            return Err(Permanent(format!(
                "extra tensor `{key}` has the name of one of the weights"
            ))
            .into());
        }
        state.insert((*key).to_owned(), to_cpu(tensor)?);
    }
    write(&state, path)
}

/// Loads the checkpoint at `path` into `model` (see the module docs for the checks); restores
/// the batch-norm counter from `num_batches_tracked` when the file has it.
pub fn load(model: &dyn Classifier, path: impl AsRef<Path>) -> anyhow::Result<()> {
    let path = path.as_ref();
    let plan = check(model.weights(), path, model.name(), false)?;
    plan.apply()?;
    if let (Some(counter), Some(n)) = (model.batches_tracked(), plan.batches_tracked) {
        counter.store(n, Ordering::Relaxed);
    }
    Ok(())
}

/// Loads the named tensors of `weights` from `path` with the same checks as [`load`], except
/// that tensors which are not among them are returned (by key) instead of rejected.
pub fn load_weights(
    weights: &dyn Weights,
    path: impl AsRef<Path>,
) -> anyhow::Result<BTreeMap<String, Tensor>> {
    let path = path.as_ref();
    let plan = check(weights, path, "weights", true)?;
    plan.apply()?;
    Ok(plan.extra)
}

/// Batch-norm prefixes (`layer1.0.bn1.`, or `` for a batch norm at the root) of a key set.
fn batch_norm_prefixes<'a>(keys: impl Iterator<Item = &'a String> + Clone) -> Vec<String> {
    let all: Vec<&String> = keys.collect();
    all.iter()
        .filter_map(|k| k.strip_suffix("running_mean"))
        .filter(|prefix| prefix.is_empty() || prefix.ends_with('.'))
        .filter(|prefix| all.iter().any(|k| **k == format!("{prefix}running_var")))
        .map(str::to_owned)
        .collect()
}

fn to_cpu(t: &Tensor) -> Result<Tensor, TchError> {
    t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()
}

fn weights_state(
    weights: &dyn Weights,
    batches: i64,
) -> Result<BTreeMap<String, Tensor>, TchError> {
    let variables = weights.named_tensors();
    let mut state = BTreeMap::new();
    for prefix in batch_norm_prefixes(variables.keys()) {
        let n = Tensor::f_from_slice(&[batches])?.f_reshape([0i64; 0])?;
        state.insert(format!("{prefix}{NUM_BATCHES_TRACKED}"), n);
    }
    for (key, t) in &variables {
        state.insert(key.clone(), to_cpu(t)?);
    }
    Ok(state)
}

fn write(state: &BTreeMap<String, Tensor>, path: &Path) -> anyhow::Result<()> {
    let file_name = path
        .file_name()
        .with_context(|| format!("checkpoint path `{}` has no file name", path.display()))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(".tmp");
    let tmp: PathBuf = path.with_file_name(tmp_name);
    let named: Vec<(&str, &Tensor)> = state.iter().map(|(k, t)| (k.as_str(), t)).collect();
    Tensor::write_safetensors(&named, &tmp)
        .with_context(|| format!("writing checkpoint `{}`", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming `{}` to `{}`", tmp.display(), path.display()))?;
    Ok(())
}

fn dtype(kind: Kind) -> String {
    match kind {
        Kind::Float => "float32".into(),
        Kind::Double => "float64".into(),
        Kind::Half => "float16".into(),
        Kind::BFloat16 => "bfloat16".into(),
        Kind::Int64 => "int64".into(),
        Kind::Int => "int32".into(),
        other => format!("{other:?}"),
    }
}

fn describe(t: &Tensor) -> String {
    format!("{} {:?}", dtype(t.kind()), t.size())
}

/// What [`check`] found valid: pairs (model variable, file tensor) to copy.
struct Plan {
    copies: Vec<(Tensor, Tensor)>,
    extra: BTreeMap<String, Tensor>,
    batches_tracked: Option<i64>,
}

impl Plan {
    fn apply(&self) -> anyhow::Result<()> {
        tch::no_grad(|| -> Result<(), TchError> {
            for (dst, src) in &self.copies {
                let mut dst = dst.shallow_clone();
                dst.f_copy_(src)?;
            }
            Ok(())
        })
        .context("copying checkpoint tensors into the model")
    }
}

/// `what` is (singular, plural).
fn list(what: (&str, &str), items: &[String]) -> String {
    let shown = items
        .iter()
        .take(LIST_LIMIT)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let more = items.len().saturating_sub(LIST_LIMIT);
    let more = if more > 0 {
        format!(", and {more} more")
    } else {
        String::new()
    };
    let what = if items.len() == 1 { what.0 } else { what.1 };
    format!("{} {what} ({shown}{more})", items.len())
}

fn check(
    weights: &dyn Weights,
    path: &Path,
    model: &str,
    allow_extra: bool,
) -> anyhow::Result<Plan> {
    let file: BTreeMap<String, Tensor> = Tensor::read_safetensors(path)
        .with_context(|| format!("reading checkpoint `{}`", path.display()))?
        .into_iter()
        .collect();
    let variables = weights.named_tensors();
    let bn_prefixes = batch_norm_prefixes(variables.keys());

    let mut missing = Vec::new();
    let mut mismatched = Vec::new();
    let mut copies = Vec::new();
    let mut expected: Vec<(&String, &Tensor)> = variables.iter().collect();
    expected.sort_by(|a, b| a.0.cmp(b.0));
    for (key, var) in expected {
        match file.get(key) {
            None => missing.push(key.clone()),
            Some(t) if t.size() != var.size() || t.kind() != var.kind() => {
                mismatched.push(format!(
                    "{key}: checkpoint {} vs model {}",
                    describe(t),
                    describe(var)
                ))
            }
            Some(t) => copies.push((var.shallow_clone(), t.shallow_clone())),
        }
    }

    let mut unexpected = Vec::new();
    let mut extra = BTreeMap::new();
    let mut batches_tracked: Option<i64> = None;
    for (key, t) in &file {
        if variables.contains_key(key) {
            continue;
        }
        let is_counter = key
            .strip_suffix(NUM_BATCHES_TRACKED)
            .is_some_and(|prefix| bn_prefixes.iter().any(|p| p == prefix));
        if is_counter {
            if t.kind() != Kind::Int64 || t.numel() != 1 {
                mismatched.push(format!(
                    "{key}: checkpoint {} vs model int64 []",
                    describe(t)
                ));
            } else {
                let n = t.f_reshape([0i64; 0]).and_then(|s| i64::try_from(&s))?;
                batches_tracked = Some(batches_tracked.map_or(n, |m| m.max(n)));
            }
        } else if allow_extra {
            extra.insert(key.clone(), t.shallow_clone());
        } else {
            unexpected.push(key.clone());
        }
    }

    if missing.is_empty() && mismatched.is_empty() && unexpected.is_empty() {
        return Ok(Plan {
            copies,
            extra,
            batches_tracked,
        });
    }
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(list(("missing key", "missing keys"), &missing));
    }
    if !mismatched.is_empty() {
        problems.push(list(
            ("mismatched shape/dtype", "mismatched shapes/dtypes"),
            &mismatched,
        ));
    }
    if !unexpected.is_empty() {
        problems.push(list(("unexpected key", "unexpected keys"), &unexpected));
    }
    Err(Permanent(format!(
        "checkpoint `{}` does not fit `{model}`: {}",
        path.display(),
        problems.join("; ")
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_norm_prefixes_need_both_running_stats() {
        let keys: Vec<String> = [
            "bn1.running_mean",
            "bn1.running_var",
            "bn1.weight",
            "layer1.0.bn2.running_mean",
            "layer1.0.bn2.running_var",
            "odd.running_mean",
            "xrunning_mean",
            "running_mean",
            "running_var",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut p = batch_norm_prefixes(keys.iter());
        p.sort();
        assert_eq!(p, ["", "bn1.", "layer1.0.bn2."]);
    }
}
