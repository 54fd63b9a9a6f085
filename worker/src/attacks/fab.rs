//! FAB-T, the targeted Fast Adaptive Boundary attack (Croce & Hein, "Minimally distorted
//! adversarial examples with a fast adaptive boundary attack", ICML 2020), as AutoAttack runs
//! it: a minimum-norm attack, so an image counts as fooled only when the smallest adversarial
//! perturbation found is within ε.
//!
//! Each iteration linearizes the decision boundary between the label `y` and the target class
//! `t` at the current point x⁽ⁱ⁾: the hyperplane `⟨∇g, u − x⁽ⁱ⁾⟩ + g(x⁽ⁱ⁾) = 0` with
//! `g = f_t − f_y`. It projects both x⁽ⁱ⁾ and the original x onto that hyperplane ∩ the image
//! box in the ℓp norm of the attack (displacements δ⁽ⁱ⁾ and δ_orig, [`project_to_hyperplane`])
//! and moves to the convex combination
//! `x⁽ⁱ⁺¹⁾ = clip((1 − α)(x⁽ⁱ⁾ + η δ⁽ⁱ⁾) + α(x + η δ_orig))`,
//! `α = min(‖δ⁽ⁱ⁾‖ / (‖δ⁽ⁱ⁾‖ + ‖δ_orig‖), α_max)`, which biases the step towards points close
//! to x. When x⁽ⁱ⁺¹⁾ is adversarial it is recorded if it is the closest yet, and the iterate
//! steps back towards x: `x⁽ⁱ⁺¹⁾ ← x + β(x⁽ⁱ⁺¹⁾ − x)`. Defaults (the paper's and the
//! reference's): 100 steps, α_max = 0.1, η = 1.05, β = 0.9.
//!
//! FAB-T runs once per target class, the classes ranked 2nd, 3rd, … by the clean scores (9 on
//! CIFAR-10), each on the images not yet fooled. A run's first restart starts at x; further
//! restarts start at a random point of the sphere of radius ε/2 around x (clamped to the box),
//! as the reference does.
//!
//! The projection onto {u : ⟨w, u⟩ = b} ∩ box is solved exactly: with the coordinates moved
//! against `w`, the reachable change of ⟨w, ·⟩ at a given size λ of the step is piecewise
//! linear and increasing in λ with a breakpoint where each coordinate meets the box, so
//! sorting the breakpoints once and a cumulative sum give the smallest λ that reaches the
//! hyperplane (no bisection loop). When the hyperplane does not meet the box, the box corner
//! that gets closest is taken, as in the paper.

use advsweep_core::Norm;
use tch::{Kind, Tensor};

use super::budget::Budget;
use super::dlr::{as_float, check_classes};
use super::eot::{Target, repeat_labels};
use super::outcome::{Adversarial, at_least_one, indices, per_example, run_in_frame, within};
use super::space::Frame;
use crate::error::Permanent;
use crate::models::Classifier;
use crate::rng::Rng;

/// The smallest projection norm used in α (the reference's floor).
const PROJECTION_FLOOR: f64 = 1e-8;

/// FAB-T's parameters. [`FabConfig::new`] gives the defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FabConfig {
    pub norm: Norm,
    /// Iterations per run (100).
    pub steps: u32,
    /// Target classes, ranked 2nd, 3rd, … by the clean scores (9).
    pub targets: u32,
    /// Runs per target (1; runs after the first start at random points).
    pub restarts: u32,
    /// α_max, the largest weight of the original point in a step (0.1).
    pub alpha_max: f64,
    /// η, the overshoot of the projection step (1.05).
    pub eta: f64,
    /// β, the backward step towards the original point after an adversarial iterate (0.9).
    pub beta: f64,
    /// Gradient samples per step on a randomized model (EOT).
    pub eot: u32,
}

impl FabConfig {
    /// The defaults: 100 steps, 9 targets, 1 restart, α_max = 0.1, η = 1.05, β = 0.9.
    pub fn new(norm: Norm) -> FabConfig {
        FabConfig {
            norm,
            steps: 100,
            targets: 9,
            restarts: 1,
            alpha_max: 0.1,
            eta: 1.05,
            beta: 0.9,
            eot: 1,
        }
    }

    /// Checks the parameters: counts at least 1, fractions in range; errors name the field.
    pub fn validate(&self) -> Result<(), Permanent> {
        at_least_one(self.steps, "steps", "fab-t")?;
        at_least_one(self.targets, "targets", "fab-t")?;
        at_least_one(self.restarts, "restarts", "fab-t")?;
        at_least_one(self.eot, "eot", "fab-t")?;
        within(self.alpha_max, 0.0, 1.0, "alpha_max", "fab-t")?;
        within(self.eta, 0.0, f64::MAX, "eta", "fab-t")?;
        within(self.beta, 0.0, 1.0, "beta", "fab-t")
    }
}

/// Runs FAB-T on `x` (`f32 [N, 3, H, W]` in [0, 1]) with labels `y`; an image is fooled when
/// an adversarial point within `budget` was found.
pub fn fab(
    model: &dyn Classifier,
    x: &Tensor,
    y: &Tensor,
    budget: Budget,
    cfg: &FabConfig,
    rng: &mut Rng,
) -> anyhow::Result<Adversarial> {
    cfg.validate()?;
    run_in_frame(model, x, y, budget, cfg.eot, rng, &mut |target, z, rng| {
        fab_in(target, z, y, cfg, budget.epsilon, rng)
    })
}

/// FAB-T in the target's frame.
pub(super) fn fab_in(
    target: &Target<'_>,
    z: &Tensor,
    y: &Tensor,
    cfg: &FabConfig,
    epsilon: f64,
    rng: &mut Rng,
) -> anyhow::Result<(Tensor, Tensor)> {
    cfg.validate()?;
    let clean = target
        .query(z, &|logits, _| logits.f_select(1, 0), false)?
        .scores;
    check_classes(&clean, 2, "fab-t")?;
    let classes = clean.size().get(1).copied().unwrap_or(0);
    if i64::from(cfg.targets) > classes - 1 {
        return Err(Permanent(format!(
            "fab-t: targets must be at most the classes less one ({}), got {}",
            classes - 1,
            cfg.targets
        ))
        .into());
    }
    let mut fooled = clean.f_argmax(1, false)?.f_ne_tensor(y)?;
    let mut adversarial = z.f_detach_copy()?;
    if epsilon == 0.0 {
        return Ok((adversarial, fooled));
    }
    tch::manual_seed(rng.torch_seed());
    for rank in 2..=i64::from(cfg.targets) + 1 {
        for restart in 0..cfg.restarts {
            let remaining = indices(&fooled.f_logical_not()?)?;
            if remaining.numel() == 0 {
                return Ok((adversarial, fooled));
            }
            let z_run = z.f_index_select(0, &remaining)?;
            let y_run = y.f_index_select(0, &remaining)?;
            let t_run = clean
                .f_index_select(0, &remaining)?
                .f_argsort(1, true)?
                .f_select(1, rank - 1)?;
            let (closest, distance) =
                run(target, &z_run, &y_run, &t_run, cfg, epsilon, restart > 0)?;
            let found = distance.f_le(epsilon)?;
            let hit = remaining.f_masked_select(&found)?;
            let rows = indices(&found)?;
            adversarial = adversarial.f_index_copy(0, &hit, &closest.f_index_select(0, &rows)?)?;
            fooled = fooled.f_index_fill(0, &hit, 1)?;
        }
    }
    Ok((adversarial, fooled))
}

/// Per-row ℓp norm of `[N, D]` rows (`[N]`).
fn row_norms(rows: &Tensor, norm: Norm) -> Result<Tensor, tch::TchError> {
    match norm {
        Norm::Linf => rows.f_abs()?.f_amax([1i64].as_slice(), false),
        Norm::L2 => rows.f_norm_scalaropt_dim(2, [1i64].as_slice(), false),
    }
}

/// The image box of the frame as full `[N, D]` rows (lower, upper).
fn box_rows(frame: &Frame, z: &Tensor) -> Result<(Tensor, Tensor), tch::TchError> {
    let n = z.size().first().copied().unwrap_or(0);
    let (lo, hi) = match frame {
        Frame::Pixel => (z.f_zeros_like()?, z.f_ones_like()?),
        Frame::Normalized { lo, hi, .. } => {
            (z.f_zeros_like()?.f_add(lo)?, z.f_zeros_like()?.f_add(hi)?)
        }
    };
    Ok((lo.f_reshape([n, -1])?, hi.f_reshape([n, -1])?))
}

/// One FAB-T run towards `targets` on images `z` (none fooled yet): per image the closest
/// adversarial iterate (or `z`) and its distance (+∞ where none was found).
fn run(
    target: &Target<'_>,
    z: &Tensor,
    y: &Tensor,
    targets: &Tensor,
    cfg: &FabConfig,
    epsilon: f64,
    random_start: bool,
) -> anyhow::Result<(Tensor, Tensor)> {
    let size = z.size();
    let n = size.first().copied().unwrap_or(0);
    let flat = |t: &Tensor| t.f_reshape([n, -1]);
    // g = f_t − f_y: positive once the target wins over the label.
    let difference = |logits: &Tensor, copies: i64| -> Result<Tensor, tch::TchError> {
        let logits = as_float(logits)?;
        let pick = |labels: &Tensor| -> Result<Tensor, tch::TchError> {
            logits
                .f_gather(1, &repeat_labels(labels, copies)?.f_unsqueeze(1)?, false)?
                .f_squeeze_dim(1)
        };
        pick(targets)?.f_sub(&pick(y)?)
    };
    let (lo, hi) = box_rows(target.frame, z)?;
    let (lo2, hi2) = (
        Tensor::f_cat(&[&lo, &lo], 0)?,
        Tensor::f_cat(&[&hi, &hi], 0)?,
    );
    let z_rows = flat(z)?;

    let mut current = if random_start {
        let t = match cfg.norm {
            Norm::Linf => Tensor::f_rand(size.as_slice(), (Kind::Float, z.device()))?
                .f_mul_scalar(2.0)?
                .f_sub_scalar(1.0)?,
            Norm::L2 => Tensor::f_randn(size.as_slice(), (Kind::Float, z.device()))?,
        };
        let unit = t.f_div(&per_example(&row_norms(&flat(&t)?, cfg.norm)?, z)?)?;
        target
            .frame
            .clamp_box(&z.f_add(&unit.f_mul_scalar(0.5 * epsilon)?)?)?
    } else {
        z.f_detach_copy()?
    };
    let mut closest = z.f_detach_copy()?;
    let mut distance = Tensor::f_full([n], f64::INFINITY, (Kind::Float, z.device()))?;

    for _ in 0..cfg.steps {
        let q = target.query(&current, &difference, true)?;
        let grad = q.grad.ok_or_else(|| anyhow::anyhow!("no gradient"))?;
        let w = flat(&grad)?;
        let current_rows = flat(&current)?;
        // The linearized boundary ⟨w, u⟩ = b through the current point's first-order model.
        let b = w
            .f_mul(&current_rows)?
            .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?
            .f_sub(&q.loss)?;
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

        let scores = target.query(&current, &difference, false)?.scores;
        let adversarial = scores.f_argmax(1, false)?.f_ne_tensor(y)?;
        let d = row_norms(&flat(&current.f_sub(z)?)?, cfg.norm)?;
        let closer = adversarial.f_logical_and(&d.f_lt_tensor(&distance)?)?;
        closest = current.f_where_self(&per_example(&closer, z)?, &closest)?;
        distance = d.f_where_self(&closer, &distance)?;
        let back = z.f_add(&current.f_sub(z)?.f_mul_scalar(cfg.beta)?)?;
        current = back.f_where_self(&per_example(&adversarial, z)?, &current)?;
    }
    Ok((closest, distance))
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
    use crate::attacks::testing::inputs;
    use crate::models::basic::BasicNet;
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

    #[test]
    fn bad_parameters_are_permanent_errors() -> anyhow::Result<()> {
        let model = BasicNet::new(Device::Cpu)?;
        let (x, y) = inputs(2)?;
        let base = FabConfig::new(Norm::Linf);
        for cfg in [
            FabConfig { steps: 0, ..base },
            FabConfig {
                targets: 10,
                ..base
            },
            FabConfig { beta: 2.0, ..base },
        ] {
            let err = fab(&model, &x, &y, Budget::pixel(0.03), &cfg, &mut Rng::new(1)).err();
            assert!(
                err.is_some_and(|e| !crate::error::is_retryable(&e)),
                "{cfg:?}"
            );
        }
        Ok(())
    }

    /// Fooled images are misclassified at the returned point, within ε, in both spaces.
    #[test]
    fn fooled_images_are_within_the_budget() -> anyhow::Result<()> {
        let model = BasicNet::new(Device::Cpu)?;
        let (x, _) = inputs(8)?;
        let y = model.forward(&x, false)?.f_argmax(1, false)?;
        for (norm, eps) in [(Norm::Linf, 8.0 / 255.0), (Norm::L2, 0.5)] {
            for space in [
                advsweep_core::EpsilonSpace::Pixel,
                advsweep_core::EpsilonSpace::Normalized,
            ] {
                let cfg = FabConfig {
                    steps: 10,
                    targets: 3,
                    restarts: 2,
                    ..FabConfig::new(norm)
                };
                let out = fab(
                    &model,
                    &x,
                    &y,
                    Budget::new(eps, space),
                    &cfg,
                    &mut Rng::new(2),
                )?;
                let (linf, l2) = crate::attacks::perturbation_norms_in(&out.images, &x, space)?;
                let size = if norm == Norm::Linf { linf } else { l2 };
                assert!(
                    size.iter().all(|&d| d <= eps * (1.0 + 1e-5) + 1e-6),
                    "{size:?}"
                );
                let wrong = model
                    .forward(&out.images, false)?
                    .f_argmax(1, false)?
                    .f_ne_tensor(&y)?;
                // Fooled ⇒ misclassified; unfooled images are returned unchanged.
                assert!(
                    bool::try_from(wrong.f_logical_or(&out.fooled.f_logical_not()?)?.f_all()?)?,
                    "{norm:?} {space:?}"
                );
            }
        }
        Ok(())
    }
}
