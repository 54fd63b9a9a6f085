//! A researcher's own model: a TorchScript module (`torch.jit.script` or `torch.jit.trace`,
//! saved with `.save(path)`) that maps float32 images `[N, C, H, W]` in [0, 1] to logits
//! `[N, classes]`, optionally behind a declared input normalization (`normalize = { mean,
//! std }` in the sweep file, for a module that expects normalized input).
//!
//! The contract is checked before any cell trusts the module ([`TorchScript::probe`]), on a
//! few images of the run's data, so that the mistakes users make with their own models fail
//! loudly and at once instead of producing plausible numbers:
//! * output of rank 2 with one logit per class of the data (both shapes named otherwise);
//! * finite logits;
//! * an image's logits that do not depend on the other images of its batch (a module traced
//!   in training mode keeps batch statistics in its batch norms, whatever `eval()` says later);
//! * the same logits twice in a row (dropout traced in training mode is random);
//! * gradients that reach the input (attacks need them: a module that detaches its input, or
//!   runs under `no_grad`, would make every gradient attack a no-op).
//!
//! Training works through the module's parameters ([`Weights`]: `named_parameters()`, with
//! PyTorch's names, sharing storage with the module, so an optimizer step changes the module).
//! Buffers (batch-norm running statistics) live inside the module, where libtorch's C API
//! exposes no accessor: they are not in our checkpoints, which is why a TorchScript run resumes
//! its training from the start rather than from a checkpoint ([`Classifier::resumable`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use tch::{CModule, Device, Kind, TchError, Tensor};

use super::{Classifier, Weights};
use crate::error::Permanent;

/// A loaded TorchScript module and its declared input normalization.
pub struct TorchScript {
    /// The module and whether it is in training mode now (switching costs a walk over its
    /// submodules, so it is done only when `forward`'s `train` flag changes).
    module: Mutex<(CModule, bool)>,
    normalize: Option<(Tensor, Tensor)>,
    parameters: Vec<(String, Tensor)>,
    label: String,
}

impl std::fmt::Debug for TorchScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchScript")
            .field("label", &self.label)
            .field("parameters", &self.parameters.len())
            .finish()
    }
}

/// The probe's images: this many of the data's first test images.
pub const PROBE_IMAGES: i64 = 4;

impl TorchScript {
    /// Loads the module at `path` onto `device`. `label` names it in every error (the sweep
    /// file's model name and the file's hash). `normalize` is `(mean, std)` per channel.
    pub fn load(
        path: &Path,
        label: &str,
        normalize: Option<(&[f64], &[f64])>,
        device: Device,
    ) -> anyhow::Result<TorchScript> {
        let mut module = CModule::load_on_device(path, device).map_err(|e| {
            Permanent(format!(
                "{label}: not a TorchScript module (save it with torch.jit.script(model).save(path) \
                 or torch.jit.trace): {}",
                first_line(&e)
            ))
        })?;
        module
            .f_set_eval()
            .map_err(|e| Permanent(format!("{label}: cannot switch to eval mode: {e}")))?;
        let parameters = module
            .named_parameters()
            .map_err(|e| Permanent(format!("{label}: cannot list its parameters: {e}")))?;
        for (name, t) in &parameters {
            if t.kind() != Kind::Float {
                return Err(Permanent(format!(
                    "{label}: parameter `{name}` is {:?}; advsweep trains and attacks float32 \
                     modules (call .float() before saving)",
                    t.kind()
                ))
                .into());
            }
        }
        let normalize = match normalize {
            None => None,
            Some((mean, std)) => {
                let stat = |v: &[f64]| -> Result<Tensor, TchError> {
                    let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                    Tensor::f_from_slice(&v)?
                        .f_view([1, -1, 1, 1])?
                        .f_to_device(device)
                };
                Some((stat(mean)?, stat(std)?))
            }
        };
        Ok(TorchScript {
            module: Mutex::new((module, false)),
            normalize,
            parameters,
            label: label.to_owned(),
        })
    }

    /// Checks the module's contract (module docs) on `x` (a few images in [0, 1], on the
    /// model's device) against data of `classes` classes; every failure is [`Permanent`] and
    /// names the module and what it did.
    pub fn probe(&self, x: &Tensor, classes: i64) -> anyhow::Result<()> {
        let label = &self.label;
        let shape = x.size();
        let failed = |e: TchError| {
            Permanent(format!(
                "{label}: failed on a batch of {shape:?} float32 images in [0, 1] on {:?} \
                 (a module traced on another device, or expecting another input shape, fails \
                 so): {}",
                x.device(),
                first_line(&e)
            ))
        };
        let logits = tch::no_grad(|| self.forward(x, false)).map_err(failed)?;
        let out = logits.size();
        let n = shape.first().copied().unwrap_or(0);
        if out.len() != 2 || out[0] != n || out[1] != classes {
            return Err(Permanent(format!(
                "{label}: returned logits of shape {out:?} for input {shape:?}; expected [{n}, \
                 {classes}] (one logit per class of the data)"
            ))
            .into());
        }
        if logits.f_isfinite()?.f_all()?.int64_value(&[]) == 0 {
            return Err(Permanent(format!(
                "{label}: returned NaN or infinite logits for images in [0, 1]"
            ))
            .into());
        }
        let again = tch::no_grad(|| self.forward(x, false)).map_err(failed)?;
        if !again.allclose(&logits, 1e-4, 1e-5, false) {
            return Err(Permanent(format!(
                "{label}: gives different logits for the same images twice in eval mode (dropout \
                 or noise baked in: was it traced in training mode? call model.eval() before \
                 torch.jit.trace)"
            ))
            .into());
        }
        if n > 1 {
            let alone =
                tch::no_grad(|| self.forward(&x.f_narrow(0, 0, 1)?, false)).map_err(failed)?;
            let first = logits.f_narrow(0, 0, 1)?;
            if !alone.allclose(&first, 1e-3, 1e-4, false) {
                return Err(Permanent(format!(
                    "{label}: an image's logits depend on the other images of its batch in eval \
                     mode (batch norm using batch statistics: was it traced in training mode? \
                     call model.eval() before torch.jit.trace)"
                ))
                .into());
            }
        }
        let input = x.f_detach()?.f_set_requires_grad(true)?;
        let out = self.forward(&input, false).map_err(failed)?;
        out.f_sum(Kind::Float)?.f_backward()?;
        let grad = input.grad();
        let reaches = grad.defined()
            && grad.f_abs()?.f_sum(Kind::Float)?.double_value(&[]) > 0.0
            && grad.f_isfinite()?.f_all()?.int64_value(&[]) != 0;
        self.zero_parameter_grads()?;
        if !reaches {
            return Err(Permanent(format!(
                "{label}: no finite gradient of its logits reaches the input, so gradient \
                 attacks cannot work (does forward detach its input or run under no_grad?)"
            ))
            .into());
        }
        Ok(())
    }

    fn zero_parameter_grads(&self) -> Result<(), TchError> {
        for (_, p) in &self.parameters {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.f_zero_()?;
            }
        }
        Ok(())
    }
}

impl Classifier for TorchScript {
    fn name(&self) -> &str {
        "torchscript"
    }

    fn weights(&self) -> &dyn Weights {
        self
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let z = match &self.normalize {
            None => x.shallow_clone(),
            Some((mean, std)) => x.f_sub(mean)?.f_div(std)?,
        };
        let mut guard = self.module.lock().unwrap_or_else(|p| p.into_inner());
        let (module, in_train) = &mut *guard;
        if *in_train != train {
            if train {
                module.f_set_train()?;
            } else {
                module.f_set_eval()?;
            }
            *in_train = train;
        }
        module.forward_ts(&[z])
    }

    fn resumable(&self) -> bool {
        false
    }

    fn check_contract(&self, x: &Tensor, classes: i64) -> anyhow::Result<()> {
        self.probe(x, classes)
    }
}

impl Weights for TorchScript {
    fn named_tensors(&self) -> BTreeMap<String, Tensor> {
        self.parameters
            .iter()
            .map(|(k, t)| (k.clone(), t.shallow_clone()))
            .collect()
    }

    fn parameters(&self) -> Vec<Tensor> {
        self.parameters
            .iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(_, t)| t.shallow_clone())
            .collect()
    }
}

/// The first line of a libtorch error (the rest is a C++ backtrace).
fn first_line(e: &TchError) -> String {
    let text = e.to_string();
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(300)
        .collect()
}
