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

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use advsweep_core::{
    Defense, EpochMetrics, EpsilonSpace, MixStrategy, Norm, TrainingMethod, TrainingSpec,
};
use anyhow::Context as _;
use tch::{Kind, Reduction, Tensor};

use crate::attacks::{self, Budget};
use crate::data::{self, Dataset};
use crate::error::{Permanent, check_cancel};
use crate::models::Classifier;
use crate::optim::Optim;
use crate::precision;
use crate::rng::Rng;
use crate::schedule;

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
    check_method(&cfg.defense.method)?;
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

/// The batch the optimizer sees for `method`: `(x, y)` itself for standard training, with
/// adversarial examples mixed in otherwise (see the module docs).
fn training_batch(
    model: &dyn Classifier,
    x: Tensor,
    y: Tensor,
    method: &TrainingMethod,
    space: EpsilonSpace,
    rng: &mut Rng,
) -> anyhow::Result<(Tensor, Tensor)> {
    match method {
        TrainingMethod::Standard => Ok((x, y)),
        TrainingMethod::Adversarial {
            attack,
            epsilon,
            fraction,
        } => {
            let k = head_size(&x, *fraction);
            let (head, y_head) = (x.f_narrow(0, 0, k)?, y.f_narrow(0, 0, k)?);
            let adv = attacks::perturb(
                model,
                &head,
                &y_head,
                attack,
                Budget::new(*epsilon, space),
                true,
                rng,
            )?;
            Ok((replace_head(&x, adv, k)?, y))
        }
        TrainingMethod::Mixed {
            linf,
            l2,
            epsilon_linf,
            epsilon_l2,
            strategy,
            fraction,
        } => {
            let k = head_size(&x, *fraction);
            let (head, y_head) = (x.f_narrow(0, 0, k)?, y.f_narrow(0, 0, k)?);
            let budget_linf = Budget::new(*epsilon_linf, space);
            let budget_l2 = Budget::new(*epsilon_l2, space);
            let adv_linf = attacks::perturb(model, &head, &y_head, linf, budget_linf, true, rng)
                .context("the l-inf attack")?;
            let adv_l2 = attacks::perturb(model, &head, &y_head, l2, budget_l2, true, rng)
                .context("the l2 attack")?;
            match strategy {
                MixStrategy::BothPerBatch => {
                    let b = x.size().first().copied().unwrap_or(0);
                    let tail = x.f_narrow(0, k, b - k)?;
                    let y_tail = y.f_narrow(0, k, b - k)?;
                    Ok((
                        Tensor::f_cat(&[adv_linf, adv_l2, tail], 0)?,
                        Tensor::f_cat(&[&y_head, &y_head, &y_tail], 0)?,
                    ))
                }
                MixStrategy::WorstPerExample => {
                    let worse = tch::no_grad(|| -> anyhow::Result<Tensor> {
                        let loss = |adv: &Tensor| -> anyhow::Result<Tensor> {
                            Ok(model.forward(adv, true)?.f_cross_entropy_loss::<Tensor>(
                                &y_head,
                                None,
                                Reduction::None,
                                -100,
                                0.0,
                            )?)
                        };
                        // Ties go to the ℓ∞ example.
                        Ok(loss(&adv_l2)?.f_gt_tensor(&loss(&adv_linf)?)?)
                    })?;
                    let adv = adv_l2.f_where_self(&worse.f_view([-1, 1, 1, 1])?, &adv_linf)?;
                    Ok((replace_head(&x, adv, k)?, y))
                }
            }
        }
    }
}

/// `round(fraction · B)`, at least 1 (at most B).
fn head_size(x: &Tensor, fraction: f64) -> i64 {
    let b = x.size().first().copied().unwrap_or(0);
    ((fraction * b as f64).round() as i64)
        .clamp(1, b.max(1))
        .min(b)
}

/// `x` with its first `k` rows replaced by `head`.
fn replace_head(x: &Tensor, head: Tensor, k: i64) -> anyhow::Result<Tensor> {
    let b = x.size().first().copied().unwrap_or(0);
    if k >= b {
        return Ok(head);
    }
    Ok(Tensor::f_cat(&[head, x.f_narrow(0, k, b - k)?], 0)?)
}

/// Checks the parts of a training method the wire decoder cannot: that mixed training's two
/// attacks have the norms their slots say, and that fractions and budgets are numbers.
fn check_method(method: &TrainingMethod) -> Result<(), Permanent> {
    let number = |what: &str, v: f64| {
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(Permanent(format!(
                "{what} {v} is not a non-negative number"
            )))
        }
    };
    let fraction = |v: f64| {
        if v > 0.0 && v <= 1.0 {
            Ok(())
        } else {
            Err(Permanent(format!(
                "adversarial fraction {v} is not in (0, 1]"
            )))
        }
    };
    match method {
        TrainingMethod::Standard => Ok(()),
        TrainingMethod::Adversarial {
            epsilon,
            fraction: f,
            ..
        } => {
            number("adversarial training epsilon", *epsilon)?;
            fraction(*f)
        }
        TrainingMethod::Mixed {
            linf,
            l2,
            epsilon_linf,
            epsilon_l2,
            fraction: f,
            ..
        } => {
            for (attack, want, slot) in [(linf, Norm::Linf, "linf"), (l2, Norm::L2, "l2")] {
                if attack.norm() != Some(want) {
                    return Err(Permanent(format!(
                        "mixed training: the {slot} attack is {}, expected a {} attack",
                        attacks::describe(attack),
                        want.as_str()
                    )));
                }
            }
            number("mixed training epsilon_linf", *epsilon_linf)?;
            number("mixed training epsilon_l2", *epsilon_l2)?;
            fraction(*f)
        }
    }
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
    use advsweep_core::{Attack, StepSize};
    use tch::Device;

    // No random starts: these tests draw nothing from torch's (process-wide) generator, so
    // they are exact even while other tests run.
    fn attack(norm: Norm) -> Attack {
        Attack::Pgd {
            norm,
            steps: 2,
            step: StepSize::FractionOfEpsilon(0.5),
            random_start: false,
            restarts: 1,
            eot: 1,
        }
    }

    fn mixed(strategy: MixStrategy, fraction: f64) -> TrainingMethod {
        TrainingMethod::Mixed {
            linf: attack(Norm::Linf),
            l2: attack(Norm::L2),
            epsilon_linf: 8.0 / 255.0,
            epsilon_l2: 0.5,
            strategy,
            fraction,
        }
    }

    fn batch() -> anyhow::Result<(BasicNet, Tensor, Tensor)> {
        let model = BasicNet::new(Device::Cpu)?;
        let x = Tensor::f_from_slice(
            &(0..10 * 3072)
                .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
                .collect::<Vec<_>>(),
        )?
        .f_view([10, 3, 32, 32])?;
        let y = Tensor::f_from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7, 8, 9])?;
        Ok((model, x, y))
    }

    fn rows(t: &Tensor, start: i64, len: i64) -> anyhow::Result<Tensor> {
        Ok(t.f_narrow(0, start, len)?)
    }

    #[test]
    fn both_per_batch_trains_on_both_versions_of_the_head() -> anyhow::Result<()> {
        let (model, x, y) = batch()?;
        let method = mixed(MixStrategy::BothPerBatch, 0.3);
        let (bx, by) = training_batch(
            &model,
            x.shallow_clone(),
            y.shallow_clone(),
            &method,
            EpsilonSpace::Pixel,
            &mut Rng::new(1),
        )?;
        assert_eq!(bx.size(), vec![13, 3, 32, 32]);
        assert_eq!(
            Vec::<i64>::try_from(&by)?,
            vec![0, 1, 2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
        );
        let head = rows(&x, 0, 3)?;
        let (linf, _) = attacks::perturbation_norms(&rows(&bx, 0, 3)?, &head)?;
        let (_, l2) = attacks::perturbation_norms(&rows(&bx, 3, 3)?, &head)?;
        assert!(
            linf.iter().all(|&d| d > 1e-3 && d <= 8.0 / 255.0 + 1e-6),
            "{linf:?}"
        );
        assert!(l2.iter().all(|&d| d > 1e-2 && d <= 0.5 + 1e-5), "{l2:?}");
        assert!(rows(&bx, 6, 7)?.f_equal(&rows(&x, 3, 7)?)?);
        Ok(())
    }

    #[test]
    fn worst_per_example_keeps_the_higher_loss_version() -> anyhow::Result<()> {
        let (model, x, y) = batch()?;
        let method = mixed(MixStrategy::WorstPerExample, 0.6);
        let (bx, by) = training_batch(
            &model,
            x.shallow_clone(),
            y.shallow_clone(),
            &method,
            EpsilonSpace::Pixel,
            &mut Rng::new(1),
        )?;
        assert_eq!(bx.size(), vec![10, 3, 32, 32]);
        assert!(by.f_equal(&y)?);
        assert!(rows(&bx, 6, 4)?.f_equal(&rows(&x, 6, 4)?)?);
        let (head, y_head) = (rows(&x, 0, 6)?, rows(&y, 0, 6)?);
        let mut rng = Rng::new(1);
        let linf = attacks::perturb(
            &model,
            &head,
            &y_head,
            &attack(Norm::Linf),
            Budget::pixel(8.0 / 255.0),
            true,
            &mut rng,
        )?;
        let l2 = attacks::perturb(
            &model,
            &head,
            &y_head,
            &attack(Norm::L2),
            Budget::pixel(0.5),
            true,
            &mut rng,
        )?;
        let loss = |t: &Tensor| -> anyhow::Result<Vec<f64>> {
            let l = tch::no_grad(|| {
                model.forward(t, true)?.f_cross_entropy_loss::<Tensor>(
                    &y_head,
                    None,
                    Reduction::None,
                    -100,
                    0.0,
                )
            })?;
            Ok(Vec::<f64>::try_from(&l.f_to_kind(Kind::Double)?)?)
        };
        let (loss_linf, loss_l2) = (loss(&linf)?, loss(&l2)?);
        let mut picked = [0, 0];
        for i in 0..6 {
            let row = rows(&bx, i, 1)?;
            let expected = if loss_l2[i as usize] > loss_linf[i as usize] {
                picked[1] += 1;
                rows(&l2, i, 1)?
            } else {
                picked[0] += 1;
                rows(&linf, i, 1)?
            };
            assert!(row.f_equal(&expected)?, "row {i}");
        }
        println!("worst per example picked (linf, l2) = {picked:?}");
        Ok(())
    }

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

    #[test]
    fn mismatched_mixed_attacks_are_permanent_errors() {
        let TrainingMethod::Mixed {
            linf,
            l2,
            epsilon_linf,
            epsilon_l2,
            fraction,
            ..
        } = mixed(MixStrategy::BothPerBatch, 0.5)
        else {
            return;
        };
        let swapped = TrainingMethod::Mixed {
            linf: l2,
            l2: linf,
            epsilon_linf,
            epsilon_l2,
            strategy: MixStrategy::BothPerBatch,
            fraction,
        };
        let err = check_method(&swapped).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("the linf attack is pgd-l2")));
        let bad_fraction = mixed(MixStrategy::WorstPerExample, 0.0);
        assert!(check_method(&bad_fraction).is_err());
        assert!(check_method(&mixed(MixStrategy::WorstPerExample, 1.0)).is_ok());
    }
}
