//! One FAB run: `steps` iterations from the image (or a random start near it) towards a
//! boundary ([`Boundary`]: a target class's, or each step the closest of all classes'),
//! keeping per image the closest adversarial iterate.
//!
//! Each iteration projects both the current point x⁽ⁱ⁾ and the original x onto the linearized
//! boundary ∩ the image box ([`project_to_hyperplane`]: displacements δ⁽ⁱ⁾ and δ_orig) and
//! moves to `x⁽ⁱ⁺¹⁾ = clip((1 − α)(x⁽ⁱ⁾ + η δ⁽ⁱ⁾) + α(x + η δ_orig))`,
//! `α = min(‖δ⁽ⁱ⁾‖ / (‖δ⁽ⁱ⁾‖ + ‖δ_orig‖), α_max)`. When x⁽ⁱ⁺¹⁾ is adversarial it is recorded
//! if it is the closest yet, and the iterate steps back towards x:
//! `x⁽ⁱ⁺¹⁾ ← x + β(x⁽ⁱ⁺¹⁾ − x)`.

use advsweep_core::Norm;
use tch::{Kind, Tensor};

use super::FabConfig;
use super::boundary::Boundary;
use super::projection::{box_rows, project_to_hyperplane, row_norms};
use crate::attacks::eot::Target;
use crate::attacks::outcome::per_example;

/// The smallest projection norm used in α (the reference's floor).
const PROJECTION_FLOOR: f64 = 1e-8;

/// The class scores whose argmax is the target's prediction at `z` (no autograd).
pub(super) fn scores(target: &Target<'_>, z: &Tensor) -> anyhow::Result<Tensor> {
    Ok(target
        .query(z, &|logits, _| logits.f_select(1, 0), false)?
        .scores)
}

/// A random start: a point of the ℓp sphere of radius ε/2 around `z`, clamped to the box (the
/// reference's start for the restarts after the first).
fn random_start(
    target: &Target<'_>,
    z: &Tensor,
    norm: Norm,
    epsilon: f64,
) -> anyhow::Result<Tensor> {
    let size = z.size();
    let n = size.first().copied().unwrap_or(0);
    let t = match norm {
        Norm::Linf => Tensor::f_rand(size.as_slice(), (Kind::Float, z.device()))?
            .f_mul_scalar(2.0)?
            .f_sub_scalar(1.0)?,
        Norm::L2 => Tensor::f_randn(size.as_slice(), (Kind::Float, z.device()))?,
    };
    let unit = t.f_div(&per_example(&row_norms(&t.f_reshape([n, -1])?, norm)?, z)?)?;
    Ok(target
        .frame
        .clamp_box(&z.f_add(&unit.f_mul_scalar(0.5 * epsilon)?)?)?)
}

/// One run on images `z` (none fooled yet) with labels `y`: per image the closest adversarial
/// iterate (or `z`) and its distance (+∞ where none was found).
pub(super) fn run(
    target: &Target<'_>,
    z: &Tensor,
    y: &Tensor,
    boundary: &Boundary,
    cfg: &FabConfig,
    epsilon: f64,
    start_at_random: bool,
) -> anyhow::Result<(Tensor, Tensor)> {
    let size = z.size();
    let n = size.first().copied().unwrap_or(0);
    let flat = |t: &Tensor| t.f_reshape([n, -1]);
    let (lo, hi) = box_rows(target.frame, z)?;
    let (lo2, hi2) = (
        Tensor::f_cat(&[&lo, &lo], 0)?,
        Tensor::f_cat(&[&hi, &hi], 0)?,
    );
    let z_rows = flat(z)?;

    let mut current = if start_at_random {
        random_start(target, z, cfg.norm, epsilon)?
    } else {
        z.f_detach_copy()?
    };
    let mut closest = z.f_detach_copy()?;
    let mut distance = Tensor::f_full([n], f64::INFINITY, (Kind::Float, z.device()))?;

    for _ in 0..cfg.steps {
        let (w, g) = boundary.linearize(target, &current, y, cfg.norm)?;
        let current_rows = flat(&current)?;
        // The linearized boundary ⟨w, u⟩ = b through the current point's first-order model.
        let b = w
            .f_mul(&current_rows)?
            .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?
            .f_sub(&g)?;
        let both = project_to_hyperplane(
            cfg.norm,
            &Tensor::f_cat(&[&current_rows, &z_rows], 0)?,
            &Tensor::f_cat(&[&w, &w], 0)?,
            &Tensor::f_cat(&[&b, &b], 0)?,
            &lo2,
            &hi2,
        )?;
        let from_current = both.f_narrow(0, 0, n)?;
        let from_origin = both.f_narrow(0, n, n)?;
        let lengths = row_norms(&both, cfg.norm)?.f_clamp_min(PROJECTION_FLOOR)?;
        let (a1, a2) = (lengths.f_narrow(0, 0, n)?, lengths.f_narrow(0, n, n)?);
        let alpha = a1
            .f_div(&a1.f_add(&a2)?)?
            .f_clamp(0.0, cfg.alpha_max)?
            .f_view([n, 1])?;
        let next = current_rows
            .f_add(&from_current.f_mul_scalar(cfg.eta)?)?
            .f_mul(&alpha.f_neg()?.f_add_scalar(1.0)?)?
            .f_add(
                &z_rows
                    .f_add(&from_origin.f_mul_scalar(cfg.eta)?)?
                    .f_mul(&alpha)?,
            )?;
        current = target.frame.clamp_box(&next.f_reshape(size.as_slice())?)?;

        let adversarial = scores(target, &current)?
            .f_argmax(1, false)?
            .f_ne_tensor(y)?;
        let d = row_norms(&flat(&current.f_sub(z)?)?, cfg.norm)?;
        let closer = adversarial.f_logical_and(&d.f_lt_tensor(&distance)?)?;
        closest = current.f_where_self(&per_example(&closer, z)?, &closest)?;
        distance = d.f_where_self(&closer, &distance)?;
        let back = z.f_add(&current.f_sub(z)?.f_mul_scalar(cfg.beta)?)?;
        current = back.f_where_self(&per_example(&adversarial, z)?, &current)?;
    }
    Ok((closest, distance))
}
