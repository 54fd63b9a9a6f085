//! FGSM (Goodfellow et al.): one ascent step of size `step_fraction · ε` from the input or
//! from a random point of the ε-ball, projected back into the ball.
//!
//! One attack per file: the dispatch in [`super::perturb`] resolves the attack's parameters,
//! and this file holds only what makes FGSM FGSM.

use advsweep_core::Norm;
use tch::Tensor;

use super::budget::{Ball, random_start_point};
use super::eot::Target;
use crate::rng::Rng;

/// FGSM's parameters, resolved against the budget.
#[derive(Debug, Clone, Copy)]
pub(super) struct FgsmConfig {
    pub norm: Norm,
    pub random_start: bool,
    /// Absolute step size (`step_fraction · ε`).
    pub step: f64,
    pub epsilon: f64,
}

/// The FGSM iterate for `z` (in the target's frame) and labels `y`.
pub(super) fn fgsm(
    target: &Target<'_>,
    z: &Tensor,
    y: &Tensor,
    cfg: FgsmConfig,
    rng: &mut Rng,
) -> anyhow::Result<Tensor> {
    let start = if cfg.random_start {
        random_start_point(target.frame, z, cfg.norm, cfg.epsilon, rng)?
    } else {
        z.shallow_clone()
    };
    let grad = target.gradient(&start, y)?;
    let ball = Ball::new(target.frame, z, cfg.norm, cfg.epsilon)?;
    ball.step(&start, grad, cfg.step)
}
