//! What the evaluation attacks of AutoAttack (APGD, FAB, Square and their cascade) return,
//! and the set-up they share between the public entry point and their work in the frame.
//!
//! Unlike FGSM and PGD, which return an iterate whatever it is, these attacks keep per image
//! the best *adversarial* point they found, and say which images they fooled: the cascade
//! attacks only the images still classified correctly, so it needs both.

use tch::Tensor;

use super::budget::Budget;
use super::eot::Target;
use super::space::Frame;
use crate::error::Permanent;
use crate::models::Classifier;
use crate::rng::Rng;

/// Adversarial images and which of them fooled the model.
#[derive(Debug)]
pub struct Adversarial {
    /// `f32 [N, 3, H, W]` in [0, 1]: per image the adversarial point found, or the clean image
    /// where none was.
    pub images: Tensor,
    /// `bool [N]`: the attack found a point of the budget that the model misclassifies (a
    /// clean image already misclassified counts as fooled, returned unchanged).
    pub fooled: Tensor,
}

/// An attack's work in the frame: on iterates `z`, returning the adversarial iterates and the
/// fooled flags.
pub(super) type InFrame<'f> =
    dyn FnMut(&Target<'_>, &Tensor, &mut Rng) -> anyhow::Result<(Tensor, Tensor)> + 'f;

/// Checks ε and the inputs, builds the frame and the queried model (eval mode; `eot`
/// gradient samples for a randomized model, one otherwise), seeds torch's generator from
/// `rng` for a randomized model's noise, runs `attack` on `z` with autograd enabled and maps
/// the result back to pixels.
pub(super) fn run_in_frame(
    model: &dyn Classifier,
    x: &Tensor,
    y: &Tensor,
    budget: Budget,
    eot: u32,
    rng: &mut Rng,
    attack: &mut InFrame<'_>,
) -> anyhow::Result<Adversarial> {
    let epsilon = budget.epsilon;
    if !epsilon.is_finite() || epsilon < 0.0 {
        return Err(Permanent(format!("epsilon {epsilon} is not a non-negative number")).into());
    }
    let n = x.size().first().copied().unwrap_or(0);
    if x.dim() != 4 || y.size() != [n] {
        return Err(Permanent(format!(
            "expected images [N, C, H, W] and labels [N], got {:?} and {:?}",
            x.size(),
            y.size()
        ))
        .into());
    }
    let x = x.f_detach()?;
    if model.randomized() {
        tch::manual_seed(rng.torch_seed());
    }
    let frame = Frame::new(budget.space, &x)?;
    let target = Target::new(model, &frame, false, gradient_samples(model, eot));
    let z = frame.to_z(&x)?;
    let (z_adv, fooled) = tch::with_grad(|| attack(&target, &z, rng))?;
    Ok(Adversarial {
        images: frame.to_pixels(&z_adv)?,
        fooled,
    })
}

/// The gradient samples per step an attack takes of `model` when asked for `eot`: `eot` (at
/// least 1) for a randomized model, 1 for a deterministic one, whose k samples would all be
/// the same.
pub(super) fn gradient_samples(model: &dyn Classifier, eot: u32) -> i64 {
    if model.randomized() {
        i64::from(eot.max(1))
    } else {
        1
    }
}

/// Rejects a count that must be at least one, naming the field.
pub(super) fn at_least_one(value: u32, field: &str, attack: &str) -> Result<(), Permanent> {
    if value == 0 {
        return Err(Permanent(format!(
            "{attack}: {field} must be at least 1, got 0"
        )));
    }
    Ok(())
}

/// Rejects a parameter outside `[lo, hi]` (or not a number), naming the field.
pub(super) fn within(
    value: f64,
    lo: f64,
    hi: f64,
    field: &str,
    attack: &str,
) -> Result<(), Permanent> {
    if !(value >= lo && value <= hi) {
        return Err(Permanent(format!(
            "{attack}: {field} must be in [{lo}, {hi}], got {value}"
        )));
    }
    Ok(())
}

/// `[N, 1, 1, 1]`-shaped view of a per-example tensor (any rank of images: `[N, 1, …]`).
pub(super) fn per_example(t: &Tensor, like: &Tensor) -> Result<Tensor, tch::TchError> {
    let mut shape = vec![1i64; like.dim()];
    if let Some(first) = shape.first_mut() {
        *first = -1;
    }
    t.f_view(shape.as_slice())
}

/// Indices (`i64 [M]`) where `mask` (`bool [N]`) is true; one host synchronization.
pub(super) fn indices(mask: &Tensor) -> Result<Tensor, tch::TchError> {
    mask.f_nonzero()?.f_view([-1])
}
