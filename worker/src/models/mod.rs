//! The model catalogue: classifiers built by name.
//!
//! Every model takes images in [0, 1] (`f32 [N, 3, 32, 32]`) and normalizes them itself, so
//! that attacks, budgets and clamping all live in pixel space, and returns logits `[N, 10]`.
//! Parameters live in a [`VarStore`] whose paths follow PyTorch's `state_dict` keys
//! (`conv1.weight`, …) so weights can be exchanged with PyTorch later.
//!
//! Adding a model (resnet18, wrn-28-10, vgg16, …) means a module implementing [`Classifier`]
//! and a line in [`CATALOGUE`] / [`build`]. `forward` takes a `train` flag from the start so
//! that batch-norm and dropout models need no interface change.

pub mod basic;

use tch::nn::VarStore;
use tch::{Device, TchError, Tensor};

/// Names [`build`] accepts.
pub const CATALOGUE: &[&str] = &["basic"];

/// CIFAR-10 channel statistics, used by the models' built-in normalization.
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
pub const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

/// A model name that is not in the catalogue; permanent (retrying cannot help).
#[derive(Debug, thiserror::Error)]
#[error("unknown model `{name}`; known models: {}", CATALOGUE.join(", "))]
pub struct UnknownModel {
    pub name: String,
}

/// An image classifier.
pub trait Classifier: Send {
    /// Catalogue name.
    fn name(&self) -> &'static str;
    /// The trainable parameters (and any buffers registered there).
    fn var_store(&self) -> &VarStore;
    /// Logits for images in [0, 1]. `train` selects training behaviour (batch-norm statistics,
    /// dropout) for models that have any.
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError>;
}

/// Builds the model `name` on `device`, freshly initialized from torch's generator (seed it
/// with `tch::manual_seed` first for reproducible weights).
pub fn build(name: &str, device: Device) -> Result<Box<dyn Classifier>, anyhow::Error> {
    match name {
        "basic" => Ok(Box::new(basic::BasicNet::new(device)?)),
        _ => Err(UnknownModel {
            name: name.to_owned(),
        }
        .into()),
    }
}

/// Number of trainable scalars.
pub fn trainable_parameters(model: &dyn Classifier) -> i64 {
    model
        .var_store()
        .trainable_variables()
        .iter()
        .map(Tensor::numel)
        .map(|n| n as i64)
        .sum()
}

/// Input normalization with fixed (non-trainable) per-channel statistics.
#[derive(Debug)]
pub struct Normalize {
    mean: Tensor,
    std: Tensor,
}

impl Normalize {
    pub fn cifar10(device: Device) -> Result<Normalize, TchError> {
        let stat = |v: &[f32; 3]| {
            Tensor::f_from_slice(v)?
                .f_view([1, 3, 1, 1])?
                .f_to_device(device)
        };
        Ok(Normalize {
            mean: stat(&CIFAR10_MEAN)?,
            std: stat(&CIFAR10_STD)?,
        })
    }

    pub fn apply(&self, x: &Tensor) -> Result<Tensor, TchError> {
        x.f_sub(&self.mean)?.f_div(&self.std)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_models_are_named_with_the_catalogue() {
        let err = build("resnet9000", Device::Cpu)
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("resnet9000") && err.contains("basic"), "{err}");
    }
}
