//! A DnCNN denoiser (Zhang et al. 2017, "Beyond a Gaussian Denoiser") put in front of the
//! classifier, and its training on (attacked, clean) pairs.
//!
//! Architecture, as PyTorch's `nn.Sequential` named `dncnn` (so the VarStore paths are the
//! `state_dict` keys of `self.dncnn = nn.Sequential(...)`):
//!
//! ```text
//! dncnn.0              conv 3→C 3×3 (bias)      dncnn.1 ReLU
//! dncnn.{3b+2}         conv C→C 3×3 (no bias)    } for b in 0..blocks
//! dncnn.{3b+3}         BatchNorm2d(C)            }
//!                                                 } dncnn.{3b+4} ReLU
//! dncnn.{3·blocks+2}   conv C→3 3×3 (bias)
//! ```
//!
//! The network predicts the residual (the perturbation); the denoised image is
//! `clamp(x − dncnn(x), 0, 1)`. Convolutions use PyTorch's default initialization, except the
//! last one, which starts at zero: an untrained denoiser is the identity, so training starts
//! from "no denoiser" and can only move away from it where the loss says so (Zhang et al.
//! initialize all layers randomly; a zero-initialized residual output is the usual way to
//! make a residual branch start neutral).
//!
//! Training ([`train`]): after the classifier has been trained, for `epochs` epochs over the
//! training set in a seeded shuffled order (or its first `pairs_per_epoch` images, a fresh
//! subset each epoch, when the spec sets that budget), each batch `x` is attacked with the denoiser
//! spec's attack at its ε (in the run's ε space) against the *fixed* classifier in eval mode —
//! pairs are regenerated per batch — and the denoiser (in training mode) minimizes
//! `MSE(x_adv − dncnn(x_adv), x)` with Adam at the spec's learning rate. The classifier's
//! weights get no gradient (attacks take input gradients only; the MSE does not reach it).
//! The denoiser lives in its own [`VarStore`]; it counts its training-mode forward passes
//! like the models do (PyTorch's `num_batches_tracked`).

use std::sync::atomic::{AtomicBool, AtomicI64};

use advsweep_core::{DenoiserSpec, EpsilonSpace};
use anyhow::Context as _;
use tch::nn::{self, OptimizerConfig as _, VarStore};
use tch::{Device, Reduction, TchError, Tensor};
use tracing::info;

use crate::attacks::{self, Budget};
use crate::data::Dataset;
use crate::error::{Permanent, check_cancel};
use crate::models::layers::{BatchNorm2d, Conv2d, ConvBn, ConvSpec};
use crate::models::{Classifier, count_batch};
use crate::rng::{Rng, derive_seed};

/// The VarStore prefix: the attribute name of the `nn.Sequential` in PyTorch.
pub const PREFIX: &str = "dncnn";

const INIT_STREAM: u64 = 0x444e_494e; // "DNIN"
const SHUFFLE_STREAM: u64 = 0x444e_5348; // "DNSH"
const ATTACK_STREAM: u64 = 0x444e_4154; // "DNAT"

/// Largest sizes accepted (guards against absurd requests that would only run out of memory).
pub const MAX_BLOCKS: u32 = 64;
pub const MAX_CHANNELS: u32 = 1024;

/// DnCNN: `x ↦ clamp(x − net(x), 0, 1)`.
#[derive(Debug)]
pub struct Denoiser {
    vs: VarStore,
    head: Conv2d,
    body: Vec<ConvBn>,
    tail: Conv2d,
    batches: AtomicI64,
    blocks: u32,
    channels: u32,
}

impl Denoiser {
    /// A fresh denoiser drawn from torch's generator (seed it first for reproducible weights).
    pub fn new(blocks: u32, channels: u32, device: Device) -> anyhow::Result<Denoiser> {
        if channels == 0 || channels > MAX_CHANNELS {
            return Err(Permanent(format!(
                "denoiser channels must be in 1..={MAX_CHANNELS}, got {channels}"
            ))
            .into());
        }
        if blocks > MAX_BLOCKS {
            return Err(Permanent(format!(
                "denoiser blocks must be at most {MAX_BLOCKS}, got {blocks}"
            ))
            .into());
        }
        let vs = VarStore::new(device);
        let root = vs.root();
        let seq = root.sub(PREFIX);
        let c = i64::from(channels);
        let head = Conv2d::new(&seq.sub("0"), ConvSpec::new(3, c, 3).bias(true))?;
        let mut body = Vec::with_capacity(blocks as usize);
        for b in 0..blocks {
            let at = 3 * b + 2;
            body.push(ConvBn::new(
                Conv2d::new(&seq.sub(at.to_string()), ConvSpec::new(c, c, 3))?,
                BatchNorm2d::new(&seq.sub((at + 1).to_string()), c)?,
            ));
        }
        let tail = Conv2d::new(
            &seq.sub((3 * blocks + 2).to_string()),
            ConvSpec::new(c, 3, 3).bias(true),
        )?;
        tch::no_grad(|| -> Result<(), TchError> {
            // Shallow clones share storage with the VarStore's variables.
            let _ = tail.weight.shallow_clone().f_zero_()?;
            if let Some(bias) = &tail.bias {
                let _ = bias.shallow_clone().f_zero_()?;
            }
            Ok(())
        })?;
        Ok(Denoiser {
            vs,
            head,
            body,
            tail,
            batches: AtomicI64::new(0),
            blocks,
            channels,
        })
    }

    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    pub fn blocks(&self) -> u32 {
        self.blocks
    }

    pub fn channels(&self) -> u32 {
        self.channels
    }

    /// Training-mode forward passes seen by the batch norms (`num_batches_tracked`).
    pub fn batches_tracked(&self) -> &AtomicI64 {
        &self.batches
    }

    /// The predicted perturbation `net(x)` (differentiable in `x`).
    pub fn residual(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        count_batch(&self.batches, train);
        let mut h = self.head.forward(x)?.f_relu()?;
        for block in &self.body {
            h = block.forward(&h, train)?.f_relu()?;
        }
        self.tail.forward(&h)
    }

    /// `clamp(x − net(x), 0, 1)` (differentiable in `x` where not clamped).
    pub fn denoise(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        x.f_sub(&self.residual(x, train)?)?.f_clamp(0.0, 1.0)
    }
}

/// What training the denoiser needs besides the classifier and the data.
#[derive(Debug, Clone, Copy)]
pub struct DenoiserTraining<'a> {
    pub spec: &'a DenoiserSpec,
    /// Examples per batch (the run's training batch size).
    pub batch_size: u32,
    /// The run's ε space (the spec's ε is measured in it).
    pub space: EpsilonSpace,
    pub seed: u64,
}

/// Builds a denoiser and trains it against the fixed, trained `classifier` (see the module
/// docs); `on_epoch(epoch, mean_mse)` is called after every epoch. Stops between batches when
/// `cancel` is set.
pub fn train(
    classifier: &dyn Classifier,
    data: &Dataset,
    cfg: DenoiserTraining<'_>,
    cancel: &AtomicBool,
    on_epoch: &mut dyn FnMut(u32, f64),
) -> anyhow::Result<Denoiser> {
    let spec = cfg.spec;
    if !(spec.learning_rate.is_finite() && spec.learning_rate > 0.0) {
        return Err(Permanent(format!(
            "denoiser learning rate {} is not a positive number",
            spec.learning_rate
        ))
        .into());
    }
    if !(spec.epsilon.is_finite() && spec.epsilon >= 0.0) {
        return Err(Permanent(format!(
            "denoiser epsilon {} is not a non-negative number",
            spec.epsilon
        ))
        .into());
    }
    tch::manual_seed((derive_seed(&[cfg.seed, INIT_STREAM]) >> 1) as i64);
    let denoiser = Denoiser::new(spec.blocks, spec.channels, data.device())?;
    let mut opt = nn::Adam {
        beta1: 0.9,
        beta2: 0.999,
        wd: 0.0,
        eps: 1e-8,
        amsgrad: false,
    }
    .build(&denoiser.vs, spec.learning_rate)
    .context("building the denoiser's Adam optimizer")?;
    let n = usize::try_from(data.train_len()).context("training set size")?;
    // Each epoch uses the first `pairs` images of its own shuffle: a budget that still sees
    // different images from epoch to epoch.
    let pairs = match spec.pairs_per_epoch {
        0 => n,
        p => n.min(p as usize),
    };
    let batch_size = (cfg.batch_size as usize).clamp(1, pairs.max(1));
    let budget = Budget::new(spec.epsilon, cfg.space);
    for epoch in 1..=spec.epochs {
        let started = std::time::Instant::now();
        let mut order = Rng::from_words(&[cfg.seed, SHUFFLE_STREAM, u64::from(epoch)]);
        let mut attack_rng = Rng::from_words(&[cfg.seed, ATTACK_STREAM, u64::from(epoch)]);
        let permutation =
            Tensor::f_from_slice(&order.permutation(n))?.f_to_device(data.device())?;
        let mut sum = 0.0;
        let mut seen = 0usize;
        let mut start = 0usize;
        while start < pairs {
            check_cancel(cancel)?;
            let len = batch_size.min(pairs - start);
            let index = permutation.f_narrow(0, start as i64, len as i64)?;
            let (x, y) = data.train_batch(&index)?;
            let x_adv = attacks::perturb(
                classifier,
                &x,
                &y,
                &spec.attack,
                budget,
                false,
                &mut attack_rng,
            )
            .with_context(|| format!("attacking the classifier (denoiser epoch {epoch})"))?;
            let denoised = x_adv.f_sub(&denoiser.residual(&x_adv, true)?)?;
            let loss = denoised.f_mse_loss(&x, Reduction::Mean)?;
            opt.zero_grad();
            loss.f_backward()?;
            opt.step();
            let value = f64::try_from(loss.f_detach()?)?;
            if !value.is_finite() {
                anyhow::bail!("denoiser training diverged: loss {value} in epoch {epoch}");
            }
            sum += value * len as f64;
            seen += len;
            start += len;
        }
        let mse = sum / seen.max(1) as f64;
        info!(
            epoch,
            of = spec.epochs,
            pairs,
            mse = format_args!("{mse:.6}"),
            seconds = format_args!("{:.1}", started.elapsed().as_secs_f64()),
            "denoiser epoch done"
        );
        on_epoch(epoch, mse);
    }
    Ok(denoiser)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn names_follow_pytorch_sequential_and_start_as_identity() -> anyhow::Result<()> {
        let d = Denoiser::new(2, 8, Device::Cpu)?;
        let mut names: Vec<String> = d.var_store().variables().into_keys().collect();
        names.sort();
        let expected = [
            "dncnn.0.bias",
            "dncnn.0.weight",
            "dncnn.2.weight",
            "dncnn.3.bias",
            "dncnn.3.running_mean",
            "dncnn.3.running_var",
            "dncnn.3.weight",
            "dncnn.5.weight",
            "dncnn.6.bias",
            "dncnn.6.running_mean",
            "dncnn.6.running_var",
            "dncnn.6.weight",
            "dncnn.8.bias",
            "dncnn.8.weight",
        ];
        assert_eq!(names, expected);
        let x = Tensor::f_rand([3, 3, 32, 32], (Kind::Float, Device::Cpu))?;
        assert!(d.denoise(&x, false)?.f_equal(&x)?);
        assert!(Denoiser::new(1, 0, Device::Cpu).is_err());
        Ok(())
    }
}
