//! Training: SGD, standard or adversarial, with per-epoch metrics.
//!
//! Reproducibility: weights are initialized from `tch::manual_seed(run.seed)` (done by the
//! caller before building the model); shuffling, augmentation and the adversarial attack's
//! random starts draw from the crate's portable [`Rng`] streams derived from the run seed.
//!
//! Adversarial training (Goodfellow et al. / Madry et al.): in every batch the first
//! `round(fraction · B)` (at least one) examples of the shuffled batch are replaced by the
//! defense's attack at its ε, crafted against the current weights. The model stays in training
//! mode while crafting (consistent batch-norm behaviour for future models); the attack takes
//! input gradients only, so the optimizer sees gradients of the final loss alone.
//!
//! The cancel flag is checked between batches; a set flag ends training with
//! [`crate::error::Cancelled`].

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use advsweep_spec::{Defense, EpochMetrics, Optimizer, TrainingSpec};
use anyhow::Context as _;
use tch::nn::{self, OptimizerConfig as _};
use tch::{Kind, Reduction, Tensor};

use crate::attacks;
use crate::data::{self, Dataset};
use crate::error::{Permanent, check_cancel};
use crate::models::Classifier;
use crate::rng::Rng;

const SHUFFLE_STREAM: u64 = 0x5348_5546; // "SHUF"
const AUGMENT_STREAM: u64 = 0x4155_474d; // "AUGM"
const ATTACK_STREAM: u64 = 0x4154_4b54; // "ATKT"

/// Everything training needs besides the model and the data.
#[derive(Debug, Clone, Copy)]
pub struct TrainConfig<'a> {
    pub training: &'a TrainingSpec,
    pub defense: &'a Defense,
    pub seed: u64,
}

/// Trains `model` on `data`, calling `on_epoch` after every epoch.
pub fn train(
    model: &dyn Classifier,
    data: &Dataset,
    cfg: TrainConfig<'_>,
    cancel: &AtomicBool,
    on_epoch: &mut dyn FnMut(EpochMetrics) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let t = cfg.training;
    let mut opt = build_optimizer(model, t)?;
    let n = usize::try_from(data.train_len()).context("training set size")?;
    let batch_size = (t.batch_size as usize).clamp(1, n.max(1));
    let device = data.device();
    for epoch in 1..=t.epochs {
        let started = Instant::now();
        let mut order = Rng::from_words(&[cfg.seed, SHUFFLE_STREAM, u64::from(epoch)]);
        let mut augment_rng = Rng::from_words(&[cfg.seed, AUGMENT_STREAM, u64::from(epoch)]);
        let mut attack_rng = Rng::from_words(&[cfg.seed, ATTACK_STREAM, u64::from(epoch)]);
        let permutation = Tensor::f_from_slice(&order.permutation(n))?.f_to_device(device)?;

        let mut loss_sum = 0.0;
        let mut correct = 0i64;
        let mut seen = 0i64;
        let mut start = 0usize;
        while start < n {
            check_cancel(cancel)?;
            let len = batch_size.min(n - start);
            let index = permutation.f_narrow(0, start as i64, len as i64)?;
            let (mut x, y) = data.train_batch(&index)?;
            if t.augment {
                x = data::augment(&x, &mut augment_rng)?;
            }
            if let Defense::Adversarial {
                attack,
                epsilon,
                fraction,
            } = cfg.defense
            {
                x = adversarial_mix(model, &x, &y, attack, *epsilon, *fraction, &mut attack_rng)
                    .with_context(|| format!("crafting adversarial examples (epoch {epoch})"))?;
            }
            let logits = model.forward(&x, true)?;
            let loss =
                logits.f_cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, 0.0)?;
            opt.zero_grad();
            loss.f_backward()?;
            opt.step();

            let batch_loss = f64::try_from(loss.f_detach()?)?;
            if !batch_loss.is_finite() {
                anyhow::bail!("training diverged: loss {batch_loss} in epoch {epoch}");
            }
            loss_sum += batch_loss * len as f64;
            correct += count_correct(&logits, &y)?;
            seen += len as i64;
            start += len;
        }
        let train_seconds = started.elapsed().as_secs_f64();
        let test_accuracy = clean_accuracy(model, data, t.eval_batch_size, cancel)?;
        let metrics = EpochMetrics {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            test_accuracy,
            seconds: started.elapsed().as_secs_f64(),
            images_per_second: seen as f64 / train_seconds.max(1e-9),
        };
        on_epoch(metrics)?;
    }
    Ok(())
}

fn build_optimizer(model: &dyn Classifier, t: &TrainingSpec) -> anyhow::Result<nn::Optimizer> {
    match t.optimizer {
        Optimizer::Sgd {
            momentum,
            weight_decay,
            nesterov,
        } => {
            if nesterov && momentum <= 0.0 {
                return Err(
                    Permanent("Nesterov momentum needs a momentum greater than 0".into()).into(),
                );
            }
            let sgd = nn::Sgd {
                momentum,
                dampening: 0.0,
                wd: weight_decay,
                nesterov,
            };
            sgd.build(model.var_store(), t.learning_rate)
                .context("building the SGD optimizer")
        }
    }
}

/// Replaces the first `round(fraction · B)` examples (at least one) by adversarial ones.
fn adversarial_mix(
    model: &dyn Classifier,
    x: &Tensor,
    y: &Tensor,
    attack: &advsweep_spec::Attack,
    epsilon: f64,
    fraction: f64,
    rng: &mut Rng,
) -> anyhow::Result<Tensor> {
    let b = x.size().first().copied().unwrap_or(0);
    let k = ((fraction * b as f64).round() as i64)
        .clamp(1, b.max(1))
        .min(b);
    if k == 0 {
        return Ok(x.shallow_clone());
    }
    let x_head = x.f_narrow(0, 0, k)?;
    let y_head = y.f_narrow(0, 0, k)?;
    let adv = attacks::perturb(model, &x_head, &y_head, attack, epsilon, true, rng)?;
    if k == b {
        return Ok(adv);
    }
    Ok(Tensor::f_cat(&[adv, x.f_narrow(0, k, b - k)?], 0)?)
}

/// Number of rows whose argmax equals the label.
pub fn count_correct(logits: &Tensor, y: &Tensor) -> anyhow::Result<i64> {
    let hits = logits
        .f_argmax(-1, false)?
        .f_eq_tensor(y)?
        .f_sum(Kind::Int64)?;
    Ok(i64::try_from(hits)?)
}

/// Clean accuracy on the evaluation subset (model in eval mode, no autograd).
pub fn clean_accuracy(
    model: &dyn Classifier,
    data: &Dataset,
    eval_batch_size: u32,
    cancel: &AtomicBool,
) -> anyhow::Result<f64> {
    let m = data.test_len();
    let batch = i64::from(eval_batch_size.max(1));
    let mut correct = 0;
    let mut start = 0;
    while start < m {
        check_cancel(cancel)?;
        let (x, y) = data.test_batch(start, batch)?;
        correct += tch::no_grad(|| -> anyhow::Result<i64> {
            count_correct(&model.forward(&x, false)?, &y)
        })?;
        start += batch;
    }
    Ok(correct as f64 / m.max(1) as f64)
}
