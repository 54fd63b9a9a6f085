//! APGD, Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an
//! ensemble of diverse parameter-free attacks", ICML 2020, §3): PGD with momentum and a step
//! size that adapts itself, so that no step size has to be tuned per model.
//!
//! For `steps` = N_iter iterations from a random point of the ε-sphere (clamped to the image
//! box), with step size η starting at 2ε:
//!
//! * z⁽ᵏ⁺¹⁾ = P(x⁽ᵏ⁾ + η ∇ᵏ) with ∇ᵏ the signed (ℓ∞) or ℓ2-normalized (ℓ2) gradient, and
//!   x⁽ᵏ⁺¹⁾ = P(x⁽ᵏ⁾ + α(z⁽ᵏ⁺¹⁾ − x⁽ᵏ⁾) + (1 − α)(x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾)), momentum α = 0.75 (1 in
//!   the first step), P the projection onto the ε-ball ∩ image box;
//! * at the checkpoints w_j = ⌈p_j N_iter⌉, p₀ = 0, p₁ = 0.22,
//!   p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06) (for 100 steps: 22, 41, 57, 70, 80, 87,
//!   93, 99; [`checkpoints`]), η is halved for an image when (1) the loss increased in at most
//!   a fraction ρ = 0.75 of the steps since the last checkpoint, or (2) η was not halved at the
//!   last checkpoint and the best loss has not improved since; an image whose η is halved
//!   restarts from its best point (highest loss) with that point's gradient.
//!
//! The loss is the cross-entropy or DLR ([`super::dlr`]); the targeted version (APGD-T) runs
//! one pass per target class, the classes ranked 2nd, 3rd, … by the clean scores (9 targets on
//! CIFAR-10), each with the targeted DLR loss. Restarts and targets run only on the images not
//! yet fooled, and per image the attack returns a misclassified point it found (the last one),
//! as the reference implementation (fra31/auto-attack, `autopgd_base.py`) does.
//!
//! Where the paper leaves details open we follow the reference: the random start is a point of
//! the ε-sphere (ℓ∞: `ε·t/‖t‖∞`, `t` uniform in [−1, 1]; ℓ2: `ε·t/‖t‖₂`, `t` Gaussian), the
//! checkpoint lengths are integers (`⌊0.22 N⌋`, shortened by `⌊0.03 N⌋` down to `⌊0.06 N⌋`),
//! condition (1) counts "at most" (`≤ ρ·(w_j − w_{j−1})`), and condition (2) is not applied at
//! the first checkpoint. One difference: at the first checkpoint the reference compares the
//! first step's loss with a zero-initialized slot (an index wrapping to the end of its loss
//! array); we compare it with the loss at the starting point, as the paper's condition reads.
//!
//! EOT: on a randomized model each gradient and loss is the mean over `eot` passes, and
//! "fooled" is the argmax of the mean softmax ([`super::eot::Target::query`]).
//!
//! Everything is batched over the images; the step loop has no host synchronization (the
//! checkpoint rule is computed with per-image masks).

use advsweep_core::Norm;
use tch::{Kind, Tensor};

use super::budget::{Ball, Budget, project_in};
use super::dlr::{as_float, check_classes, cross_entropy, dlr, dlr_targeted};
use super::eot::{Target, repeat_labels};
use super::norms::l2_norms;
use super::outcome::{Adversarial, at_least_one, indices, per_example, run_in_frame, within};
use crate::error::Permanent;
use crate::models::Classifier;
use crate::rng::Rng;

/// Added to norms before dividing, as the reference does.
const NORM_FLOOR: f64 = 1e-12;

/// What APGD maximizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApgdLoss {
    /// Cross-entropy of the label (APGD-CE).
    CrossEntropy,
    /// DLR (APGD-DLR).
    Dlr,
    /// Targeted DLR towards each of the `targets` classes ranked highest after the top one
    /// by the clean scores, one pass each (APGD-T; AutoAttack uses 9 on CIFAR-10).
    TargetedDlr { targets: u32 },
}

/// APGD's parameters. [`ApgdConfig::new`] gives the paper's and the reference's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApgdConfig {
    pub norm: Norm,
    pub loss: ApgdLoss,
    /// Iterations per run (N_iter; default 100).
    pub steps: u32,
    /// Runs per target (each from a fresh random start, on the images not yet fooled;
    /// default 1).
    pub restarts: u32,
    /// Gradient samples per step on a randomized model (EOT; AutoAttack's rand version: 20).
    pub eot: u32,
    /// Momentum α (0.75).
    pub momentum: f64,
    /// ρ, the fraction of loss increases below which the step size is halved (0.75).
    pub rho: f64,
}

impl ApgdConfig {
    /// The defaults: 100 steps, 1 restart, no EOT, momentum 0.75, ρ = 0.75.
    pub fn new(norm: Norm, loss: ApgdLoss) -> ApgdConfig {
        ApgdConfig {
            norm,
            loss,
            steps: 100,
            restarts: 1,
            eot: 1,
            momentum: 0.75,
            rho: 0.75,
        }
    }

    /// A short name, e.g. "apgd-ce", "apgd-dlr", "apgd-t".
    pub fn name(&self) -> &'static str {
        match self.loss {
            ApgdLoss::CrossEntropy => "apgd-ce",
            ApgdLoss::Dlr => "apgd-dlr",
            ApgdLoss::TargetedDlr { .. } => "apgd-t",
        }
    }

    /// Checks the parameters: counts at least 1, fractions in range; errors name the field.
    pub fn validate(&self) -> Result<(), Permanent> {
        let name = self.name();
        at_least_one(self.steps, "steps", name)?;
        at_least_one(self.restarts, "restarts", name)?;
        at_least_one(self.eot, "eot", name)?;
        if let ApgdLoss::TargetedDlr { targets } = self.loss {
            at_least_one(targets, "targets", name)?;
        }
        within(self.momentum, 0.0, 1.0, "momentum", name)?;
        within(self.rho, 0.0, 1.0, "rho", name)
    }
}

/// The iterations after which the step-size rule is checked (1-based), for `steps`
/// iterations: p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), in whole steps as
/// the reference counts them. For 100 steps: 22, 41, 57, 70, 80, 87, 93, 99.
pub fn checkpoints(steps: u32) -> Vec<u32> {
    let fraction = |p: f64| ((p * f64::from(steps)) as u32).max(1);
    let (mut length, shorten, shortest) = (fraction(0.22), fraction(0.03), fraction(0.06));
    let mut at = Vec::new();
    let mut next = length;
    while next <= steps {
        at.push(next);
        length = length.saturating_sub(shorten).max(shortest);
        next += length;
    }
    at
}

/// Runs APGD on `x` (`f32 [N, 3, H, W]` in [0, 1]) with labels `y` within `budget`.
pub fn apgd(
    model: &dyn Classifier,
    x: &Tensor,
    y: &Tensor,
    budget: Budget,
    cfg: &ApgdConfig,
    rng: &mut Rng,
) -> anyhow::Result<Adversarial> {
    cfg.validate()?;
    run_in_frame(model, x, y, budget, cfg.eot, rng, &mut |target, z, rng| {
        apgd_in(target, z, y, cfg, budget.epsilon, rng)
    })
}

/// APGD in the target's frame: per image the adversarial iterate found (or `z`) and whether
/// the image is fooled.
pub(super) fn apgd_in(
    target: &Target<'_>,
    z: &Tensor,
    y: &Tensor,
    cfg: &ApgdConfig,
    epsilon: f64,
    rng: &mut Rng,
) -> anyhow::Result<(Tensor, Tensor)> {
    cfg.validate()?;
    let clean = target
        .query(
            z,
            &|logits, copies| cross_entropy(logits, &repeat_labels(y, copies)?),
            false,
        )?
        .scores;
    match cfg.loss {
        ApgdLoss::CrossEntropy => {}
        ApgdLoss::Dlr => check_classes(&clean, 3, "apgd-dlr")?,
        ApgdLoss::TargetedDlr { targets } => {
            check_classes(&clean, 4, "apgd-t")?;
            let classes = clean.size().get(1).copied().unwrap_or(0);
            if i64::from(targets) > classes - 1 {
                return Err(Permanent(format!(
                    "apgd-t: targets must be at most the classes less one ({}), got {targets}",
                    classes - 1
                ))
                .into());
            }
        }
    }
    let mut fooled = clean.f_argmax(1, false)?.f_ne_tensor(y)?;
    let mut adversarial = z.f_detach_copy()?;
    if epsilon == 0.0 {
        return Ok((adversarial, fooled));
    }
    tch::manual_seed(rng.torch_seed());
    // Target ranks: none (untargeted), or 2nd, 3rd, … by the clean scores.
    let ranks: Vec<Option<i64>> = match cfg.loss {
        ApgdLoss::TargetedDlr { targets } => (2..=i64::from(targets) + 1).map(Some).collect(),
        _ => vec![None],
    };
    for rank in ranks {
        for _ in 0..cfg.restarts {
            let remaining = indices(&fooled.f_logical_not()?)?;
            if remaining.numel() == 0 {
                return Ok((adversarial, fooled));
            }
            let z_run = z.f_index_select(0, &remaining)?;
            let y_run = y.f_index_select(0, &remaining)?;
            let targets = match rank {
                None => None,
                Some(r) => Some(
                    clean
                        .f_index_select(0, &remaining)?
                        .f_argsort(1, true)?
                        .f_select(1, r - 1)?,
                ),
            };
            let (found, best) = run(target, &z_run, &y_run, targets.as_ref(), cfg, epsilon)?;
            let hit = remaining.f_masked_select(&found)?;
            let rows = indices(&found)?;
            adversarial = adversarial.f_index_copy(0, &hit, &best.f_index_select(0, &rows)?)?;
            fooled = fooled.f_index_fill(0, &hit, 1)?;
        }
    }
    Ok((adversarial, fooled))
}

/// The APGD starting point: a random point of the ε-sphere around `z` (ℓ∞: `ε·t/‖t‖∞` with
/// `t` uniform in [−1, 1]ᵈ; ℓ2: `ε·t/‖t‖₂` with `t` standard normal), clamped to the box.
fn start(target: &Target<'_>, z: &Tensor, norm: Norm, epsilon: f64) -> anyhow::Result<Tensor> {
    let size = z.size();
    let n = size.first().copied().unwrap_or(0);
    let options = (Kind::Float, z.device());
    let t = match norm {
        Norm::Linf => Tensor::f_rand(size.as_slice(), options)?
            .f_mul_scalar(2.0)?
            .f_sub_scalar(1.0)?,
        Norm::L2 => Tensor::f_randn(size.as_slice(), options)?,
    };
    let scale = match norm {
        Norm::Linf => t
            .f_abs()?
            .f_reshape([n, -1])?
            .f_amax([1i64].as_slice(), false)?,
        Norm::L2 => t
            .f_reshape([n, -1])?
            .f_norm_scalaropt_dim(2, [1i64].as_slice(), false)?,
    };
    let delta = t.f_div(&per_example(&scale.f_add_scalar(NORM_FLOOR)?, z)?)?;
    Ok(target
        .frame
        .clamp_box(&z.f_add(&delta.f_mul_scalar(epsilon)?)?)?
        .f_detach()?)
}

/// The projection onto the ε-ball ∩ image box.
fn project(ball: &Ball<'_>, point: &Tensor) -> anyhow::Result<Tensor> {
    Ok(match ball {
        Ball::Linf { lo, hi } => point.f_clamp_tensor(Some(lo), Some(hi))?,
        Ball::L2 { frame, z, epsilon } => project_in(frame, point, z, Norm::L2, *epsilon)?,
    })
}

/// The ascent direction of `grad`: its sign (ℓ∞) or `grad / (‖grad‖₂ + 10⁻¹²)` (ℓ2).
fn direction(grad: &Tensor, norm: Norm) -> Result<Tensor, tch::TchError> {
    match norm {
        Norm::Linf => grad.f_sign(),
        Norm::L2 => grad.f_div(&l2_norms(grad)?.f_add_scalar(NORM_FLOOR)?),
    }
}

/// The loss APGD maximizes, per row of `logits` (`copies` stacked copies of the batch).
fn objective(
    loss: ApgdLoss,
    logits: &Tensor,
    copies: i64,
    y: &Tensor,
    targets: Option<&Tensor>,
) -> Result<Tensor, tch::TchError> {
    let logits = as_float(logits)?;
    let labels = repeat_labels(y, copies)?;
    match (loss, targets) {
        (ApgdLoss::CrossEntropy, _) => cross_entropy(&logits, &labels),
        (ApgdLoss::TargetedDlr { .. }, Some(t)) => {
            dlr_targeted(&logits, &labels, &repeat_labels(t, copies)?)
        }
        _ => dlr(&logits, &labels),
    }
}

/// The per-image state of a run, over the images it still attacks (`[m, …]` each).
struct RunState {
    /// Where these images are in the run's batch.
    positions: Tensor,
    z: Tensor,
    y: Tensor,
    targets: Option<Tensor>,
    step: Tensor,
    z_adv: Tensor,
    previous: Tensor,
    grad: Tensor,
    best: Tensor,
    best_grad: Tensor,
    best_loss: Tensor,
    best_loss_at_check: Tensor,
    halved_at_check: Tensor,
    fooled: Tensor,
    best_adversarial: Tensor,
    /// Losses since the last checkpoint, the checkpoint's own first.
    history: Vec<Tensor>,
}

impl RunState {
    /// The state of the images at `rows` only.
    fn select(&self, rows: &Tensor) -> Result<RunState, tch::TchError> {
        let pick = |t: &Tensor| t.f_index_select(0, rows);
        Ok(RunState {
            positions: pick(&self.positions)?,
            z: pick(&self.z)?,
            y: pick(&self.y)?,
            targets: self.targets.as_ref().map(pick).transpose()?,
            step: pick(&self.step)?,
            z_adv: pick(&self.z_adv)?,
            previous: pick(&self.previous)?,
            grad: pick(&self.grad)?,
            best: pick(&self.best)?,
            best_grad: pick(&self.best_grad)?,
            best_loss: pick(&self.best_loss)?,
            best_loss_at_check: pick(&self.best_loss_at_check)?,
            halved_at_check: pick(&self.halved_at_check)?,
            fooled: pick(&self.fooled)?,
            best_adversarial: pick(&self.best_adversarial)?,
            history: self.history.iter().map(pick).collect::<Result<_, _>>()?,
        })
    }
}

/// One APGD run on the images `z` (none fooled yet): whether each was fooled at some
/// iterate, and the last misclassified iterate per image (the start where none was).
///
/// An image fooled once stays fooled, and no image's iterates depend on another's, so at each
/// checkpoint the run drops the images already fooled (one host synchronization per
/// checkpoint): the result is the same, and the remaining steps cost only what the images
/// still robust need.
fn run(
    target: &Target<'_>,
    z: &Tensor,
    y: &Tensor,
    targets: Option<&Tensor>,
    cfg: &ApgdConfig,
    epsilon: f64,
) -> anyhow::Result<(Tensor, Tensor)> {
    let n = z.size().first().copied().unwrap_or(0);
    let mut step_shape = vec![1i64; z.dim()];
    if let Some(first) = step_shape.first_mut() {
        *first = n;
    }
    let z_adv = start(target, z, cfg.norm, epsilon)?;
    let first = target.query(
        &z_adv,
        &|logits, copies| objective(cfg.loss, logits, copies, y, targets),
        true,
    )?;
    let grad = first.grad.ok_or_else(|| anyhow::anyhow!("no gradient"))?;
    let fooled = first.scores.f_argmax(1, false)?.f_ne_tensor(y)?;
    let mut s = RunState {
        positions: Tensor::f_arange(n, (Kind::Int64, z.device()))?,
        z: z.shallow_clone(),
        y: y.shallow_clone(),
        targets: targets.map(Tensor::shallow_clone),
        step: Tensor::f_full(
            step_shape.as_slice(),
            2.0 * epsilon,
            (Kind::Float, z.device()),
        )?,
        previous: z_adv.f_detach_copy()?,
        best: z_adv.f_detach_copy()?,
        best_adversarial: z_adv.f_detach_copy()?,
        best_grad: grad.f_detach_copy()?,
        best_loss: first.loss.f_detach_copy()?,
        best_loss_at_check: first.loss.f_detach_copy()?,
        // The reference starts with "halved at the last checkpoint" set, so that condition
        // (2) cannot fire at the first checkpoint.
        halved_at_check: fooled.f_ones_like()?,
        history: vec![first.loss],
        fooled,
        grad,
        z_adv,
    };
    let mut fooled_all = s.fooled.f_detach_copy()?;
    let mut adversarial_all = s.best_adversarial.f_detach_copy()?;
    let checks = checkpoints(cfg.steps);
    let mut segment_ends = checks.clone();
    if segment_ends.last() != Some(&cfg.steps) {
        segment_ends.push(cfg.steps);
    }
    let mut i = 0u32;
    let mut last_check = 0u32;
    for end in segment_ends {
        {
            let ball = Ball::new(target.frame, &s.z, cfg.norm, epsilon)?;
            while i < end {
                let momentum_from_previous = s.z_adv.f_sub(&s.previous)?;
                s.previous = s.z_adv.shallow_clone();
                let alpha = if i == 0 { 1.0 } else { cfg.momentum };
                let z1 = project(
                    &ball,
                    &s.z_adv
                        .f_add(&direction(&s.grad, cfg.norm)?.f_mul(&s.step)?)?,
                )?;
                let moved = s
                    .z_adv
                    .f_add(&z1.f_sub(&s.z_adv)?.f_mul_scalar(alpha)?)?
                    .f_add(&momentum_from_previous.f_mul_scalar(1.0 - alpha)?)?;
                s.z_adv = project(&ball, &moved)?;

                let q = target.query(
                    &s.z_adv,
                    &|logits, copies| objective(cfg.loss, logits, copies, &s.y, s.targets.as_ref()),
                    true,
                )?;
                s.grad = q.grad.ok_or_else(|| anyhow::anyhow!("no gradient"))?;
                let wrong = q.scores.f_argmax(1, false)?.f_ne_tensor(&s.y)?;
                s.fooled = s.fooled.f_logical_or(&wrong)?;
                s.best_adversarial = s
                    .z_adv
                    .f_where_self(&per_example(&wrong, &s.z)?, &s.best_adversarial)?;
                let improved = q.loss.f_gt_tensor(&s.best_loss)?;
                let improved_z = per_example(&improved, &s.z)?;
                s.best = s.z_adv.f_where_self(&improved_z, &s.best)?;
                s.best_grad = s.grad.f_where_self(&improved_z, &s.best_grad)?;
                s.best_loss = q.loss.f_where_self(&improved, &s.best_loss)?;
                s.history.push(q.loss);
                i += 1;
            }
        }
        if checks.contains(&end) {
            let window = (end - last_check) as usize;
            last_check = end;
            let recent = &s.history[s.history.len() - window - 1..];
            let later = Tensor::f_stack(&recent[1..], 0)?;
            let earlier = Tensor::f_stack(&recent[..window], 0)?;
            let increases = later.f_gt_tensor(&earlier)?.f_sum_dim_intlist(
                [0i64].as_slice(),
                false,
                Kind::Float,
            )?;
            let oscillating = increases.f_le(window as f64 * cfg.rho)?;
            let stalled = s
                .halved_at_check
                .f_logical_not()?
                .f_logical_and(&s.best_loss_at_check.f_ge_tensor(&s.best_loss)?)?;
            let halve = oscillating.f_logical_or(&stalled)?;
            let halve_z = per_example(&halve, &s.z)?;
            s.step = s.step.f_div_scalar(2.0)?.f_where_self(&halve_z, &s.step)?;
            s.z_adv = s.best.f_where_self(&halve_z, &s.z_adv)?;
            s.grad = s.best_grad.f_where_self(&halve_z, &s.grad)?;
            s.halved_at_check = halve;
            s.best_loss_at_check = s.best_loss.f_detach_copy()?;
            let last = s
                .history
                .pop()
                .ok_or_else(|| anyhow::anyhow!("no loss history"))?;
            s.history = vec![last];
        }
        fooled_all = fooled_all.f_index_copy(0, &s.positions, &s.fooled)?;
        adversarial_all = adversarial_all.f_index_copy(0, &s.positions, &s.best_adversarial)?;
        if i < cfg.steps {
            let keep = indices(&s.fooled.f_logical_not()?)?;
            let kept = keep.numel();
            if kept == 0 {
                break;
            }
            if kept < s.fooled.numel() {
                s = s.select(&keep)?;
            }
        }
    }
    Ok((fooled_all, adversarial_all))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::norms::perturbation_norms;
    use crate::attacks::testing::inputs;
    use crate::models::basic::BasicNet;
    use tch::Device;

    #[test]
    fn checkpoints_follow_the_paper() {
        assert_eq!(checkpoints(100), [22, 41, 57, 70, 80, 87, 93, 99]);
        // Fractions of the paper: 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99.
        assert_eq!(checkpoints(1000), [220, 410, 570, 700, 800, 870, 930, 990]);
        assert_eq!(checkpoints(10), [2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(checkpoints(1), [1]);
    }

    #[test]
    fn bad_parameters_are_permanent_errors() -> anyhow::Result<()> {
        let model = BasicNet::new(Device::Cpu)?;
        let (x, y) = inputs(2)?;
        let base = ApgdConfig::new(Norm::Linf, ApgdLoss::CrossEntropy);
        let bad = [
            ApgdConfig { steps: 0, ..base },
            ApgdConfig {
                restarts: 0,
                ..base
            },
            ApgdConfig {
                rho: f64::NAN,
                ..base
            },
            ApgdConfig {
                loss: ApgdLoss::TargetedDlr { targets: 10 },
                ..base
            },
            ApgdConfig {
                loss: ApgdLoss::TargetedDlr { targets: 0 },
                ..base
            },
        ];
        for cfg in bad {
            let err = apgd(&model, &x, &y, Budget::pixel(0.03), &cfg, &mut Rng::new(1)).err();
            assert!(
                err.as_ref().is_some_and(|e| !crate::error::is_retryable(e)),
                "{cfg:?}: {err:?}"
            );
        }
        Ok(())
    }

    /// Results stay in the ball ∩ box in both spaces and norms, and an image reported fooled
    /// is misclassified at the returned point.
    #[test]
    fn results_stay_in_the_ball_and_fool_where_reported() -> anyhow::Result<()> {
        let model = BasicNet::new(Device::Cpu)?;
        let (x, _) = inputs(8)?;
        // Labels the model gives, so that something is left to attack.
        let y = model.forward(&x, false)?.f_argmax(1, false)?;
        for (norm, eps) in [(Norm::Linf, 8.0 / 255.0), (Norm::L2, 0.5)] {
            for space in [
                advsweep_core::EpsilonSpace::Pixel,
                advsweep_core::EpsilonSpace::Normalized,
            ] {
                for loss in [
                    ApgdLoss::CrossEntropy,
                    ApgdLoss::Dlr,
                    ApgdLoss::TargetedDlr { targets: 3 },
                ] {
                    let cfg = ApgdConfig {
                        steps: 12,
                        ..ApgdConfig::new(norm, loss)
                    };
                    let budget = Budget::new(eps, space);
                    let out = apgd(&model, &x, &y, budget, &cfg, &mut Rng::new(3))?;
                    let (lo, hi) = (
                        f64::try_from(out.images.f_min()?)?,
                        f64::try_from(out.images.f_max()?)?,
                    );
                    assert!(lo >= 0.0 && hi <= 1.0);
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
                    assert!(wrong.f_equal(&out.fooled)?, "{norm:?} {space:?} {loss:?}");
                }
            }
        }
        let _ = perturbation_norms;
        Ok(())
    }
}
