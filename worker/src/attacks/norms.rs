//! Norms of perturbations, and the per-norm ascent step that uses them.
//!
//! Two consumers need norms: the attacks themselves (the ℓ2 step divides by the gradient's
//! ℓ2 norm, projections rescale by it) and evaluation, which reports how large the adversarial
//! perturbations were (`mean_linf`, `mean_l2`). Both live here so that a new attack or a new
//! norm finds every per-norm formula in one file.

use advsweep_core::{EpsilonSpace, Norm};
use tch::{Kind, Tensor};

use super::space::Frame;

/// Smallest gradient norm used as a divisor (ℓ2 steps).
pub(super) const TINY: f64 = 1e-12;

/// Per-example ℓ2 norm, shaped `[N, 1, 1, 1]` for broadcasting.
pub(super) fn l2_norms(t: &Tensor) -> Result<Tensor, tch::TchError> {
    t.f_flatten(1, -1)?
        .f_norm_scalaropt_dim(2, [1], false)?
        .f_view([-1, 1, 1, 1])
}

/// One ascent step of size `step`: signed gradient (ℓ∞) or normalized gradient (ℓ2).
pub(super) fn ascend(
    x: &Tensor,
    grad: &Tensor,
    norm: Norm,
    step: f64,
) -> Result<Tensor, tch::TchError> {
    let direction = match norm {
        Norm::Linf => grad.f_sign()?,
        Norm::L2 => grad.f_div(&l2_norms(grad)?.f_clamp_min(TINY)?)?,
    };
    x.f_add(&direction.f_mul_scalar(step)?)
}

/// Per-example ℓ∞ and ℓ2 norms of `x_adv - x` in pixel space, as `f64` vectors.
pub fn perturbation_norms(x_adv: &Tensor, x: &Tensor) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    tch::no_grad(|| {
        let delta = x_adv.f_sub(x)?.f_flatten(1, -1)?.f_to_kind(Kind::Double)?;
        let linf = delta.f_abs()?.f_amax([1], false)?;
        let l2 = delta.f_norm_scalaropt_dim(2, [1], false)?;
        Ok((Vec::<f64>::try_from(&linf)?, Vec::<f64>::try_from(&l2)?))
    })
}

/// `[Σ ‖δ‖∞, Σ ‖δ‖₂]` over the batch, `δ = x_adv − x` in pixel space, as an `f64 [2]` tensor
/// on the inputs' device: the per-example norms of [`perturbation_norms`], summed in `f64`
/// without a round trip to the host.
pub fn perturbation_norm_sums(x_adv: &Tensor, x: &Tensor) -> anyhow::Result<Tensor> {
    tch::no_grad(|| {
        let delta = x_adv.f_sub(x)?.f_flatten(1, -1)?.f_to_kind(Kind::Double)?;
        let linf = delta.f_abs()?.f_amax([1], false)?.f_sum(Kind::Double)?;
        let l2 = delta
            .f_norm_scalaropt_dim(2, [1], false)?
            .f_sum(Kind::Double)?;
        Ok(Tensor::f_stack(&[linf, l2], 0)?)
    })
}

/// Per-example ℓ∞ and ℓ2 norms of `x_adv - x` measured in `space` (for normalized space,
/// of `(x_adv - x) / std`).
pub fn perturbation_norms_in(
    x_adv: &Tensor,
    x: &Tensor,
    space: EpsilonSpace,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    match Frame::new(space, x)? {
        Frame::Pixel => perturbation_norms(x_adv, x),
        Frame::Normalized { std, .. } => {
            tch::no_grad(|| perturbation_norms(&x_adv.f_div(&std)?, &x.f_div(&std)?))
        }
    }
}
