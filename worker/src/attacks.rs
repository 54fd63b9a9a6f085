//! White-box evasion attacks: FGSM and PGD under ℓ∞ and ℓ2 budgets.
//!
//! All attacks work in pixel space on inputs in [0, 1] and maximize the cross-entropy of the
//! true label. Gradients are taken with respect to the input only
//! (`Tensor::run_backward(&[loss], &[x])`, i.e. `torch.autograd.grad`), so no parameter
//! gradient is ever accumulated: the same code serves evaluation and adversarial training.
//!
//! Guarantees (checked by tests): the result stays in [0, 1] and within the ε-ball around `x`
//! (ℓ∞: `|δ|∞ ≤ ε` up to float rounding; ℓ2: `‖δ‖₂ ≤ ε`), and ε = 0 returns `x` unchanged.
//!
//! Randomness (random starts) comes from torch's generator, re-seeded from the caller's
//! [`Rng`] before each use, so an attack is a deterministic function of its seed on a given
//! device type while staying fast on GPUs.

use advsweep_spec::{Attack, Norm};
use anyhow::Context as _;
use tch::{Kind, Reduction, Tensor};

use crate::models::Classifier;
use crate::rng::Rng;

/// Smallest gradient norm used as a divisor (ℓ2 steps).
const TINY: f64 = 1e-12;

/// Returns adversarial versions of `x` (`f32 [N, 3, H, W]` in [0, 1]) for labels `y`.
///
/// `train` is the mode the model runs in while the attack queries it (eval for evaluation
/// cells, the training mode for adversarial training).
pub fn perturb(
    model: &dyn Classifier,
    x: &Tensor,
    y: &Tensor,
    attack: &Attack,
    epsilon: f64,
    train: bool,
    rng: &mut Rng,
) -> anyhow::Result<Tensor> {
    if !epsilon.is_finite() || epsilon < 0.0 {
        anyhow::bail!("epsilon {epsilon} is not a non-negative number");
    }
    if epsilon == 0.0 || attack.is_none() {
        return Ok(x.f_detach()?);
    }
    let x = x.f_detach()?;
    tch::with_grad(|| match *attack {
        Attack::None => Ok(x.shallow_clone()),
        Attack::Fgsm {
            norm,
            random_start,
            step_fraction,
        } => {
            let start = if random_start {
                random_start_point(&x, norm, epsilon, rng)?
            } else {
                x.shallow_clone()
            };
            let grad = input_gradient(model, &start, y, train)?;
            let stepped = ascend(&start, &grad, norm, step_fraction * epsilon)?;
            Ok(project(&stepped, &x, norm, epsilon)?)
        }
        Attack::Pgd {
            norm,
            steps,
            step,
            random_start,
            restarts,
        } => pgd(
            model,
            &x,
            y,
            PgdConfig {
                norm,
                steps,
                step: step.resolve(epsilon),
                random_start,
                restarts: restarts.max(1),
                epsilon,
            },
            train,
            rng,
        ),
    })
    .with_context(|| format!("running {} at epsilon {epsilon}", describe(attack)))
}

/// A short human-readable name, e.g. "pgd-linf-10x1".
pub fn describe(attack: &Attack) -> String {
    match attack {
        Attack::None => "none".into(),
        Attack::Fgsm {
            norm, random_start, ..
        } => format!(
            "fgsm{}-{}",
            if *random_start { "-rs" } else { "" },
            norm.as_str()
        ),
        Attack::Pgd {
            norm,
            steps,
            restarts,
            ..
        } => format!("pgd-{}-{steps}x{restarts}", norm.as_str()),
    }
}

#[derive(Debug, Clone, Copy)]
struct PgdConfig {
    norm: Norm,
    steps: u32,
    step: f64,
    random_start: bool,
    restarts: u32,
    epsilon: f64,
}

fn pgd(
    model: &dyn Classifier,
    x: &Tensor,
    y: &Tensor,
    cfg: PgdConfig,
    train: bool,
    rng: &mut Rng,
) -> anyhow::Result<Tensor> {
    // Per example: the best adversarial point so far, whether it fools the model, its loss.
    let mut best: Option<(Tensor, Tensor, Tensor)> = None;
    for _ in 0..cfg.restarts {
        let mut x_adv = if cfg.random_start {
            random_start_point(x, cfg.norm, cfg.epsilon, rng)?
        } else {
            x.shallow_clone()
        };
        for _ in 0..cfg.steps {
            let grad = input_gradient(model, &x_adv, y, train)?;
            x_adv = project(
                &ascend(&x_adv, &grad, cfg.norm, cfg.step)?,
                x,
                cfg.norm,
                cfg.epsilon,
            )?;
        }
        if cfg.restarts == 1 {
            return Ok(x_adv);
        }
        let (wrong, loss) = tch::no_grad(|| -> anyhow::Result<(Tensor, Tensor)> {
            let logits = model.forward(&x_adv, train)?;
            let wrong = logits.f_argmax(-1, false)?.f_ne_tensor(y)?;
            let loss =
                logits.f_cross_entropy_loss::<Tensor>(y, None, Reduction::None, -100, 0.0)?;
            Ok((wrong, loss))
        })?;
        best = Some(match best {
            None => (x_adv, wrong, loss),
            Some((best_x, best_wrong, best_loss)) => {
                // Take the new restart where it fools the model and the best did not, or where
                // both agree on fooling and the new loss is higher.
                let newly_wrong = wrong.f_logical_and(&best_wrong.f_logical_not()?)?;
                let same = wrong.f_eq_tensor(&best_wrong)?;
                let higher = loss.f_gt_tensor(&best_loss)?;
                let take = newly_wrong.f_logical_or(&same.f_logical_and(&higher)?)?;
                let take_x = take.f_view([-1, 1, 1, 1])?;
                (
                    x_adv.f_where_self(&take_x, &best_x)?,
                    wrong.f_where_self(&take, &best_wrong)?,
                    loss.f_where_self(&take, &best_loss)?,
                )
            }
        });
    }
    match best {
        Some((x_adv, _, _)) => Ok(x_adv),
        None => Ok(x.shallow_clone()),
    }
}

/// ∇ₓ of the summed cross-entropy at `x`, without touching parameter gradients.
fn input_gradient(
    model: &dyn Classifier,
    x: &Tensor,
    y: &Tensor,
    train: bool,
) -> anyhow::Result<Tensor> {
    let x = x.f_detach()?.f_set_requires_grad(true)?;
    let logits = model.forward(&x, train)?;
    let loss = logits.f_cross_entropy_loss::<Tensor>(y, None, Reduction::Sum, -100, 0.0)?;
    let mut grads = Tensor::f_run_backward(&[&loss], &[&x], false, false)?;
    grads.pop().context("autograd returned no input gradient")
}

/// Per-example ℓ2 norm, shaped `[N, 1, 1, 1]` for broadcasting.
fn l2_norms(t: &Tensor) -> Result<Tensor, tch::TchError> {
    t.f_flatten(1, -1)?
        .f_norm_scalaropt_dim(2, [1], false)?
        .f_view([-1, 1, 1, 1])
}

/// One ascent step of size `step`: signed gradient (ℓ∞) or normalized gradient (ℓ2).
fn ascend(x: &Tensor, grad: &Tensor, norm: Norm, step: f64) -> Result<Tensor, tch::TchError> {
    let direction = match norm {
        Norm::Linf => grad.f_sign()?,
        Norm::L2 => grad.f_div(&l2_norms(grad)?.f_clamp_min(TINY)?)?,
    };
    x.f_add(&direction.f_mul_scalar(step)?)
}

/// Projects `x_adv` onto the ε-ball around `x`, then onto the image box [0, 1].
///
/// For ℓ∞ both sets are boxes and clamping coordinate-wise is the exact projection onto their
/// intersection. For ℓ2, rescaling δ then clamping keeps ‖δ‖₂ ≤ ε, because clamping to
/// [0, 1] (with `x` inside it) only moves coordinates towards `x`.
pub fn project(
    x_adv: &Tensor,
    x: &Tensor,
    norm: Norm,
    epsilon: f64,
) -> Result<Tensor, tch::TchError> {
    let projected = match norm {
        Norm::Linf => {
            let lo = x.f_sub_scalar(epsilon)?;
            let hi = x.f_add_scalar(epsilon)?;
            x_adv.f_clamp_tensor(Some(&lo), Some(&hi))?
        }
        Norm::L2 => {
            let delta = x_adv.f_sub(x)?;
            let norms = l2_norms(&delta)?;
            // min(1, ε/‖δ‖); ‖δ‖ = 0 gives +inf, clamped to 1.
            let factor = norms
                .f_reciprocal()?
                .f_mul_scalar(epsilon)?
                .f_clamp_max(1.0)?;
            x.f_add(&delta.f_mul(&factor)?)?
        }
    };
    projected.f_clamp(0.0, 1.0)?.f_detach()
}

/// A uniformly random point of the ε-box (ℓ∞) or a random direction at a uniformly random
/// radius in [0, ε] (ℓ2) around `x`, clamped to [0, 1].
fn random_start_point(
    x: &Tensor,
    norm: Norm,
    epsilon: f64,
    rng: &mut Rng,
) -> anyhow::Result<Tensor> {
    tch::manual_seed((rng.next_u64() >> 1) as i64);
    let delta = match norm {
        Norm::Linf => x
            .f_rand_like()?
            .f_mul_scalar(2.0 * epsilon)?
            .f_sub_scalar(epsilon)?,
        Norm::L2 => {
            let direction = x.f_randn_like()?;
            let unit = direction.f_div(&l2_norms(&direction)?.f_clamp_min(TINY)?)?;
            let n = x.size().first().copied().unwrap_or(0);
            let radius =
                Tensor::f_rand([n, 1, 1, 1], (Kind::Float, x.device()))?.f_mul_scalar(epsilon)?;
            unit.f_mul(&radius)?
        }
    };
    Ok(x.f_add(&delta)?.f_clamp(0.0, 1.0)?.f_detach()?)
}

/// Per-example ℓ∞ and ℓ2 norms of `x_adv - x`, as `f64` vectors.
pub fn perturbation_norms(x_adv: &Tensor, x: &Tensor) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    tch::no_grad(|| {
        let delta = x_adv.f_sub(x)?.f_flatten(1, -1)?.f_to_kind(Kind::Double)?;
        let linf = delta.f_abs()?.f_amax([1], false)?;
        let l2 = delta.f_norm_scalaropt_dim(2, [1], false)?;
        Ok((Vec::<f64>::try_from(&linf)?, Vec::<f64>::try_from(&l2)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::basic::BasicNet;
    use advsweep_spec::StepSize;
    use tch::Device;

    fn inputs(n: i64) -> anyhow::Result<(Tensor, Tensor)> {
        tch::manual_seed(0);
        let x = Tensor::f_rand([n, 3, 32, 32], (Kind::Float, Device::Cpu))?;
        // Some pixels at the box edges, where clamping matters.
        let x = x.f_mul_scalar(1.2)?.f_sub_scalar(0.1)?.f_clamp(0.0, 1.0)?;
        let y = Tensor::f_randint(10, [n], (Kind::Int64, Device::Cpu))?;
        Ok((x, y))
    }

    fn all_attacks(norm: Norm) -> Vec<Attack> {
        vec![
            Attack::Fgsm {
                norm,
                random_start: false,
                step_fraction: 1.0,
            },
            Attack::Fgsm {
                norm,
                random_start: true,
                step_fraction: 1.25,
            },
            Attack::Pgd {
                norm,
                steps: 3,
                step: StepSize::FractionOfEpsilon(0.5),
                random_start: true,
                restarts: 2,
            },
            Attack::Pgd {
                norm,
                steps: 2,
                step: StepSize::Absolute(10.0), // a huge step: projection must hold anyway
                random_start: false,
                restarts: 1,
            },
        ]
    }

    #[test]
    fn linf_attacks_stay_in_the_box() -> anyhow::Result<()> {
        let model = BasicNet::new(Device::Cpu)?;
        let (x, y) = inputs(6)?;
        let eps = 8.0 / 255.0;
        let mut rng = Rng::new(1);
        for attack in all_attacks(Norm::Linf) {
            let adv = perturb(&model, &x, &y, &attack, eps, false, &mut rng)?;
            let (linf, _) = perturbation_norms(&adv, &x)?;
            assert!(
                linf.iter().all(|&d| d <= eps + 1e-6),
                "{attack:?}: {linf:?}"
            );
            assert!(
                linf.iter().any(|&d| d > eps * 0.5),
                "{attack:?} did nothing"
            );
            assert!(f64::try_from(adv.f_min()?)? >= 0.0);
            assert!(f64::try_from(adv.f_max()?)? <= 1.0);
        }
        Ok(())
    }

    #[test]
    fn l2_attacks_stay_in_the_ball() -> anyhow::Result<()> {
        let model = BasicNet::new(Device::Cpu)?;
        let (x, y) = inputs(6)?;
        let eps = 0.5;
        let mut rng = Rng::new(2);
        for attack in all_attacks(Norm::L2) {
            let adv = perturb(&model, &x, &y, &attack, eps, false, &mut rng)?;
            let (_, l2) = perturbation_norms(&adv, &x)?;
            assert!(
                l2.iter().all(|&d| d <= eps * (1.0 + 1e-5)),
                "{attack:?}: {l2:?}"
            );
            assert!(l2.iter().any(|&d| d > eps * 0.1), "{attack:?} did nothing");
            assert!(f64::try_from(adv.f_min()?)? >= 0.0);
            assert!(f64::try_from(adv.f_max()?)? <= 1.0);
        }
        Ok(())
    }

    #[test]
    fn zero_epsilon_and_none_return_the_input() -> anyhow::Result<()> {
        let model = BasicNet::new(Device::Cpu)?;
        let (x, y) = inputs(3)?;
        let mut rng = Rng::new(3);
        let mut attacks = all_attacks(Norm::Linf);
        attacks.extend(all_attacks(Norm::L2));
        for attack in attacks {
            let adv = perturb(&model, &x, &y, &attack, 0.0, false, &mut rng)?;
            assert!(adv.f_equal(&x)?, "{attack:?}");
        }
        let adv = perturb(&model, &x, &y, &Attack::None, 0.3, false, &mut rng)?;
        assert!(adv.f_equal(&x)?);
        assert!(perturb(&model, &x, &y, &Attack::None, f64::NAN, false, &mut rng).is_err());
        Ok(())
    }

    #[test]
    fn attacks_leave_parameter_gradients_alone() -> anyhow::Result<()> {
        let model = BasicNet::new(Device::Cpu)?;
        let (x, y) = inputs(2)?;
        let attack = &all_attacks(Norm::Linf)[2];
        let _adv = perturb(&model, &x, &y, attack, 0.03, true, &mut Rng::new(4))?;
        for p in model.var_store().trainable_variables() {
            assert!(!p.grad().defined(), "a parameter gradient was accumulated");
        }
        Ok(())
    }
}
