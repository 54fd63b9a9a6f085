//! PGD (Madry et al.): `steps` projected ascent steps from the input or a random start, with
//! restarts compared per example.
//!
//! One attack per file: the dispatch in [`super::perturb`] resolves the attack's parameters,
//! and this file holds only what makes PGD PGD (iteration and restart selection); steps,
//! projections and random starts are the budget's ([`super::budget`]), gradients the
//! target's ([`super::eot`]).

use advsweep_core::Norm;
use tch::Tensor;

use super::budget::{Ball, random_start_point};
use super::eot::Target;
use crate::rng::Rng;

/// PGD's parameters, resolved against the budget.
#[derive(Debug, Clone, Copy)]
pub(super) struct PgdConfig {
    pub norm: Norm,
    pub steps: u32,
    pub step: f64,
    pub random_start: bool,
    pub restarts: u32,
    pub epsilon: f64,
}

/// The PGD iterate for `z` (in the target's frame) and labels `y`: `steps` ascent steps from
/// `z` or a random start, each projected into the ball; with several restarts, per example the
/// restart that fools the model, or else has the highest loss.
pub(super) fn pgd(
    target: &Target<'_>,
    z: &Tensor,
    y: &Tensor,
    cfg: PgdConfig,
    rng: &mut Rng,
) -> anyhow::Result<Tensor> {
    // Per example: the best adversarial point so far, whether it fools the model, its loss.
    let mut best: Option<(Tensor, Tensor, Tensor)> = None;
    let ball = Ball::new(target.frame, z, cfg.norm, cfg.epsilon)?;
    for _ in 0..cfg.restarts {
        let mut z_adv = if cfg.random_start {
            random_start_point(target.frame, z, cfg.norm, cfg.epsilon, rng)?
        } else {
            z.shallow_clone()
        };
        for _ in 0..cfg.steps {
            let grad = target.gradient(&z_adv, y)?;
            z_adv = ball.step(&z_adv, grad, cfg.step)?;
        }
        if cfg.restarts == 1 {
            return Ok(z_adv);
        }
        let (wrong, loss) = target.assess(&z_adv, y)?;
        best = Some(match best {
            None => (z_adv, wrong, loss),
            Some((best_z, best_wrong, best_loss)) => {
                // Take the new restart where it fools the model and the best did not, or where
                // both agree on fooling and the new loss is higher.
                let newly_wrong = wrong.f_logical_and(&best_wrong.f_logical_not()?)?;
                let same = wrong.f_eq_tensor(&best_wrong)?;
                let higher = loss.f_gt_tensor(&best_loss)?;
                let take = newly_wrong.f_logical_or(&same.f_logical_and(&higher)?)?;
                let mut shape = vec![1i64; z_adv.dim()];
                if let Some(first) = shape.first_mut() {
                    *first = -1;
                }
                let take_z = take.f_view(shape.as_slice())?;
                (
                    z_adv.f_where_self(&take_z, &best_z)?,
                    wrong.f_where_self(&take, &best_wrong)?,
                    loss.f_where_self(&take, &best_loss)?,
                )
            }
        });
    }
    match best {
        Some((z_adv, _, _)) => Ok(z_adv),
        None => Ok(z.shallow_clone()),
    }
}
