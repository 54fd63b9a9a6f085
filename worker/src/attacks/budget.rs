//! The perturbation budget and its geometry: how large a perturbation may be ([`Budget`]: ε
//! and the space it is measured in), the feasible set around an input ([`Ball`]: the ε-ball
//! intersected with the image box, with its ascent-and-project step), the projection onto it
//! ([`project`], [`project_in`]) and random starting points inside it.
//!
//! Every iterative attack (FGSM's single step, PGD's many, and the ones to come) moves and
//! projects through these, so the guarantees the attacks module states (result in [0, 1] and
//! within the ε-ball) are established here once.

use advsweep_core::{EpsilonSpace, Norm};
use tch::{Kind, Tensor};

use super::norms::{TINY, ascend, l2_norms};
use super::space::Frame;
use crate::rng::Rng;

/// A perturbation budget: its size and the space it is measured in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub epsilon: f64,
    pub space: EpsilonSpace,
}

impl Budget {
    pub fn new(epsilon: f64, space: EpsilonSpace) -> Budget {
        Budget { epsilon, space }
    }

    /// ε measured on inputs in [0, 1].
    pub fn pixel(epsilon: f64) -> Budget {
        Budget::new(epsilon, EpsilonSpace::Pixel)
    }

    /// ε measured after the CIFAR-10 normalization.
    pub fn normalized(epsilon: f64) -> Budget {
        Budget::new(epsilon, EpsilonSpace::Normalized)
    }
}

/// The feasible set of an attack around `z`: the ε-ball intersected with the frame's image
/// box, with one ascent-and-project step.
///
/// For ℓ∞ both sets are boxes, so the intersection is the box
/// `[max(z − ε, lo), min(z + ε, hi)]`, computed once per attack: clamping into it gives
/// exactly (bit for bit) what clamping into the ε-box and then into the image box gives, since
/// `z` lies in the image box (so the two boxes intersect), in two elementwise passes fewer per
/// step. ℓ2 steps use [`ascend`] and [`project_in`].
pub(super) enum Ball<'a> {
    Linf {
        lo: Tensor,
        hi: Tensor,
    },
    L2 {
        frame: &'a Frame,
        z: &'a Tensor,
        epsilon: f64,
    },
}

impl<'a> Ball<'a> {
    pub(super) fn new(
        frame: &'a Frame,
        z: &'a Tensor,
        norm: Norm,
        epsilon: f64,
    ) -> anyhow::Result<Ball<'a>> {
        Ok(match norm {
            Norm::Linf => {
                let (lo, hi) = match frame {
                    Frame::Pixel => (
                        z.f_sub_scalar(epsilon)?.f_clamp_min(0.0)?,
                        z.f_add_scalar(epsilon)?.f_clamp_max(1.0)?,
                    ),
                    Frame::Normalized { lo, hi, .. } => (
                        z.f_sub_scalar(epsilon)?.f_maximum(lo)?,
                        z.f_add_scalar(epsilon)?.f_minimum(hi)?,
                    ),
                };
                Ball::Linf { lo, hi }
            }
            Norm::L2 => Ball::L2 { frame, z, epsilon },
        })
    }

    /// `z_adv` moved by `step` along the ascent direction of `grad` (which it may overwrite),
    /// projected back into the set.
    pub(super) fn step(
        &self,
        z_adv: &Tensor,
        mut grad: Tensor,
        step: f64,
    ) -> anyhow::Result<Tensor> {
        match self {
            Ball::Linf { lo, hi } => {
                let _ = grad.f_sign_()?.f_mul_scalar_(step)?;
                let mut next = z_adv.f_add(&grad)?;
                let _ = next.f_clamp_tensor_(Some(lo), Some(hi))?;
                Ok(next.f_detach()?)
            }
            Ball::L2 { frame, z, epsilon } => Ok(project_in(
                frame,
                &ascend(z_adv, &grad, Norm::L2, step)?,
                z,
                Norm::L2,
                *epsilon,
            )?),
        }
    }
}

/// Projects `x_adv` onto the ε-ball around `x` in pixel space, then onto the image box
/// [0, 1] (see [`super::perturb`] for normalized-space budgets).
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
    project_in(&Frame::Pixel, x_adv, x, norm, epsilon)
}

/// [`project`] in the frame's space, with the frame's image box.
pub(super) fn project_in(
    frame: &Frame,
    z_adv: &Tensor,
    z: &Tensor,
    norm: Norm,
    epsilon: f64,
) -> Result<Tensor, tch::TchError> {
    let projected = match norm {
        Norm::Linf => {
            let lo = z.f_sub_scalar(epsilon)?;
            let hi = z.f_add_scalar(epsilon)?;
            z_adv.f_clamp_tensor(Some(&lo), Some(&hi))?
        }
        Norm::L2 => {
            let delta = z_adv.f_sub(z)?;
            let norms = l2_norms(&delta)?;
            // min(1, ε/‖δ‖); ‖δ‖ = 0 gives +inf, clamped to 1.
            let factor = norms
                .f_reciprocal()?
                .f_mul_scalar(epsilon)?
                .f_clamp_max(1.0)?;
            z.f_add(&delta.f_mul(&factor)?)?
        }
    };
    frame.clamp_box(&projected)?.f_detach()
}

/// A uniformly random point of the ε-box (ℓ∞) or a random direction at a uniformly random
/// radius in [0, ε] (ℓ2) around `z`, clamped to the image box.
pub(super) fn random_start_point(
    frame: &Frame,
    z: &Tensor,
    norm: Norm,
    epsilon: f64,
    rng: &mut Rng,
) -> anyhow::Result<Tensor> {
    tch::manual_seed(rng.torch_seed());
    let delta = match norm {
        // Drawn in logical (NCHW) order whatever `z`'s memory layout, so the same seed gives
        // the same start in any layout.
        Norm::Linf => Tensor::f_rand(z.size().as_slice(), (z.kind(), z.device()))?
            .f_mul_scalar(2.0 * epsilon)?
            .f_sub_scalar(epsilon)?,
        Norm::L2 => {
            let direction = Tensor::f_randn(z.size().as_slice(), (z.kind(), z.device()))?;
            let unit = direction.f_div(&l2_norms(&direction)?.f_clamp_min(TINY)?)?;
            let n = z.size().first().copied().unwrap_or(0);
            let radius =
                Tensor::f_rand([n, 1, 1, 1], (Kind::Float, z.device()))?.f_mul_scalar(epsilon)?;
            unit.f_mul(&radius)?
        }
    };
    Ok(frame.clamp_box(&z.f_add(&delta)?)?.f_detach()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::testing::inputs;

    /// The precomputed ℓ∞ set gives bit for bit what stepping, clamping into the ε-box and
    /// then into the image box gives, in both spaces, including points far outside both.
    #[test]
    fn linf_steps_match_clamping_into_the_ball_then_the_box() -> anyhow::Result<()> {
        let (x, _) = inputs(4)?;
        let epsilon = 8.0 / 255.0;
        for space in [EpsilonSpace::Pixel, EpsilonSpace::Normalized] {
            let frame = Frame::new(space, &x)?;
            let z = frame.to_z(&x)?;
            let ball = Ball::new(&frame, &z, Norm::Linf, epsilon)?;
            let mut z_adv = z.shallow_clone();
            for scale in [0.0, 0.01, 0.5, 3.0] {
                let grad = z.f_randn_like()?;
                let start = z_adv.f_add(&z.f_randn_like()?.f_mul_scalar(scale)?)?;
                let expected = project_in(
                    &frame,
                    &ascend(&start, &grad, Norm::Linf, 2.0 / 255.0)?,
                    &z,
                    Norm::Linf,
                    epsilon,
                )?;
                z_adv = ball.step(&start, grad, 2.0 / 255.0)?;
                assert!(z_adv.f_equal(&expected)?, "{space:?}, scale {scale}");
            }
        }
        Ok(())
    }
}
