//! A run's training checkpoint as bytes: the model's weights (PyTorch `state_dict` keys),
//! the optimizer's state and the number of epochs done, in one safetensors file; and back into
//! a model and a [`Resume`].
//!
//! Kept out of the executor so that what a checkpoint holds (and how a run resumes from one)
//! is read in one place; the executor only decides when to take one.

use std::path::PathBuf;

use anyhow::Context as _;
use tch::Tensor;

use crate::models::Classifier;
use crate::optim::Optim;
use crate::train::Resume;

/// Key of the completed-epoch counter inside a training checkpoint.
const EPOCHS_DONE_KEY: &str = "advsweep.epochs_done";

/// A fresh temporary file name (tch reads and writes safetensors through files).
fn scratch_file(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "advsweep-{tag}-{}-{}.safetensors",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Weights + optimizer state + epoch counter, as safetensors bytes.
pub(super) fn encode_checkpoint(
    model: &dyn Classifier,
    opt: &Optim,
    epoch: u32,
) -> anyhow::Result<Vec<u8>> {
    let mut state = crate::checkpoint::state_dict(model)?;
    state.extend(opt.state_tensors()?);
    state.insert(
        EPOCHS_DONE_KEY.to_owned(),
        Tensor::f_from_slice(&[i64::from(epoch)])?,
    );
    let path = scratch_file("ckpt");
    let named: Vec<(&str, &Tensor)> = state.iter().map(|(k, v)| (k.as_str(), v)).collect();
    Tensor::write_safetensors(&named, &path).context("writing the training checkpoint")?;
    let bytes = std::fs::read(&path).context("reading back the training checkpoint");
    let _ = std::fs::remove_file(&path);
    bytes
}

/// Loads a training checkpoint into `model`; returns where training resumes.
pub(super) fn decode_checkpoint(model: &dyn Classifier, bytes: &[u8]) -> anyhow::Result<Resume> {
    let path = scratch_file("resume");
    std::fs::write(&path, bytes).context("staging the downloaded checkpoint")?;
    let extra = crate::checkpoint::load_weights(model.weights(), &path);
    let _ = std::fs::remove_file(&path);
    let extra = extra.context("loading the checkpoint's weights")?;
    let epochs_done = extra
        .get(EPOCHS_DONE_KEY)
        .ok_or_else(|| anyhow::anyhow!("the checkpoint has no `{EPOCHS_DONE_KEY}`"))?
        .int64_value(&[0]);
    let optimizer = extra
        .into_iter()
        .filter(|(k, _)| k.starts_with("optim."))
        .collect();
    Ok(Resume {
        epochs_done: u32::try_from(epochs_done).context("epochs_done out of range")?,
        optimizer,
    })
}
