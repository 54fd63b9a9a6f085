//! The batch the optimizer sees under adversarial and mixed-norm training: the head of the
//! shuffled batch replaced by (or, for `both_per_batch`, joined by) adversarial examples
//! crafted against the current weights, as the training module's docs describe.
//!
//! Separate from the epoch loop ([`super::train_from`]) because it is where training meets the
//! attacks: a new training method is a new arm here, the loop stays as it is.

use advsweep_core::{EpsilonSpace, MixStrategy, TrainingMethod};
use anyhow::Context as _;
use tch::{Reduction, Tensor};

use crate::attacks::{self, Budget};
use crate::models::Classifier;
use crate::rng::Rng;

/// The batch the optimizer sees for `method`: `(x, y)` itself for standard training, with
/// adversarial examples mixed in otherwise (see the module docs).
pub(super) fn training_batch(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::basic::BasicNet;
    use advsweep_core::{Attack, Norm, StepSize};
    use tch::{Device, Kind};

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

    /// [`batch`] and the training batch the mixed method with `strategy` and `fraction` makes
    /// of it: model, clean images and labels, training images and labels.
    fn mixed_batch(
        strategy: MixStrategy,
        fraction: f64,
    ) -> anyhow::Result<(BasicNet, Tensor, Tensor, Tensor, Tensor)> {
        let (model, x, y) = batch()?;
        let (bx, by) = training_batch(
            &model,
            x.shallow_clone(),
            y.shallow_clone(),
            &mixed(strategy, fraction),
            EpsilonSpace::Pixel,
            &mut Rng::new(1),
        )?;
        Ok((model, x, y, bx, by))
    }

    fn rows(t: &Tensor, start: i64, len: i64) -> anyhow::Result<Tensor> {
        Ok(t.f_narrow(0, start, len)?)
    }

    #[test]
    fn both_per_batch_trains_on_both_versions_of_the_head() -> anyhow::Result<()> {
        let (_, x, _, bx, by) = mixed_batch(MixStrategy::BothPerBatch, 0.3)?;
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
        let (model, x, y, bx, by) = mixed_batch(MixStrategy::WorstPerExample, 0.6)?;
        assert_eq!(bx.size(), vec![10, 3, 32, 32]);
        assert!(by.f_equal(&y)?);
        assert!(rows(&bx, 6, 4)?.f_equal(&rows(&x, 6, 4)?)?);
        let (head, y_head) = (rows(&x, 0, 6)?, rows(&y, 0, 6)?);
        let mut rng = Rng::new(1);
        let mut perturb = |norm: Norm, epsilon: f64| {
            let budget = Budget::pixel(epsilon);
            attacks::perturb(
                &model,
                &head,
                &y_head,
                &attack(norm),
                budget,
                true,
                &mut rng,
            )
        };
        let linf = perturb(Norm::Linf, 8.0 / 255.0)?;
        let l2 = perturb(Norm::L2, 0.5)?;
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
}
