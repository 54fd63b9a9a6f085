//! What a model's tensors look like from outside: named for checkpoints, listed for the
//! optimizer.
//!
//! [`super::Classifier`] hands these out through [`super::Classifier::weights`] instead of a
//! `tch::nn::VarStore`, so that training, checkpoints and parameter counts work the same for a
//! model that is not built from `tch::nn` (a TorchScript module exposes its `named_parameters`
//! and `named_buffers`, not a VarStore). Models built from `tch::nn` hand out their VarStore,
//! which implements [`Weights`] below.

use std::collections::BTreeMap;

use tch::Tensor;
use tch::nn::VarStore;

/// The tensors a model is made of.
pub trait Weights {
    /// Every tensor a checkpoint holds (parameters and persistent buffers such as batch-norm
    /// running statistics or learnable noise scales), keyed by PyTorch's `state_dict` name
    /// (`conv1.weight`, `layer1.0.bn1.running_mean`, …). The tensors share storage with the
    /// model's: copying into one writes the model.
    fn named_tensors(&self) -> BTreeMap<String, Tensor>;

    /// The trainable parameters, in a fixed order (the optimizer keeps its state per position).
    /// They share storage with the model's.
    fn parameters(&self) -> Vec<Tensor>;
}

impl Weights for VarStore {
    fn named_tensors(&self) -> BTreeMap<String, Tensor> {
        self.variables().into_iter().collect()
    }

    /// In the order the variables were created (tch keeps that order).
    fn parameters(&self) -> Vec<Tensor> {
        self.trainable_variables()
    }
}
