//! The model catalogue: classifiers built from a [`advsweep_core::Model`].
//!
//! Every model takes images in [0, 1] (`f32 [N, 3, 32, 32]`) and normalizes them itself, so
//! that attacks, budgets and clamping all live in pixel space, and returns logits `[N, classes]` (10 unless the data has another number: [`build_for`]).
//! A model hands out its tensors through [`Classifier::weights`] ([`Weights`]), named exactly
//! like PyTorch's `state_dict` keys for the reference definitions in
//! `worker/tests/reference/models.py` (`conv1.weight`, `layer1.0.bn1.running_mean`, …);
//! [`crate::checkpoint`] writes them as safetensors that `model.load_state_dict` accepts
//! (docs/CHECKPOINTS.md). The built-in families keep them in a `tch::nn::VarStore`, but nothing
//! outside a family's file depends on that, so a model that is not built from `tch::nn` (a
//! TorchScript module) fits the same trait.
//!
//! The architectures ([`advsweep_core::Arch`]):
//! * `basic` ([`basic`]): the seed's LeNet-style CNN, 62,006 parameters;
//! * `resnet18` ([`resnet`]): CIFAR ResNet-18, 11,173,962 parameters;
//! * `wrn-D-K` ([`wrn`]): WideResNet, e.g. wrn-16-4 (2,748,890), wrn-28-10 (36,479,194);
//! * `vgg11`, `vgg16` ([`vgg`]): VGG with batch norm, 9,231,114 / 14,728,266 parameters.
//!
//! Any of them may carry noise injection ([`noise`]). `forward` takes a `train` flag: batch
//! norm uses (and updates) batch statistics in training mode and running statistics otherwise.

pub mod basic;
pub mod layers;
pub mod noise;
pub mod resnet;
pub mod torchscript;
pub mod vgg;
pub mod weights;
pub mod wrn;

use std::sync::atomic::AtomicI64;

use advsweep_core::{Arch, Model, ModelFormat};

use crate::data::CLASSES;
use tch::{Device, TchError, Tensor};

pub use crate::error::UnknownModel;
pub use noise::NoiseConfig;
pub use weights::Weights;

/// Names [`build`] accepts (`wrn-D-K` is a pattern), for messages.
pub const CATALOGUE: &[&str] = advsweep_core::catalogue::ARCHITECTURES;

/// CIFAR-10 channel statistics (`advsweep_core::catalogue::datasets`), used by the models'
/// built-in normalization.
pub const CIFAR10_MEAN: [f32; 3] = {
    let m = advsweep_core::catalogue::datasets::CIFAR10_MEAN;
    [m[0] as f32, m[1] as f32, m[2] as f32]
};
pub const CIFAR10_STD: [f32; 3] = {
    let s = advsweep_core::catalogue::datasets::CIFAR10_STD;
    [s[0] as f32, s[1] as f32, s[2] as f32]
};

/// An image classifier.
pub trait Classifier: Send {
    /// Catalogue name (`basic`, `resnet18`, `wrn-28-10`, …).
    fn name(&self) -> &str;
    /// The model's tensors: by `state_dict` name for checkpoints, and the trainable parameters
    /// for the optimizer. Models built from `tch::nn` return their VarStore; a model that is
    /// not (a TorchScript module) implements [`Weights`] itself and returns `self`.
    fn weights(&self) -> &dyn Weights;
    /// Logits for images in [0, 1]. `train` selects training behaviour (batch-norm statistics,
    /// dropout) for models that have any. Eval mode (`train == false`) is for evaluation and
    /// attacks: its output is differentiable in `x` but not in the convolutions and batch norms
    /// that [`layers::ConvBn`] folds into one; train through training mode only.
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError>;
    /// Whether `forward` is random (noise injection with σ > 0), so that repeated forward
    /// passes on the same input differ; attacks may then average gradients (EOT).
    fn randomized(&self) -> bool {
        false
    }
    /// The number of training-mode forward passes seen by the model's batch-norm layers
    /// (PyTorch's `num_batches_tracked`, the same for every layer since each forward uses all
    /// of them); `None` for models without batch norm. Checkpoints save and restore it.
    fn batches_tracked(&self) -> Option<&AtomicI64> {
        None
    }
    /// Whether a checkpoint of its [`Weights`] (and batch-norm counter) restores the model
    /// exactly, so training may resume from one. Not for a TorchScript module, whose buffers
    /// are out of reach ([`torchscript`]).
    fn resumable(&self) -> bool {
        true
    }
    /// Checks the model against the contract every model keeps (logits `[N, classes]`,
    /// finite, deterministic in eval mode, differentiable in the input) on a few images `x` of
    /// the run's data. The catalogue's models keep it by construction; a researcher's module is
    /// checked ([`torchscript::TorchScript::probe`]).
    fn check_contract(&self, _x: &Tensor, _classes: i64) -> anyhow::Result<()> {
        Ok(())
    }
}

/// What [`build`] accepts: a bare architecture name (no noise) or a full model spec.
#[derive(Debug, Clone, Copy)]
pub enum ModelRef<'a> {
    Name(&'a str),
    Spec(&'a Model),
}

impl<'a> From<&'a str> for ModelRef<'a> {
    fn from(name: &'a str) -> Self {
        ModelRef::Name(name)
    }
}

impl<'a> From<&'a String> for ModelRef<'a> {
    fn from(name: &'a String) -> Self {
        ModelRef::Name(name)
    }
}

impl<'a> From<&'a Model> for ModelRef<'a> {
    fn from(model: &'a Model) -> Self {
        ModelRef::Spec(model)
    }
}

/// Builds `model` (a [`Model`] or a bare name) on `device`, freshly initialized from torch's
/// generator (seed it with `tch::manual_seed` first for reproducible weights).
///
/// Errors: an unknown name is [`UnknownModel`]; an invalid noise specification (unknown or
/// repeated point, negative σ) is [`crate::error::Permanent`]; both name what was wrong.
pub fn build<'a>(
    model: impl Into<ModelRef<'a>>,
    device: Device,
) -> Result<Box<dyn Classifier>, anyhow::Error> {
    build_for(model, CLASSES, device)
}

/// [`build`] with `classes` outputs (the data's classes; the catalogue's models are defined for
/// any number).
pub fn build_for<'a>(
    model: impl Into<ModelRef<'a>>,
    classes: i64,
    device: Device,
) -> Result<Box<dyn Classifier>, anyhow::Error> {
    let (name, noise) = match model.into() {
        ModelRef::Name(name) => (name, None),
        ModelRef::Spec(m) => (m.name.as_str(), m.noise.as_ref()),
    };
    let arch = Arch::parse(name).map_err(|message| UnknownModel {
        name: name.to_owned(),
        message,
    })?;
    let noise = noise.map(|n| NoiseConfig::validate(arch, n)).transpose()?;
    let noise = noise.as_ref();
    Ok(match arch {
        Arch::Basic => Box::new(basic::BasicNet::with_classes(device, noise, classes)?),
        Arch::ResNet18 => Box::new(resnet::ResNet18::with_classes(device, noise, classes)?),
        Arch::WideResNet { depth, width } => Box::new(wrn::WideResNet::with_classes(
            name,
            (i64::from(depth), i64::from(width)),
            device,
            noise,
            classes,
        )?),
        Arch::Vgg11 => Box::new(vgg::Vgg::with_classes(
            vgg::VggKind::Vgg11,
            device,
            noise,
            classes,
        )?),
        Arch::Vgg16 => Box::new(vgg::Vgg::with_classes(
            vgg::VggKind::Vgg16,
            device,
            noise,
            classes,
        )?),
    })
}

/// Builds `model` with `classes` outputs on `device` from where it comes from: the catalogue (as [`build`]), the
/// catalogue with the weights file at `file` (PyTorch state_dict keys, checked like a
/// checkpoint), or the TorchScript module at `file`. `label` names the model and its file in
/// errors, which are [`crate::error::Permanent`] when the file is at fault.
pub fn load(
    model: &Model,
    file: Option<&std::path::Path>,
    label: &str,
    (classes, device): (i64, Device),
) -> anyhow::Result<Box<dyn Classifier>> {
    let Some(spec) = &model.file else {
        return build_for(model, classes, device);
    };
    let Some(path) = file.filter(|p| p.is_file()) else {
        return Err(crate::error::Permanent(format!(
            "{label}: its {} file is not in this worker's model cache{}",
            spec.format.key(),
            file.map(|p| format!(" ({})", p.display()))
                .unwrap_or_default()
        ))
        .into());
    };
    match spec.format {
        ModelFormat::TorchScript => {
            let normalize = spec
                .normalize
                .as_ref()
                .map(|n| (n.mean.as_slice(), n.std.as_slice()));
            Ok(Box::new(torchscript::TorchScript::load(
                path, label, normalize, device,
            )?))
        }
        ModelFormat::Safetensors => {
            let built = build_for(
                &Model {
                    file: None,
                    ..model.clone()
                },
                classes,
                device,
            )?;
            crate::checkpoint::load(built.as_ref(), path)
                .map_err(|e| crate::error::Permanent(format!("{label}: {e:#}")))?;
            Ok(built)
        }
    }
}

/// Number of trainable scalars.
pub fn trainable_parameters(model: &dyn Classifier) -> i64 {
    model
        .weights()
        .parameters()
        .iter()
        .map(Tensor::numel)
        .map(|n| n as i64)
        .sum()
}

/// Counts one training-mode forward pass in `counter` (see [`Classifier::batches_tracked`]).
pub(crate) fn count_batch(counter: &AtomicI64, train: bool) {
    if train {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Input normalization with fixed (non-trainable) per-channel statistics. Not among the
/// model's [`Weights`], so not in checkpoints (the PyTorch reference keeps them in non-persistent
/// buffers).
///
/// The normalized batch is also laid out channels-last (same shape and values, NHWC strides;
/// [`channels_last`]) where that makes the model faster, and the later layers keep the layout.
/// Which layout is faster depends on the model family and the device, so each family states
/// its [`Layout`] (measured, docs/PERFORMANCE.md). Results agree with the NCHW layout up to
/// float rounding (the same sums in another order).
#[derive(Debug)]
pub struct Normalize {
    mean: Tensor,
    std: Tensor,
    channels_last: bool,
}

impl Normalize {
    /// CIFAR-10 statistics, laid out as `layout` says for `device`.
    pub fn cifar10(device: Device, layout: Layout) -> Result<Normalize, TchError> {
        Normalize::with_layout(device, channels_last_on(device, layout))
    }

    fn with_layout(device: Device, channels_last: bool) -> Result<Normalize, TchError> {
        let stat = |v: &[f32; 3]| {
            Tensor::f_from_slice(v)?
                .f_view([1, 3, 1, 1])?
                .f_to_device(device)
        };
        Ok(Normalize {
            mean: stat(&CIFAR10_MEAN)?,
            std: stat(&CIFAR10_STD)?,
            channels_last,
        })
    }

    /// A model's input: `x` with the noise of `noise`'s `input` point added, then normalized.
    pub fn noisy_input(&self, noise: &noise::Noise, x: &Tensor) -> Result<Tensor, TchError> {
        self.apply(&noise.apply("input", x.shallow_clone())?)
    }

    pub fn apply(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let z = x.f_sub(&self.mean)?.f_div(&self.std)?;
        if self.channels_last && z.dim() == 4 {
            channels_last(&z)
        } else {
            Ok(z)
        }
    }
}

/// Where a model family takes channels-last input. Measured at the sweeps' batch size
/// (docs/PERFORMANCE.md, "Input layout per model family"):
/// * on the CPU, oneDNN reorders NCHW inputs of its convolutions on every call, which costs
///   most where channels are few: BasicNet (3, 6, 16 channels) runs 1.2–2× faster
///   channels-last, ResNet-18 and WRN-16-4 3–16 % faster; VGG, plain stacks of 64–512-channel
///   convolutions, runs 13–31 % faster NCHW;
/// * on CUDA, cuDNN's tensor-core kernels prefer NHWC for the wide models (ResNet-18 trained
///   1–14 % and evaluated PGD-10 15 % faster on an H100); BasicNet, not measured that way,
///   stays NCHW there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Channels-last on the CPU.
    pub cpu: bool,
    /// Channels-last on CUDA.
    pub cuda: bool,
}

impl Layout {
    pub const BASIC: Layout = Layout {
        cpu: true,
        cuda: false,
    };
    /// ResNet and WideResNet.
    pub const RESIDUAL: Layout = Layout {
        cpu: true,
        cuda: true,
    };
    pub const VGG: Layout = Layout {
        cpu: false,
        cuda: true,
    };
}

/// Whether a model with `layout` on `device` takes channels-last input; the environment
/// variable `ADVSWEEP_CHANNELS_LAST` = `0` or `1` overrides it (for measurements).
pub fn channels_last_on(device: Device, layout: Layout) -> bool {
    match std::env::var("ADVSWEEP_CHANNELS_LAST").as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        _ => match device {
            Device::Cpu => layout.cpu,
            d if d.is_cuda() => layout.cuda,
            _ => false,
        },
    }
}

/// `x` (`[N, C, H, W]`) copied into channels-last memory: the same tensor for every operation,
/// with strides `[H·W·C, 1, W·C, C]`, which convolutions, pooling, batch norm and elementwise
/// operations keep. (tch has no memory-format argument; a permuted contiguous copy viewed back
/// is exactly what PyTorch's `contiguous(memory_format=torch.channels_last)` makes.)
pub fn channels_last(x: &Tensor) -> Result<Tensor, TchError> {
    x.f_permute([0, 2, 3, 1])?
        .f_contiguous()?
        .f_permute([0, 3, 1, 2])
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

    #[test]
    fn unknown_models_and_bad_noise_are_permanent() {
        let e = build("wrn-27-10", Device::Cpu).err();
        assert!(e.is_some_and(|e| !crate::error::is_retryable(&e)));
        let mut m = Model::plain("basic");
        m.noise = Some(advsweep_core::NoiseInjection {
            sigma: 0.1,
            layers: vec!["layer1".into()],
            learnable: false,
        });
        let e = build(&m, Device::Cpu).err();
        assert!(e.is_some_and(|e| !crate::error::is_retryable(&e)));
    }

    #[test]
    fn each_model_family_gets_its_measured_layout() {
        if std::env::var_os("ADVSWEEP_CHANNELS_LAST").is_some() {
            return; // overridden for a measurement
        }
        let on = |layout| {
            (
                channels_last_on(Device::Cpu, layout),
                channels_last_on(Device::Cuda(0), layout),
            )
        };
        assert_eq!(on(Layout::BASIC), (true, false));
        assert_eq!(on(Layout::RESIDUAL), (true, true));
        assert_eq!(on(Layout::VGG), (false, true));
    }

    #[test]
    fn channels_last_keeps_shape_and_values() -> anyhow::Result<()> {
        let x = Tensor::f_rand([2, 3, 4, 5], (tch::Kind::Float, Device::Cpu))?;
        let y = channels_last(&x)?;
        assert_eq!(y.size(), x.size());
        assert_eq!(y.stride(), vec![60, 1, 15, 3]);
        assert!(y.f_equal(&x)?);
        // Elementwise operations keep the layout.
        assert_eq!(y.f_sub_scalar(0.5)?.f_div_scalar(2.0)?.stride(), y.stride());
        Ok(())
    }
}
