//! The geometry of a FAB step: the smallest ℓp displacement onto a hyperplane within the image
//! box ([`project_to_hyperplane`]), per-row norms and the box as rows.
//!
//! The projection onto {u : ⟨w, u⟩ = b} ∩ box is solved exactly: with the coordinates moved
//! against `w`, the reachable change of ⟨w, ·⟩ at a given size λ of the step is piecewise
//! linear and increasing in λ with a breakpoint where each coordinate meets the box, so
//! sorting the breakpoints once and a cumulative sum give the smallest λ that reaches the
//! hyperplane (no bisection loop). When the hyperplane does not meet the box, the box corner
//! that gets closest is taken, as in the paper.

use advsweep_core::Norm;
use tch::{Kind, Tensor};

use crate::attacks::space::Frame;

/// Per-row ℓp norm of `[N, D]` rows (`[N]`).
pub(super) fn row_norms(rows: &Tensor, norm: Norm) -> Result<Tensor, tch::TchError> {
    match norm {
        Norm::Linf => rows.f_abs()?.f_amax([1i64].as_slice(), false),
        Norm::L2 => rows.f_norm_scalaropt_dim(2, [1i64].as_slice(), false),
    }
}

/// The image box of the frame as full `[N, D]` rows (lower, upper).
pub(super) fn box_rows(frame: &Frame, z: &Tensor) -> Result<(Tensor, Tensor), tch::TchError> {
    let n = z.size().first().copied().unwrap_or(0);
    let (lo, hi) = match frame {
        Frame::Pixel => (z.f_zeros_like()?, z.f_ones_like()?),
        Frame::Normalized { lo, hi, .. } => {
            (z.f_zeros_like()?.f_add(lo)?, z.f_zeros_like()?.f_add(hi)?)
        }
    };
    Ok((lo.f_reshape([n, -1])?, hi.f_reshape([n, -1])?))
}

/// The smallest displacement `d` (rows, ℓ∞ or ℓ2) with `⟨w, t + d⟩ = b` and
/// `lo ≤ t + d ≤ hi`, for points `t` inside the box; where the hyperplane does not meet the
/// box, the box corner that moves ⟨w, ·⟩ farthest towards `b`. All arguments are `[R, D]`
/// rows except `b` (`[R]`).
///
/// With `w` oriented so that ⟨w, ·⟩ must fall by `c = |⟨w, t⟩ − b|`, every coordinate moves
/// against `w_i` by at most its room `r_i` (to the box). For ℓ∞ a step of size λ moves it by
/// `min(λ, r_i)` and lowers ⟨w, ·⟩ by `|w_i| min(λ, r_i)`; for ℓ2 the minimizer moves it by
/// `min(λ|w_i|, r_i)`, lowering ⟨w, ·⟩ by `w_i² min(λ, r_i/|w_i|)`. Either way the total is
/// `h(λ) = Σ v_i min(λ, k_i)`, increasing and piecewise linear with breakpoints `k_i`: sorted
/// once, `h` at every breakpoint is a cumulative sum, and the segment where `h` reaches `c`
/// gives λ in closed form.
pub(super) fn project_to_hyperplane(
    norm: Norm,
    t: &Tensor,
    w: &Tensor,
    b: &Tensor,
    lo: &Tensor,
    hi: &Tensor,
) -> Result<Tensor, tch::TchError> {
    let rows = t.size().first().copied().unwrap_or(0);
    let dims = t.size().get(1).copied().unwrap_or(0);
    let options = (Kind::Float, t.device());
    let sum1 = |x: &Tensor| x.f_sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
    let excess = sum1(&w.f_mul(t)?)?.f_sub(&b.f_view([rows, 1])?)?;
    // Orient w so that ⟨w, ·⟩ must decrease by c ≥ 0.
    let orientation = excess
        .f_ge(0.0)?
        .f_to_kind(Kind::Float)?
        .f_mul_scalar(2.0)?
        .f_sub_scalar(1.0)?;
    let w = w.f_mul(&orientation)?;
    let c = excess.f_abs()?;
    let magnitude = w.f_abs()?;
    let active = magnitude.f_gt(0.0)?;
    let room = t
        .f_sub(lo)?
        .f_where_self(&w.f_gt(0.0)?, &hi.f_sub(t)?)?
        .f_clamp_min(0.0)?;
    let infinity = Tensor::f_full([1], f64::INFINITY, options)?;
    let (weight, breakpoint) = match norm {
        Norm::Linf => (magnitude.shallow_clone(), room.shallow_clone()),
        Norm::L2 => (
            magnitude.f_square()?,
            room.f_div(&magnitude)?.f_where_self(&active, &infinity)?,
        ),
    };
    let (sorted, order) = breakpoint.f_sort(1, false)?;
    let sorted_weight = weight.f_gather(1, &order, false)?;
    let zero = Tensor::f_zeros([1], options)?;
    // Σ_{j≤k} v_j k_j (an inactive coordinate's v_j = 0 contributes nothing, even at k_j = ∞).
    let saturated = sorted_weight
        .f_mul(&sorted)?
        .f_where_self(&sorted_weight.f_gt(0.0)?, &zero)?
        .f_cumsum(1, Kind::Float)?;
    // Σ_{j>k} v_j, summed from the end so that it is exactly 0 past the last active coordinate.
    let from_end = sorted_weight
        .f_flip([1i64].as_slice())?
        .f_cumsum(1, Kind::Float)?
        .f_flip([1i64].as_slice())?;
    let after = Tensor::f_cat(
        &[
            from_end.f_narrow(1, 1, dims - 1)?,
            Tensor::f_zeros([rows, 1], options)?,
        ],
        1,
    )?;
    let at_breakpoints = saturated.f_add(
        &sorted
            .f_mul(&after)?
            .f_where_self(&after.f_gt(0.0)?, &zero)?,
    )?;
    // The first breakpoint where h reaches c; `dims` when even the box corner does not.
    let segment =
        at_breakpoints
            .f_lt_tensor(&c)?
            .f_sum_dim_intlist([1i64].as_slice(), true, Kind::Int64)?;
    let reachable = segment.f_lt(dims)?;
    let before_saturated = Tensor::f_cat(&[Tensor::f_zeros([rows, 1], options)?, saturated], 1)?
        .f_gather(1, &segment, false)?;
    let before_weight =
        Tensor::f_cat(&[from_end.f_narrow(1, 0, 1)?, after], 1)?.f_gather(1, &segment, false)?;
    let lambda = c
        .f_sub(&before_saturated)?
        .f_div(&before_weight.f_clamp_min(f64::MIN_POSITIVE)?)?
        .f_clamp_min(0.0)?
        .f_where_self(&reachable, &infinity)?;
    let size = match norm {
        Norm::Linf => lambda.f_minimum(&room)?,
        Norm::L2 => lambda
            .f_mul(&magnitude)?
            .f_where_self(&active, &zero)?
            .f_minimum(&room)?,
    };
    size.f_mul(&w.f_sign()?.f_neg()?)?
        .f_where_self(&active, &zero)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn rows_inner(a: &Tensor, b: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(
            &a.f_mul(b)
                .unwrap()
                .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Double)
                .unwrap(),
        )
        .unwrap()
    }

    /// Feasible hyperplanes are reached inside the box; far from the box edges the result is
    /// the closed form (ℓ2: c·w/‖w‖², ℓ∞: c·sign(w)/‖w‖₁); unreachable ones give the corner;
    /// the ℓp size is no larger than that of other feasible points.
    #[test]
    fn projections_reach_the_hyperplane_inside_the_box() -> anyhow::Result<()> {
        tch::manual_seed(11);
        let (r, d) = (64, 50);
        let options = (Kind::Float, Device::Cpu);
        let t = Tensor::f_rand([r, d], options)?
            .f_mul_scalar(0.8)?
            .f_add_scalar(0.1)?;
        let w = Tensor::f_randn([r, d], options)?;
        // Some exact zeros in w.
        let _ = w.f_narrow(1, 0, 3)?.f_zero_()?;
        let (lo, hi) = (
            Tensor::f_zeros([r, d], options)?,
            Tensor::f_ones([r, d], options)?,
        );
        let wt = Tensor::from_slice(&rows_inner(&w, &t)).f_to_kind(Kind::Float)?;
        // Small moves (box inactive), larger ones, and some beyond reach.
        // |shift| ≥ its row's scale: 0.01 (box inactive), 0.3 and 1 (reachable), 1000 (not).
        let normal = Tensor::f_randn([r], options)?;
        let shift = normal
            .f_sign()?
            .f_mul(&normal.f_abs()?.f_add_scalar(1.0)?)?
            .f_mul(&Tensor::from_slice(&[0.01f32, 0.3, 1.0, 1000.0]).f_repeat([r / 4])?)?;
        let b = wt.f_add(&shift)?;
        for norm in [Norm::Linf, Norm::L2] {
            let delta = project_to_hyperplane(norm, &t, &w, &b, &lo, &hi)?;
            let moved = t.f_add(&delta)?;
            assert!(f64::try_from(moved.f_min()?)? >= -1e-6);
            assert!(f64::try_from(moved.f_max()?)? <= 1.0 + 1e-6);
            let reached = rows_inner(&w, &moved);
            let goal = Vec::<f64>::try_from(&b.f_to_kind(Kind::Double)?)?;
            let scale = Vec::<f64>::try_from(&shift.f_to_kind(Kind::Double)?)?;
            let corner = lo.f_where_self(&w.f_gt(0.0)?, &hi)?;
            for i in 0..r as usize {
                let reachable = scale[i].abs() < 100.0;
                if reachable {
                    assert!(
                        (reached[i] - goal[i]).abs() < 1e-3 * (1.0 + goal[i].abs()),
                        "{norm:?} row {i}: {} vs {}",
                        reached[i],
                        goal[i]
                    );
                }
            }
            // Small moves: the closed forms.
            let row = delta.get(0);
            let (w0, c0) = (w.get(0), scale[0]);
            let expected = match norm {
                Norm::L2 => {
                    w0.f_mul_scalar(c0 / f64::try_from(w0.f_square()?.f_sum(Kind::Float)?)?)?
                }
                Norm::Linf => w0
                    .f_sign()?
                    .f_mul_scalar(c0 / f64::try_from(w0.f_abs()?.f_sum(Kind::Float)?)?)?,
            };
            assert!(
                f64::try_from(row.f_sub(&expected)?.f_abs()?.f_max()?)? < 1e-6,
                "{norm:?}"
            );
            // Unreachable rows: the corner that moves ⟨w, ·⟩ towards b (here b above: upper
            // corner along w) — rows 3, 7, … have shift ≈ ±1000.
            for i in (3..r).step_by(4) {
                let up = scale[i as usize] > 0.0;
                let corner_i = if up {
                    hi.get(i).f_where_self(&w.get(i).f_gt(0.0)?, &lo.get(i))?
                } else {
                    corner.get(i)
                };
                let active = w.get(i).f_ne(0.0)?;
                let expected = corner_i.f_where_self(&active, &t.get(i))?;
                assert!(
                    f64::try_from(moved.get(i).f_sub(&expected)?.f_abs()?.f_max()?)? < 1e-6,
                    "{norm:?} corner row {i}"
                );
            }
            // Minimality against random feasible points: t + d·s rescaled onto the plane.
            let p = match norm {
                Norm::Linf => f64::INFINITY,
                Norm::L2 => 2.0,
            };
            let size = |x: &Tensor| -> f64 {
                let v = Vec::<f64>::try_from(&x.f_to_kind(Kind::Double).unwrap()).unwrap();
                if p.is_infinite() {
                    v.iter().fold(0.0, |m, a| m.max(a.abs()))
                } else {
                    v.iter().map(|a| a * a).sum::<f64>().sqrt()
                }
            };
            for i in [1i64, 5, 9] {
                let best = size(&delta.get(i));
                for _ in 0..20 {
                    let dir = Tensor::f_randn([d], options)?;
                    let wi = w.get(i);
                    let along = f64::try_from(wi.f_mul(&dir)?.f_sum(Kind::Float)?)?;
                    let other = dir.f_mul_scalar(scale[i as usize] / along)?;
                    let point = t.get(i).f_add(&other)?;
                    let inside = f64::try_from(point.f_min()?)? >= 0.0
                        && f64::try_from(point.f_max()?)? <= 1.0;
                    if inside {
                        assert!(best <= size(&other) + 1e-5, "{norm:?} row {i}");
                    }
                }
            }
        }
        Ok(())
    }
}
