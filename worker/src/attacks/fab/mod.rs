//! FAB, the Fast Adaptive Boundary attack (Croce & Hein, "Minimally distorted adversarial
//! examples with a fast adaptive boundary attack", ICML 2020), untargeted and targeted (FAB-T),
//! as AutoAttack runs them: a minimum-norm attack, so an image counts as fooled only when the
//! smallest adversarial perturbation found is within ε.
//!
//! Each iteration linearizes a decision boundary between the label `y` and another class at
//! the current point, projects onto it within the image box and moves towards it, biased
//! towards points close to the original image ([`run`]). Which boundary ([`boundary`]):
//! * FAB-T (`targets` = k > 0) runs once per target class, the classes ranked 2nd, 3rd, … by
//!   the clean scores (9 on CIFAR-10), each on the images not yet fooled, always towards the
//!   boundary with that class;
//! * untargeted FAB (`targets` = 0) linearizes the boundaries with every class each step and
//!   takes, per image, the closest one, `|f_k − f_y| / ‖∇(f_k − f_y)‖_q` over `k ≠ y` (q the
//!   dual of the attack's norm).
//!
//! Restarts, as the reference runs them: `restarts` runs (per target for FAB-T), each on the
//! images not fooled yet; the first starts at x, the others at a random point of the sphere
//! of radius ε/2 around x (clamped to the box). Defaults (the paper's and the reference's):
//! 100 steps, α_max = 0.1, η = 1.05, β = 0.9; AutoAttack's `plus` version runs the untargeted
//! FAB with 5 restarts. The projection is exact ([`projection`]).

mod boundary;
#[cfg(test)]
mod linear;
mod projection;
mod run;

use advsweep_core::Norm;
use tch::Tensor;

use super::budget::Budget;
use super::dlr::check_classes;
use super::eot::Target;
use super::outcome::{Adversarial, at_least_one, gradient_samples, indices, run_in_frame, within};
use crate::error::Permanent;
use crate::models::Classifier;
use crate::rng::Rng;
use boundary::Boundary;

/// FAB's parameters. [`FabConfig::new`] gives FAB-T's defaults, [`FabConfig::untargeted`]
/// the untargeted FAB's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FabConfig {
    pub norm: Norm,
    /// Iterations per run (100).
    pub steps: u32,
    /// 0: untargeted (each step towards the closest boundary of all classes); k > 0: FAB-T
    /// with the target classes ranked 2nd, 3rd, … by the clean scores (9).
    pub targets: u32,
    /// Runs (per target for FAB-T; runs after the first start at random points; 1).
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
    /// FAB-T's defaults: 100 steps, 9 targets, 1 restart, α_max = 0.1, η = 1.05, β = 0.9.
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

    /// The untargeted FAB with the same defaults (one restart).
    pub fn untargeted(norm: Norm) -> FabConfig {
        FabConfig {
            targets: 0,
            ..FabConfig::new(norm)
        }
    }

    /// "fab" (untargeted) or "fab-t".
    pub fn name(&self) -> &'static str {
        if self.targets == 0 { "fab" } else { "fab-t" }
    }

    /// Checks the parameters: counts at least 1 (targets: 0 is untargeted), fractions in
    /// range; errors name the field.
    pub fn validate(&self) -> Result<(), Permanent> {
        let name = self.name();
        at_least_one(self.steps, "steps", name)?;
        at_least_one(self.restarts, "restarts", name)?;
        at_least_one(self.eot, "eot", name)?;
        within(self.alpha_max, 0.0, 1.0, "alpha_max", name)?;
        within(self.eta, 0.0, f64::MAX, "eta", name)?;
        within(self.beta, 0.0, 1.0, "beta", name)
    }
}

/// Runs FAB (FAB-T when `cfg.targets` > 0) on `x` (`f32 [N, 3, H, W]` in [0, 1]) with labels
/// `y`; an image is fooled when an adversarial point within `budget` was found.
pub fn fab(
    model: &dyn Classifier,
    x: &Tensor,
    y: &Tensor,
    budget: Budget,
    cfg: &FabConfig,
    rng: &mut Rng,
) -> anyhow::Result<Adversarial> {
    cfg.validate()?;
    let samples = gradient_samples(model, cfg.eot);
    run_in_frame(model, x, y, budget, cfg.eot, rng, &mut |target, z, rng| {
        fab_in(target, z, y, cfg, budget.epsilon, samples, rng)
    })
}

/// FAB in the target's frame. `samples` is the target's gradient samples per step (its EOT:
/// 1 for a deterministic model), over which the untargeted FAB's per-class gradients are
/// averaged.
pub(super) fn fab_in(
    target: &Target<'_>,
    z: &Tensor,
    y: &Tensor,
    cfg: &FabConfig,
    epsilon: f64,
    samples: i64,
    rng: &mut Rng,
) -> anyhow::Result<(Tensor, Tensor)> {
    cfg.validate()?;
    let name = cfg.name();
    let clean = run::scores(target, z)?;
    check_classes(&clean, 2, name)?;
    let classes = clean.size().get(1).copied().unwrap_or(0);
    if i64::from(cfg.targets) > classes - 1 {
        return Err(Permanent(format!(
            "{name}: targets must be 0 (untargeted) or at most the classes less one ({}), got {}",
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
    // The untargeted FAB is one series of restarts; FAB-T one per target rank (2nd, 3rd, …).
    let ranks: Vec<Option<i64>> = if cfg.targets == 0 {
        vec![None]
    } else {
        (2..=i64::from(cfg.targets) + 1).map(Some).collect()
    };
    for rank in ranks {
        for restart in 0..cfg.restarts {
            let remaining = indices(&fooled.f_logical_not()?)?;
            if remaining.numel() == 0 {
                return Ok((adversarial, fooled));
            }
            let z_run = z.f_index_select(0, &remaining)?;
            let y_run = y.f_index_select(0, &remaining)?;
            let boundary = match rank {
                None => Boundary::Closest { samples },
                Some(rank) => Boundary::Towards(
                    clean
                        .f_index_select(0, &remaining)?
                        .f_argsort(1, true)?
                        .f_select(1, rank - 1)?,
                ),
            };
            let (closest, distance) =
                run::run(target, &z_run, &y_run, &boundary, cfg, epsilon, restart > 0)?;
            let found = distance.f_le(epsilon)?;
            let hit = remaining.f_masked_select(&found)?;
            let rows = indices(&found)?;
            adversarial = adversarial.f_index_copy(0, &hit, &closest.f_index_select(0, &rows)?)?;
            fooled = fooled.f_index_fill(0, &hit, 1)?;
        }
    }
    Ok((adversarial, fooled))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::testing::inputs;
    use crate::models::basic::BasicNet;
    use advsweep_core::EpsilonSpace;
    use linear::Linear;
    use tch::{Device, Kind};

    #[test]
    fn bad_parameters_are_permanent_errors() -> anyhow::Result<()> {
        let model = BasicNet::new(Device::Cpu)?;
        let (x, y) = inputs(2)?;
        for base in [
            FabConfig::new(Norm::Linf),
            FabConfig::untargeted(Norm::Linf),
        ] {
            for cfg in [
                FabConfig { steps: 0, ..base },
                FabConfig {
                    targets: 10,
                    ..base
                },
                FabConfig {
                    restarts: 0,
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
        }
        let err = fab(
            &model,
            &x,
            &y,
            Budget::pixel(0.03),
            &FabConfig {
                targets: 10,
                ..FabConfig::new(Norm::Linf)
            },
            &mut Rng::new(1),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("targets") && err.contains("0 (untargeted)"),
            "{err}"
        );
        Ok(())
    }

    /// Fooled images are misclassified at the returned point, within ε and in the image box,
    /// in both spaces, for FAB and FAB-T; unfooled images come back unchanged.
    #[test]
    fn fooled_images_are_within_the_budget() -> anyhow::Result<()> {
        let model = BasicNet::new(Device::Cpu)?;
        let (x, _) = inputs(8)?;
        let y = model.forward(&x, false)?.f_argmax(1, false)?;
        for targets in [0, 3] {
            for (norm, eps) in [(Norm::Linf, 8.0 / 255.0), (Norm::L2, 0.5)] {
                for space in [EpsilonSpace::Pixel, EpsilonSpace::Normalized] {
                    let cfg = FabConfig {
                        steps: 10,
                        targets,
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
                        "{targets} {norm:?} {space:?}: {size:?}"
                    );
                    assert!(f64::try_from(out.images.f_min()?)? >= 0.0);
                    assert!(f64::try_from(out.images.f_max()?)? <= 1.0);
                    let wrong = model
                        .forward(&out.images, false)?
                        .f_argmax(1, false)?
                        .f_ne_tensor(&y)?;
                    assert!(
                        bool::try_from(wrong.f_logical_or(&out.fooled.f_logical_not()?)?.f_all()?)?,
                        "{targets} {norm:?} {space:?}"
                    );
                    // Unchanged up to the frame's round trip (normalized space).
                    let unchanged = out
                        .images
                        .f_sub(&x)?
                        .f_abs()?
                        .f_view([8, -1])?
                        .f_amax([1i64].as_slice(), false)?
                        .f_le(1e-6)?;
                    assert!(
                        bool::try_from(unchanged.f_logical_or(&out.fooled)?.f_all()?)?,
                        "{targets} {norm:?} {space:?}"
                    );
                }
            }
        }
        Ok(())
    }

    /// On a linear model the smallest adversarial perturbation of each image is known
    /// (`min_k |g_k| / ‖W_k − W_y‖_q`, the box far away): the untargeted FAB finds it within
    /// 2 % in a few steps, so it fools every image whose minimum is below ε by that margin and,
    /// being a sound attack, none whose minimum is above ε.
    #[test]
    fn untargeted_fab_finds_the_minimal_perturbation_of_a_linear_model() -> anyhow::Result<()> {
        let model = Linear::new(10, 7)?;
        let (x, y) = model.images(40, 8)?;
        for norm in [Norm::Linf, Norm::L2] {
            let minimal = model.minimal_distances(&x, &y, norm == Norm::Linf)?;
            let mut sorted = minimal.clone();
            sorted.sort_by(f64::total_cmp);
            let eps = sorted[sorted.len() / 2];
            let cfg = FabConfig {
                steps: 20,
                ..FabConfig::untargeted(norm)
            };
            let out = fab(&model, &x, &y, Budget::pixel(eps), &cfg, &mut Rng::new(3))?;
            let fooled = Vec::<bool>::try_from(&out.fooled)?;
            let (linf, l2) = crate::attacks::perturbation_norms(&out.images, &x)?;
            let size = if norm == Norm::Linf { linf } else { l2 };
            let mut decided = 0;
            for (i, &d) in minimal.iter().enumerate() {
                if d > eps {
                    assert!(!fooled[i], "{norm:?} image {i}: minimum {d} above ε {eps}");
                } else if d * 1.02 < eps {
                    assert!(fooled[i], "{norm:?} image {i}: minimum {d} below ε {eps}");
                    assert!(
                        size[i] >= d * (1.0 - 1e-4) && size[i] <= d * 1.02,
                        "{norm:?} image {i}: found {} for minimum {d}",
                        size[i]
                    );
                    decided += 1;
                }
            }
            assert!(
                decided >= 10,
                "{norm:?}: only {decided} images below ε by 2 %"
            );
            // The box stays far: the minimum is the unconstrained one.
            assert!(f64::try_from(out.images.f_min()?)? > 0.0);
            assert!(f64::try_from(out.images.f_max()?)? < 1.0);
            assert_eq!(out.images.kind(), Kind::Float);
        }
        Ok(())
    }
}
