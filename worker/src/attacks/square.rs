//! Square Attack (Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient
//! black-box adversarial attack via random search", ECCV 2020): a score-based black-box
//! attack, random search over localized square-shaped updates, using forward passes only
//! (logits, never gradients).
//!
//! It minimizes the margin loss `f_y − max_{i≠y} f_i` of the current best point; a candidate
//! replaces it when its margin is lower or it is misclassified, and an image stops once
//! fooled. Each iteration changes one window of side `s` (the same position for all images of
//! the batch, drawn uniformly among the positions that fit, as in the paper's algorithm), where
//! `s = round(√(p·h·w))` follows the piecewise-constant schedule of p, halving from
//! `p_init = 0.8` at iterations 10, 50, 200, 500, 1,000, 2,000, 4,000, 6,000 and 8,000 of a
//! 10,000-query budget ([`fraction`]; other budgets rescale the iteration as the reference's
//! `resc_schedule` does; AutoAttack's standard version runs 5,000 queries without the rescale).
//!
//! * ℓ∞: starts from vertical stripes (`x + ε·σ` with one random sign per channel and column)
//!   and sets the window, per channel, to `x ± ε` (a random sign), clipped to the box.
//! * ℓ2: starts from a grid of the paper's window pattern η (two halves of opposite sign, each
//!   a sum of concentric rectangles weighted `1/(k+1)²`), rescaled to ‖δ‖₂ = ε; an update
//!   moves the mass of a second window into the first (side `s` odd, at least 3): per channel
//!   the new window is `η·σ + δ_window/‖δ_window‖`, rescaled to the norm
//!   `√((ε² − ‖δ‖²)/c + ‖δ_{W1∪W2}‖²)` (the union's norm taken over all channels, as the
//!   reference's `lp_norm`), the second window is zeroed, and the result is rescaled to
//!   ‖δ‖₂ = ε and clipped to the box.
//!
//! Restarts run on the images not yet fooled, from fresh random initializations.
//!
//! Speed: windows are drawn on the host from our [`Rng`] (no device round trip), signs on the
//! device; the images still to fool are gathered into a compact batch every
//! [`COMPACT_EVERY`] iterations rather than every iteration (between those, a fooled image is
//! frozen by a mask), so the loop synchronizes with the device once per block.

use advsweep_core::Norm;
use tch::{Kind, Tensor};

use super::budget::{Ball, Budget};
use super::dlr::{as_float, margin};
use super::eot::Target;
use super::outcome::{Adversarial, at_least_one, indices, per_example, run_in_frame, within};
use crate::error::Permanent;
use crate::models::Classifier;
use crate::rng::Rng;

/// Iterations between two compactions of the batch to the images still to fool.
pub const COMPACT_EVERY: u32 = 16;

/// The reference's floor for divisions by norms.
const NORM_FLOOR: f64 = 1e-12;

/// Square's parameters. [`SquareConfig::new`] gives the defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SquareConfig {
    pub norm: Norm,
    /// Query budget per run (5,000).
    pub queries: u32,
    /// Initial fraction of the image a window covers (0.8).
    pub p_init: f64,
    /// Runs, each on the images not yet fooled (1).
    pub restarts: u32,
    /// Whether the schedule of p is rescaled from 10,000 queries to `queries` (true for the
    /// attack alone, as the reference; AutoAttack's standard version turns it off).
    pub rescale_schedule: bool,
}

impl SquareConfig {
    /// The defaults: 5,000 queries, p_init = 0.8, one run, rescaled schedule.
    pub fn new(norm: Norm) -> SquareConfig {
        SquareConfig {
            norm,
            queries: 5000,
            p_init: 0.8,
            restarts: 1,
            rescale_schedule: true,
        }
    }

    /// Checks the parameters: counts at least 1, fractions in range; errors name the field.
    pub fn validate(&self) -> Result<(), Permanent> {
        at_least_one(self.queries, "queries", "square")?;
        at_least_one(self.restarts, "restarts", "square")?;
        within(self.p_init, f64::MIN_POSITIVE, 1.0, "p_init", "square")
    }
}

/// The fraction p of the image a window covers at `iteration` (0-based): `p_init` halved at
/// iterations 10, 50, 200, 500, 1,000, 2,000, 4,000, 6,000 and 8,000 (in queries of a 10,000
/// budget; with `rescale`, the iteration is first mapped from `queries` onto 10,000).
pub fn fraction(p_init: f64, iteration: u32, queries: u32, rescale: bool) -> f64 {
    let it = if rescale {
        (f64::from(iteration) / f64::from(queries.max(1)) * 10_000.0) as u32
    } else {
        iteration
    };
    let halvings = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000]
        .iter()
        .filter(|&&at| it > at)
        .count();
    let divisor = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0][halvings];
    p_init / divisor
}

/// The side of the square window for fraction `p` of an `h × w` image: `round(√(p·h·w))`
/// (ties to even, as the reference's Python `round`), at least 1 (ℓ∞) or at least 3 and odd
/// (ℓ2), at most `min(h, w)`.
pub fn window_side(norm: Norm, p: f64, h: i64, w: i64) -> i64 {
    let side = (p * (h * w) as f64).sqrt().round_ties_even() as i64;
    let side = match norm {
        Norm::Linf => side.max(1),
        Norm::L2 => {
            let s = side.max(3);
            if s % 2 == 0 { s + 1 } else { s }
        }
    };
    side.min(h.min(w))
}

/// The ℓ2 window pattern of side `s` (row-major `s × s`, unit ℓ2 norm): the upper `⌊s/2⌋`
/// rows hold [`rectangles`] of that height, the lower rows the negated rectangles of the rest,
/// transposed when `transpose`.
pub fn l2_pattern(s: usize, transpose: bool) -> Vec<f32> {
    let top = s / 2;
    let upper = rectangles(top, s);
    let lower = rectangles(s - top, s);
    let mut m: Vec<f32> = upper
        .into_iter()
        .chain(lower.into_iter().map(|v| -v))
        .collect();
    normalize(&mut m);
    if transpose {
        let mut t = vec![0.0; s * s];
        for r in 0..s {
            for c in 0..s {
                t[c * s + r] = m[r * s + c];
            }
        }
        m = t;
    }
    m
}

/// Concentric rectangles on a `rows × cols` grid around its centre `(⌊rows/2⌋, ⌊cols/2⌋)`:
/// ring k (the cells at Chebyshev distance k, clipped to the grid) weighs `Σ_{j≥k} 1/(j+1)²`,
/// so the centre is heaviest; unit ℓ2 norm.
fn rectangles(rows: usize, cols: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; rows * cols];
    let (cr, cc) = (rows / 2, cols / 2);
    // As many rings as reach the farther edge from the centre.
    let rings = (rows / 2 + 1).max(cols / 2 + 1);
    for k in 0..rings {
        let weight = 1.0 / ((k + 1) * (k + 1)) as f32;
        let (r0, c0) = (cr.saturating_sub(k), cc.saturating_sub(k));
        let (r1, c1) = ((cr + k + 1).min(rows), (cc + k + 1).min(cols));
        for r in r0..r1 {
            for c in c0..c1 {
                m[r * cols + c] += weight;
            }
        }
    }
    normalize(&mut m);
    m
}

fn normalize(m: &mut [f32]) {
    let norm = m.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        m.iter_mut().for_each(|v| *v /= norm);
    }
}

/// Runs Square on `x` (`f32 [N, 3, H, W]` in [0, 1]) with labels `y` within `budget`.
pub fn square(
    model: &dyn Classifier,
    x: &Tensor,
    y: &Tensor,
    budget: Budget,
    cfg: &SquareConfig,
    rng: &mut Rng,
) -> anyhow::Result<Adversarial> {
    cfg.validate()?;
    run_in_frame(model, x, y, budget, 1, rng, &mut |target, z, rng| {
        square_in(target, z, y, cfg, budget.epsilon, rng)
    })
}

/// The margin of every image at `z` (one forward pass, no autograd).
fn margins(target: &Target<'_>, z: &Tensor, y: &Tensor) -> anyhow::Result<Tensor> {
    Ok(tch::no_grad(|| -> Result<Tensor, tch::TchError> {
        margin(&as_float(&target.logits(z)?)?, y)
    })?)
}

/// Square in the target's frame.
pub(super) fn square_in(
    target: &Target<'_>,
    z: &Tensor,
    y: &Tensor,
    cfg: &SquareConfig,
    epsilon: f64,
    rng: &mut Rng,
) -> anyhow::Result<(Tensor, Tensor)> {
    cfg.validate()?;
    let mut fooled = margins(target, z, y)?.f_le(0.0)?;
    let mut adversarial = z.f_detach_copy()?;
    if epsilon == 0.0 {
        return Ok((adversarial, fooled));
    }
    tch::manual_seed(rng.torch_seed());
    for _ in 0..cfg.restarts {
        let remaining = indices(&fooled.f_logical_not()?)?;
        if remaining.numel() == 0 {
            break;
        }
        let z_run = z.f_index_select(0, &remaining)?;
        let y_run = y.f_index_select(0, &remaining)?;
        let best = run(target, &z_run, &y_run, cfg, epsilon, rng)?;
        // Fooled as the model now classifies the result (one pass).
        let found = tch::no_grad(|| target.logits(&best))?
            .f_argmax(1, false)?
            .f_ne_tensor(&y_run)?;
        let hit = remaining.f_masked_select(&found)?;
        let rows = indices(&found)?;
        adversarial = adversarial.f_index_copy(0, &hit, &best.f_index_select(0, &rows)?)?;
        fooled = fooled.f_index_fill(0, &hit, 1)?;
    }
    Ok((adversarial, fooled))
}

/// ±1 per `[N, C, …]` of `shape`, uniformly.
fn random_signs(shape: &[i64], like: &Tensor) -> Result<Tensor, tch::TchError> {
    Tensor::f_rand(shape, (Kind::Float, like.device()))?
        .f_lt(0.5)?
        .f_to_kind(Kind::Float)?
        .f_mul_scalar(2.0)?
        .f_sub_scalar(1.0)
}

/// Per-example ℓ2 norm `[N, 1, 1, 1]`.
fn image_norms(t: &Tensor) -> Result<Tensor, tch::TchError> {
    super::norms::l2_norms(t)
}

/// Per (example, channel) ℓ2 norm over the spatial dimensions, `[N, C, 1, 1]`.
fn channel_norms(t: &Tensor) -> Result<Tensor, tch::TchError> {
    t.f_square()?
        .f_sum_dim_intlist([2i64, 3].as_slice(), true, Kind::Float)?
        .f_sqrt()
}

/// One Square run on images `z` (none fooled yet): per image its best point.
fn run(
    target: &Target<'_>,
    z: &Tensor,
    y: &Tensor,
    cfg: &SquareConfig,
    epsilon: f64,
    rng: &mut Rng,
) -> anyhow::Result<Tensor> {
    let size = z.size();
    let [n, c, h, w] = size[..] else {
        return Err(Permanent(format!("square needs images [N, C, H, W], got {size:?}")).into());
    };
    let frame = target.frame;
    // The starting point.
    let mut best = match cfg.norm {
        Norm::Linf => {
            let stripes = random_signs(&[n, c, 1, w], z)?;
            frame.clamp_box(&z.f_add(&stripes.f_mul_scalar(epsilon)?)?)?
        }
        Norm::L2 => {
            let side = (h / 5).max(1);
            let offset = (h - 5 * side) / 2;
            let delta = z.f_zeros_like()?;
            for i in 0..h / side {
                for j in 0..w / side {
                    let (top, left) = (offset + i * side, offset + j * side);
                    if top + side > h || left + side > w {
                        continue;
                    }
                    let pattern = pattern_tensor(side, rng, z)?;
                    let signs = random_signs(&[n, c, 1, 1], z)?;
                    let mut window = delta.f_narrow(2, top, side)?.f_narrow(3, left, side)?;
                    let _ = window.f_add_(&pattern.f_mul(&signs)?)?;
                }
            }
            let unit = delta.f_div(&image_norms(&delta)?.f_add_scalar(NORM_FLOOR)?)?;
            frame.clamp_box(&z.f_add(&unit.f_mul_scalar(epsilon)?)?)?
        }
    };
    let mut best_margin = margins(target, &best, y)?;
    // The loss is the margin itself (the reference's `margin` loss).
    let mut best_loss = best_margin.f_detach_copy()?;
    let ball = Ball::new(frame, z, cfg.norm, epsilon)?;
    let (ball_lo, ball_hi) = match &ball {
        Ball::Linf { lo, hi } => (Some(lo.shallow_clone()), Some(hi.shallow_clone())),
        Ball::L2 { .. } => (None, None),
    };

    let mut iteration = 0u32;
    while iteration < cfg.queries {
        // Compact to the images still to fool.
        let active_all = best_margin.f_gt(0.0)?;
        let idx = indices(&active_all)?;
        if idx.numel() == 0 {
            break;
        }
        let z_a = z.f_index_select(0, &idx)?;
        let y_a = y.f_index_select(0, &idx)?;
        let mut best_a = best.f_index_select(0, &idx)?;
        let mut margin_a = best_margin.f_index_select(0, &idx)?;
        let mut loss_a = best_loss.f_index_select(0, &idx)?;
        let lo_a = ball_lo
            .as_ref()
            .map(|t| t.f_index_select(0, &idx))
            .transpose()?;
        let hi_a = ball_hi
            .as_ref()
            .map(|t| t.f_index_select(0, &idx))
            .transpose()?;
        let m = idx.size().first().copied().unwrap_or(0);
        let block_end = (iteration + COMPACT_EVERY).min(cfg.queries);
        while iteration < block_end {
            let p = fraction(cfg.p_init, iteration, cfg.queries, cfg.rescale_schedule);
            let s = window_side(cfg.norm, p, h, w);
            let top = rng.below((h - s + 1) as u64) as i64;
            let left = rng.below((w - s + 1) as u64) as i64;
            let candidate = match cfg.norm {
                Norm::Linf => {
                    let (Some(lo), Some(hi)) = (&lo_a, &hi_a) else {
                        anyhow::bail!("the ℓ∞ ball has no bounds");
                    };
                    let cut = |t: &Tensor| -> Result<Tensor, tch::TchError> {
                        t.f_narrow(2, top, s)?.f_narrow(3, left, s)
                    };
                    let signs = random_signs(&[m, c, 1, 1], z)?;
                    let window = cut(&best_a)?
                        .f_add(&signs.f_mul_scalar(2.0 * epsilon)?)?
                        .f_clamp_tensor(Some(&cut(lo)?), Some(&cut(hi)?))?;
                    let candidate = best_a.f_detach_copy()?;
                    let _ = cut(&candidate)?.f_copy_(&window)?;
                    candidate
                }
                Norm::L2 => {
                    let top2 = rng.below((h - s + 1) as u64) as i64;
                    let left2 = rng.below((w - s + 1) as u64) as i64;
                    l2_candidate(
                        frame,
                        &z_a,
                        &best_a,
                        epsilon,
                        c,
                        s,
                        (top, left),
                        (top2, left2),
                        rng,
                    )?
                }
            };
            let candidate_margin = margins(target, &candidate, &y_a)?;
            let still = margin_a.f_gt(0.0)?;
            let lower = candidate_margin
                .f_lt_tensor(&loss_a)?
                .f_logical_and(&still)?;
            loss_a = candidate_margin.f_where_self(&lower, &loss_a)?;
            let take = lower.f_logical_or(&candidate_margin.f_le(0.0)?.f_logical_and(&still)?)?;
            margin_a = candidate_margin.f_where_self(&take, &margin_a)?;
            best_a = candidate.f_where_self(&per_example(&take, &candidate)?, &best_a)?;
            iteration += 1;
        }
        best = best.f_index_copy(0, &idx, &best_a)?;
        best_margin = best_margin.f_index_copy(0, &idx, &margin_a)?;
        best_loss = best_loss.f_index_copy(0, &idx, &loss_a)?;
    }
    Ok(best)
}

/// The pattern of side `s` as a `[1, 1, s, s]` tensor, transposed with probability ½.
fn pattern_tensor(s: i64, rng: &mut Rng, like: &Tensor) -> Result<Tensor, tch::TchError> {
    let values = l2_pattern(s as usize, rng.below(2) == 1);
    Tensor::f_from_slice(&values)?
        .f_view([1, 1, s, s])?
        .f_to_device(like.device())
}

/// The ℓ2 candidate: the mass of window 2 moved into window 1 with a fresh pattern, the
/// perturbation rescaled to norm ε and clipped to the box.
#[allow(clippy::too_many_arguments)]
fn l2_candidate(
    frame: &super::space::Frame,
    z: &Tensor,
    best: &Tensor,
    epsilon: f64,
    channels: i64,
    s: i64,
    (top, left): (i64, i64),
    (top2, left2): (i64, i64),
    rng: &mut Rng,
) -> anyhow::Result<Tensor> {
    let n = z.size().first().copied().unwrap_or(0);
    let cut = |t: &Tensor, r: i64, c: i64| -> Result<Tensor, tch::TchError> {
        t.f_narrow(2, r, s)?.f_narrow(3, c, s)
    };
    let delta = best.f_sub(z)?;
    let window = cut(&delta, top, left)?;
    let window_norms = channel_norms(&window)?;
    let image_norm = image_norms(&delta)?;
    // ‖δ‖ over the union of both windows, over all channels (the reference's `lp_norm`: one
    // norm per image; each channel's new window then gets `(ε² − ‖δ‖²)/c + ‖δ_union‖²`).
    let mask = z
        .f_zeros_like()?
        .f_narrow(0, 0, 1)?
        .f_narrow(1, 0, 1)?
        .f_detach_copy()?;
    let _ = cut(&mask, top, left)?.f_fill_(1.0)?;
    let _ = cut(&mask, top2, left2)?.f_fill_(1.0)?;
    let union_norms = image_norms(&delta.f_mul(&mask)?)?;
    let pattern = pattern_tensor(s, rng, z)?;
    let signs = random_signs(&[n, channels, 1, 1], z)?;
    let fresh = pattern
        .f_mul(&signs)?
        .f_add(&window.f_div(&window_norms.f_add_scalar(NORM_FLOOR)?)?)?;
    let budget_left = image_norm
        .f_square()?
        .f_neg()?
        .f_add_scalar(epsilon * epsilon)?
        .f_clamp_min(0.0)?
        .f_div_scalar(channels as f64)?
        .f_add(&union_norms.f_square()?)?
        .f_sqrt()?;
    let fresh = fresh
        .f_div(&channel_norms(&fresh)?.f_add_scalar(NORM_FLOOR)?)?
        .f_mul(&budget_left)?;
    let moved = delta.f_detach_copy()?;
    let _ = cut(&moved, top2, left2)?.f_zero_()?;
    let _ = cut(&moved, top, left)?.f_copy_(&fresh)?;
    let unit = moved.f_div(&image_norms(&moved)?.f_add_scalar(NORM_FLOOR)?)?;
    Ok(frame.clamp_box(&z.f_add(&unit.f_mul_scalar(epsilon)?)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::testing::inputs;
    use crate::models::basic::BasicNet;
    use tch::Device;

    #[test]
    fn the_schedule_of_p_halves_at_the_reference_iterations() {
        let p = |it, rescale| fraction(0.8, it, 10_000, rescale);
        assert_eq!(p(0, true), 0.8);
        assert_eq!(p(10, true), 0.8);
        assert_eq!(p(11, true), 0.4);
        assert_eq!(p(50, true), 0.4);
        assert_eq!(p(51, true), 0.2);
        assert_eq!(p(201, true), 0.1);
        assert_eq!(p(501, true), 0.05);
        assert_eq!(p(1001, true), 0.025);
        assert_eq!(p(2001, true), 0.0125);
        assert_eq!(p(4001, true), 0.00625);
        assert_eq!(p(6001, true), 0.003125);
        assert_eq!(p(8001, true), 0.0015625);
        assert_eq!(p(9999, true), 0.0015625);
        // 5,000 queries rescaled: iteration i counts as 2i; without the rescale as i.
        assert_eq!(fraction(0.8, 6, 5000, true), 0.4);
        assert_eq!(fraction(0.8, 6, 5000, false), 0.8);
        assert_eq!(fraction(0.8, 4999, 5000, true), 0.0015625);
        assert_eq!(fraction(0.8, 4999, 5000, false), 0.00625);
    }

    #[test]
    fn window_sides_on_cifar_images() {
        let sides = |norm| -> Vec<i64> {
            [
                0.8, 0.4, 0.2, 0.1, 0.05, 0.025, 0.0125, 0.00625, 0.003125, 0.0015625,
            ]
            .iter()
            .map(|&p| window_side(norm, p, 32, 32))
            .collect()
        };
        assert_eq!(sides(Norm::Linf), [29, 20, 14, 10, 7, 5, 4, 3, 2, 1]);
        assert_eq!(sides(Norm::L2), [29, 21, 15, 11, 7, 5, 5, 3, 3, 3]);
        assert_eq!(window_side(Norm::Linf, 1.0, 32, 32), 32);
        assert_eq!(window_side(Norm::L2, 1.0, 32, 32), 32);
    }

    /// The ℓ2 pattern: unit norm, the upper half positive and the lower negative, transposed on
    /// request; the rectangles' hand-computed values.
    #[test]
    fn the_l2_pattern_has_opposite_halves() {
        for s in [3usize, 5, 6, 7, 29] {
            let m = l2_pattern(s, false);
            let norm: f32 = m.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
            let top = s / 2;
            assert!(m[..top * s].iter().all(|&v| v > 0.0), "side {s}");
            assert!(m[top * s..].iter().all(|&v| v < 0.0), "side {s}");
            let t = l2_pattern(s, true);
            assert_eq!(t[1], m[s]);
        }
        // Rectangles of 1 × 3: centre 1 + 1/4, edges 1/4 (rings 0 and 1), normalized.
        let r = rectangles(1, 3);
        let expected = [0.25f32, 1.25, 0.25];
        let norm = expected.iter().map(|v| v * v).sum::<f32>().sqrt();
        for (a, b) in r.iter().zip(expected) {
            assert!((a - b / norm).abs() < 1e-6, "{r:?}");
        }
    }

    #[test]
    fn results_stay_in_the_ball_and_queries_zero_is_an_error() -> anyhow::Result<()> {
        let model = BasicNet::new(Device::Cpu)?;
        let (x, _) = inputs(6)?;
        let y = model.forward(&x, false)?.f_argmax(1, false)?;
        for (norm, eps) in [(Norm::Linf, 8.0 / 255.0), (Norm::L2, 0.5)] {
            for space in [
                advsweep_core::EpsilonSpace::Pixel,
                advsweep_core::EpsilonSpace::Normalized,
            ] {
                let cfg = SquareConfig {
                    queries: 40,
                    ..SquareConfig::new(norm)
                };
                let out = square(
                    &model,
                    &x,
                    &y,
                    Budget::new(eps, space),
                    &cfg,
                    &mut Rng::new(5),
                )?;
                let (linf, l2) = crate::attacks::perturbation_norms_in(&out.images, &x, space)?;
                let size = if norm == Norm::Linf { linf } else { l2 };
                assert!(
                    size.iter().all(|&d| d <= eps * (1.0 + 1e-5) + 1e-6),
                    "{size:?}"
                );
                let again = square(
                    &model,
                    &x,
                    &y,
                    Budget::new(eps, space),
                    &cfg,
                    &mut Rng::new(5),
                )?;
                assert!(
                    again.images.f_equal(&out.images)?,
                    "deterministic given the seed"
                );
            }
        }
        let cfg = SquareConfig {
            queries: 0,
            ..SquareConfig::new(Norm::Linf)
        };
        let err = square(&model, &x, &y, Budget::pixel(0.03), &cfg, &mut Rng::new(1)).err();
        assert!(err.is_some_and(|e| !crate::error::is_retryable(&e)));
        Ok(())
    }
}
