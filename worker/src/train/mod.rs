//! Training: SGD or Adam, standard, adversarial or mixed-norm adversarial, with a per-batch
//! learning-rate schedule and per-epoch metrics.
//!
//! Reproducibility: weights are initialized from `tch::manual_seed(run.seed)` (done by the
//! caller before building the model); shuffling, augmentation and the adversarial attack's
//! random starts draw from the crate's portable [`Rng`] streams derived from the run seed.
//!
//! Adversarial training (Goodfellow et al. / Madry et al.): in every batch the first
//! `k = round(fraction · B)` (at least one) examples of the shuffled batch are replaced by the
//! defense's attack at its ε (in the run's ε space), crafted against the current weights. The
//! model stays in training mode while crafting (consistent batch-norm behaviour); the attack
//! takes input gradients only, so the optimizer sees gradients of the final loss alone. An
//! attack with `eot > 1` averages its gradients over that many forward passes of a randomized
//! model (see [`crate::attacks`]).
//!
//! Mixed-norm adversarial training (`TrainingMethod::Mixed`) crafts, for the same `k` head
//! examples, an ℓ∞ version (its `linf` attack at `epsilon_linf`) and an ℓ2 version (`l2` at
//! `epsilon_l2`), then
//! * `both_per_batch`: trains on both — the batch becomes `[ℓ∞ head, ℓ2 head, clean tail]`
//!   (`B + k` examples, the head's labels twice);
//! * `worst_per_example`: keeps, per example, the version with the higher cross-entropy under
//!   the current weights (training mode, no autograd) — the batch keeps its `B` examples.
//!
//! Learning rate: [`crate::schedule`] gives the rate of every batch, set with `set_lr` before
//! the step.
//!
//! Metrics: loss and accuracy over the rows the optimizer saw (adversarial ones included);
//! throughput in training images per second; test accuracy of the classifier itself (clean,
//! without the run's inference-time defenses, which only evaluation cells apply). They are
//! accumulated on the device and read once per epoch, so a diverged run (a non-finite loss) is
//! reported at the end of the epoch it diverged in.
//!
//! The cancel flag is checked between batches; a set flag ends training with
//! [`crate::error::Cancelled`].
//!
//! Layout: this file is the epoch loop and the clean accuracy; `adversarial.rs` builds the
//! batches of adversarial and mixed-norm training.

mod adversarial;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use advsweep_core::{Defense, EpochMetrics, EpsilonSpace, TrainingSpec};
use anyhow::Context as _;
use tch::{Kind, Reduction, Tensor};

use crate::data::{self, Dataset};
use crate::error::check_cancel;
use crate::models::Classifier;
use crate::optim::Optim;
use crate::precision;
use crate::rng::Rng;
use crate::schedule;
use adversarial::training_batch;

const SHUFFLE_STREAM: u64 = 0x5348_5546; // "SHUF"
const AUGMENT_STREAM: u64 = 0x4155_474d; // "AUGM"
const ATTACK_STREAM: u64 = 0x4154_4b54; // "ATKT"

/// Everything training needs besides the model and the data.
#[derive(Debug, Clone, Copy)]
pub struct TrainConfig<'a> {
    pub training: &'a TrainingSpec,
    pub defense: &'a Defense,
    pub seed: u64,
    /// The space the defense's ε are measured in.
    pub space: EpsilonSpace,
}

/// Where a resumed run picks up: the epochs already done and the optimizer's saved state (the
/// weights are loaded into the model by the caller).
#[derive(Debug)]
pub struct Resume {
    pub epochs_done: u32,
    pub optimizer: BTreeMap<String, Tensor>,
}

/// Trains `model` on `data` from scratch, calling `on_epoch` after every epoch.
pub fn train(
    model: &dyn Classifier,
    data: &Dataset,
    cfg: TrainConfig<'_>,
    cancel: &AtomicBool,
    on_epoch: &mut dyn FnMut(EpochMetrics) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    train_from(model, data, cfg, cancel, None, &mut |m, _| on_epoch(m))
}

/// Trains `model`, continuing after `resume.epochs_done` when given; after every epoch calls
/// `on_epoch` with its metrics and the optimizer (whose state, with the model's weights, is
/// everything needed to continue exactly: the shuffling, augmentation and attack streams are
/// derived from (seed, epoch)).
pub fn train_from(
    model: &dyn Classifier,
    data: &Dataset,
    cfg: TrainConfig<'_>,
    cancel: &AtomicBool,
    resume: Option<Resume>,
    on_epoch: &mut dyn FnMut(EpochMetrics, &Optim) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let t = cfg.training;
    schedule::validate(&t.schedule)?;
    let mut opt = Optim::new(model.weights().parameters(), &t.optimizer, t.learning_rate)?;
    let first_epoch = match resume {
        None => 1,
        Some(r) => {
            opt.load_state(&r.optimizer)
                .context("restoring the optimizer from the checkpoint")?;
            r.epochs_done + 1
        }
    };
    let n = usize::try_from(data.train_len()).context("training set size")?;
    let batch_size = (t.batch_size as usize).clamp(1, n.max(1));
    let batches = n.div_ceil(batch_size);
    let device = data.device();
    for epoch in first_epoch..=t.epochs {
        let started = Instant::now();
        let mut order = Rng::from_words(&[cfg.seed, SHUFFLE_STREAM, u64::from(epoch)]);
        let mut augment_rng = Rng::from_words(&[cfg.seed, AUGMENT_STREAM, u64::from(epoch)]);
        let mut attack_rng = Rng::from_words(&[cfg.seed, ATTACK_STREAM, u64::from(epoch)]);
        let permutation = Tensor::f_from_slice(&order.permutation(n))?.f_to_device(device)?;

        // Loss and accuracy accumulate on the device and are read once per epoch: reading
        // them per batch would wait for the device every step.
        let mut loss_sum = Tensor::f_zeros([], (Kind::Double, device))?;
        let mut correct = Tensor::f_zeros([], (Kind::Int64, device))?;
        let mut seen = 0i64; // rows trained on (mixed training may add rows)
        let mut start = 0usize; // training images used
        let mut batch = 0usize;
        while start < n {
            check_cancel(cancel)?;
            let len = batch_size.min(n - start);
            let index = permutation.f_narrow(0, start as i64, len as i64)?;
            let (mut x, mut y) = data.train_batch(&index)?;
            if t.augment {
                x = data::augment(&x, &mut augment_rng)?;
            }
            // bf16 autocast (when asked) for the step's forward passes only; see precision.rs.
            let autocast = precision::training_step(t.precision, device)?;
            (x, y) = training_batch(model, x, y, &cfg.defense.method, cfg.space, &mut attack_rng)
                .with_context(|| format!("crafting adversarial examples (epoch {epoch})"))?;
            opt.set_lr(schedule::learning_rate(
                &t.schedule,
                t.learning_rate,
                epoch,
                batch,
                batches,
                t.epochs,
            ));
            let logits = model.forward(&x, true)?;
            let loss =
                logits.f_cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, 0.0)?;
            drop(autocast);
            // The parameters' gradients, fresh (no zeroing and accumulating into `.grad`).
            let grads = Tensor::f_run_backward(&[&loss], opt.params(), false, false)?;
            opt.step_with(grads)?;

            let rows = y.size().first().copied().unwrap_or(0);
            // Σ loss · rows in f64, as the host would add them.
            let _ = loss_sum.f_add_(
                &loss
                    .f_detach()?
                    .f_to_kind(Kind::Double)?
                    .f_mul_scalar(rows as f64)?,
            )?;
            let _ = correct.f_add_(&correct_mask(&logits, &y)?.f_sum(Kind::Int64)?)?;
            seen += rows;
            start += len;
            batch += 1;
        }
        let loss_sum = f64::try_from(&loss_sum)?; // waits for the epoch's last step
        let correct = i64::try_from(&correct)?;
        let train_seconds = started.elapsed().as_secs_f64();
        if !loss_sum.is_finite() {
            anyhow::bail!(
                "training diverged: mean loss {} in epoch {epoch}",
                loss_sum / seen.max(1) as f64
            );
        }
        let test_accuracy = clean_accuracy(model, data, t.eval_batch_size, cancel)?;
        let metrics = EpochMetrics {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            test_accuracy,
            seconds: started.elapsed().as_secs_f64(),
            images_per_second: n as f64 / train_seconds.max(1e-9),
        };
        on_epoch(metrics, &opt)?;
    }
    Ok(())
}

/// Per row: whether the argmax equals the label (`bool [N]`, on the logits' device).
pub fn correct_mask(logits: &Tensor, y: &Tensor) -> Result<Tensor, tch::TchError> {
    logits.f_argmax(-1, false)?.f_eq_tensor(y)
}

/// Clean accuracy on the evaluation subset (model in eval mode, no autograd; the count stays
/// on the device until the end).
pub fn clean_accuracy(
    model: &dyn Classifier,
    data: &Dataset,
    eval_batch_size: u32,
    cancel: &AtomicBool,
) -> anyhow::Result<f64> {
    let m = data.test_len();
    let batch = i64::from(eval_batch_size.max(1));
    tch::no_grad(|| -> anyhow::Result<f64> {
        let mut correct = Tensor::f_zeros([], (Kind::Int64, data.device()))?;
        let mut start = 0;
        while start < m {
            check_cancel(cancel)?;
            let (x, y) = data.test_batch(start, batch)?;
            let hits = correct_mask(&model.forward(&x, false)?, &y)?.f_sum(Kind::Int64)?;
            let _ = correct.f_add_(&hits)?;
            start += batch;
        }
        Ok(i64::try_from(&correct)? as f64 / m.max(1) as f64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::basic::BasicNet;
    use tch::Device;

    /// The schedule is applied per batch: with the rate divided by 10¹² after epoch 1, the
    /// second epoch leaves the weights where the first put them.
    #[test]
    fn the_schedule_sets_the_learning_rate() -> anyhow::Result<()> {
        let (train_split, test_split) = crate::data::synthetic::generate(3, 64, 10)?;
        let data = Dataset::from_host(train_split, test_split, "s".into(), Device::Cpu)?;
        let model = BasicNet::new(Device::Cpu)?;
        let training = TrainingSpec {
            epochs: 2,
            batch_size: 16,
            learning_rate: 0.05,
            optimizer: advsweep_core::Optimizer::Sgd {
                momentum: 0.9,
                weight_decay: 5e-4,
                nesterov: false,
            },
            schedule: advsweep_core::LrSchedule::Step {
                every_epochs: 1,
                gamma: 1e-12,
            },
            augment: false,
            eval_batch_size: 10,
            checkpoint_every: 1,
            precision: advsweep_core::Precision::Fp32,
        };
        let snapshot = |m: &BasicNet| -> Vec<Tensor> {
            m.weights()
                .parameters()
                .iter()
                .map(|t| t.f_to_kind(Kind::Double))
                .collect::<Result<_, _>>()
                .unwrap_or_default()
        };
        let initial = snapshot(&model);
        let mut after_first = Vec::new();
        train(
            &model,
            &data,
            TrainConfig {
                training: &training,
                defense: &Defense::standard(),
                seed: 1,
                space: EpsilonSpace::Pixel,
            },
            &AtomicBool::new(false),
            &mut |m| {
                if m.epoch == 1 {
                    after_first = snapshot(&model);
                }
                Ok(())
            },
        )?;
        let last = snapshot(&model);
        let max_change = |a: &[Tensor], b: &[Tensor]| -> anyhow::Result<f64> {
            let mut m = 0.0f64;
            for (a, b) in a.iter().zip(b) {
                m = m.max(f64::try_from(a.f_sub(b)?.f_abs()?.f_max()?)?);
            }
            Ok(m)
        };
        assert_eq!(after_first.len(), initial.len());
        assert!(max_change(&initial, &after_first)? > 1e-3);
        assert!(max_change(&after_first, &last)? < 1e-8);
        Ok(())
    }
}
