//! White-box evasion attacks: FGSM and PGD under ℓ∞ and ℓ2 budgets, with expectation over
//! transformation (EOT) for randomized models and budgets measured in pixel or normalized
//! space.
//!
//! All attacks take inputs in [0, 1] and return inputs in [0, 1], and maximize the
//! cross-entropy of the true label. Gradients are taken with respect to the input only
//! (`Tensor::run_backward(&[loss], &[x])`, i.e. `torch.autograd.grad`), so no parameter
//! gradient is ever accumulated: the same code serves evaluation and adversarial training.
//!
//! **ε space** ([`Budget::space`]). In [`EpsilonSpace::Pixel`] the ball is around `x` in
//! [0, 1]. In [`EpsilonSpace::Normalized`] it is measured after the models' normalization
//! `z = (x − mean) / std` (CIFAR-10 statistics, [`crate::models::CIFAR10_MEAN`]/`STD`): the
//! attack runs on `z` — the model is queried at `z · std + mean`, steps and projections happen
//! in `z`, the image box becomes the per-channel box `[(0 − m_c)/s_c, (1 − m_c)/s_c]` — and the
//! result is mapped back to pixels. So an ℓ∞ budget ε is a per-channel pixel box of half-width
//! `ε · s_c`, and an ℓ2 budget bounds `‖δ / std‖₂`. Step sizes (absolute or a fraction of
//! ε) and random starts are in the same space. (Signed-gradient steps point the same way in
//! both spaces; normalized-gradient ℓ2 steps do not.)
//!
//! **EOT** ([`Attack::eot`] = k). Each gradient is the mean of k input gradients from k
//! forward passes, the model's randomness drawn afresh in each: the batch is repeated
//! (`k` copies, or as many as fit in [`EOT_PASS_IMAGES`] images per pass) and the summed loss
//! divided by k, which is exactly the average of k per-pass gradients. A model that is not
//! [`Classifier::randomized`] gives k identical gradients, so k is then taken as 1 (the same
//! result, k times cheaper). When restarts are compared on a randomized model, the loss is
//! the mean over k passes and "fooled" uses the mean of the k softmax outputs.
//!
//! Guarantees (checked by tests): the result stays in [0, 1] and within the ε-ball around `x`
//! (ℓ∞: `|δ|∞ ≤ ε` up to float rounding; ℓ2: `‖δ‖₂ ≤ ε`, both in the budget's space), and
//! ε = 0 or `none` returns `x` unchanged.
//!
//! Randomness (random starts, and a randomized model's noise) comes from torch's generator,
//! re-seeded from the caller's [`Rng`] before each use, so an attack is a deterministic function
//! of its seed on a given device type while staying fast on GPUs.
//!
//! Layout, one concept per file, so that a new attack (APGD, FAB, Square, …) is a new file
//! beside `fgsm.rs` and `pgd.rs` plus one arm in [`perturb`] and [`describe`]:
//! * `space.rs`: the ε space's frame (pixels or normalized inputs);
//! * `budget.rs`: [`Budget`] and its geometry (the ε-ball ∩ image box, projections, random
//!   starts);
//! * `norms.rs`: per-norm steps and perturbation norms;
//! * `eot.rs`: the model as an attack queries it (EOT averaging, out-of-memory fallback);
//! * `fgsm.rs`, `pgd.rs`: the attacks;
//! * this file: the dispatch from an [`Attack`] to them, and its checks.
//!
//! **AutoAttack** (issue 19), beside them, as public library functions with their own
//! configurations, each following its paper and the reference's settings:
//! * `dlr.rs`: the cross-entropy, DLR and targeted DLR losses (and the margin);
//! * `apgd.rs`: APGD-CE / APGD-DLR / APGD-T ([`apgd::apgd`], [`apgd::ApgdConfig`]);
//! * `fab/`: FAB, the minimum-norm attack, untargeted and targeted (FAB-T) ([`fab::fab`]);
//! * `square.rs`: the score-based Square Attack ([`square::square`]);
//! * `autoattack.rs`: the cascade's accounting and its `standard`/`plus`/`rand` versions
//!   ([`autoattack::autoattack`]);
//! * `outcome.rs`: what they return ([`Adversarial`]: best adversarial images and fooled
//!   flags) and their shared set-up (frame, [`eot`]'s `Target`, seeding).
//!
//! They work in the budget's frame and query the model through `Target` (EOT included), like
//! FGSM and PGD. The vocabulary's `Attack::Apgd`, `Attack::Fab` and `Attack::Square` map to
//! their configurations in [`stage`], and [`perturb`] runs them on the frame and target it
//! builds (`apgd_in`, `fab_in`, `square_in`); `Attack::AutoAttack` runs through [`cascade`],
//! which `evaluate` calls for the per-stage counts of `autoattack::CascadeResult` (and
//! [`perturb`] for the images alone).
//!
//! [`EpsilonSpace::Pixel`]: advsweep_core::EpsilonSpace::Pixel
//! [`EpsilonSpace::Normalized`]: advsweep_core::EpsilonSpace::Normalized

pub mod apgd;
pub mod autoattack;
mod budget;
pub mod checks;
pub mod dlr;
mod eot;
pub mod fab;
mod fgsm;
mod norms;
mod outcome;
mod pgd;
mod space;
pub mod square;
#[cfg(test)]
mod testing;

use advsweep_core::{ApgdLoss, Attack};
use anyhow::Context as _;
use tch::Tensor;

pub use budget::{Budget, project};
pub use eot::{EOT_PASS_IMAGES, PASS_LIMIT};
pub use norms::{perturbation_norm_sums, perturbation_norms, perturbation_norms_in};
pub use outcome::Adversarial;

use crate::error::Permanent;
use crate::models::Classifier;
use crate::rng::Rng;
use autoattack::Stage;
use eot::Target;
use fgsm::{FgsmConfig, fgsm};
use pgd::{PgdConfig, pgd};
use space::{Frame, space_name};

/// Whether [`perturb`] returns its inputs as they are: the clean attack, or a zero budget.
pub fn leaves_inputs_unchanged(attack: &Attack, budget: Budget) -> bool {
    budget.epsilon == 0.0 || attack.is_none()
}

/// Returns adversarial versions of `x` (`f32 [N, 3, H, W]` in [0, 1]) for labels `y`.
///
/// `train` is the mode the model runs in while the attack queries it (eval for evaluation
/// cells, the training mode for adversarial training).
pub fn perturb(
    model: &dyn Classifier,
    x: &Tensor,
    y: &Tensor,
    attack: &Attack,
    budget: Budget,
    train: bool,
    rng: &mut Rng,
) -> anyhow::Result<Tensor> {
    let epsilon = budget.epsilon;
    if !epsilon.is_finite() || epsilon < 0.0 {
        return Err(Permanent(format!("epsilon {epsilon} is not a non-negative number")).into());
    }
    if leaves_inputs_unchanged(attack, budget) {
        return Ok(x.f_detach()?);
    }
    check_parameters(attack, epsilon)?;
    if attack.is_cascade() {
        let n = x.size().first().copied().unwrap_or(1).max(1);
        return Ok(cascade(model, x, y, attack, budget, n, rng)?.images);
    }
    let x = x.f_detach()?;
    let randomized = model.randomized();
    if randomized {
        // The model's noise comes from torch's generator: make it a function of our seed.
        tch::manual_seed(rng.torch_seed());
    }
    let frame = Frame::new(budget.space, &x)?;
    let eot = outcome::gradient_samples(model, attack.eot());
    let target = Target::new(model, &frame, train, eot);
    let z = frame.to_z(&x)?;
    let z_adv = tch::with_grad(|| match *attack {
        Attack::None => Ok(z.shallow_clone()),
        Attack::Fgsm {
            norm,
            random_start,
            step_fraction,
            eot: _,
        } => fgsm(
            &target,
            &z,
            y,
            FgsmConfig {
                norm,
                random_start,
                step: step_fraction * epsilon,
                epsilon,
            },
            rng,
        ),
        Attack::Pgd {
            norm,
            steps,
            step,
            random_start,
            restarts,
            eot: _,
        } => pgd(
            &target,
            &z,
            y,
            PgdConfig {
                norm,
                steps,
                step: step.resolve(epsilon),
                random_start,
                restarts: restarts.max(1),
                epsilon,
            },
            rng,
        ),
        Attack::Apgd { .. } | Attack::Fab { .. } | Attack::Square { .. } => {
            let (z_adv, _fooled) = match stage(attack, false)? {
                Stage::Apgd(cfg) => apgd::apgd_in(&target, &z, y, &cfg, epsilon, rng),
                Stage::Fab(cfg) => fab::fab_in(&target, &z, y, &cfg, epsilon, eot, rng),
                Stage::Square(cfg) => square::square_in(&target, &z, y, &cfg, epsilon, rng),
            }?;
            Ok(z_adv)
        }
        Attack::AutoAttack { .. } => Err(Permanent("a cascade is run by `cascade`".into()).into()),
    })
    .with_context(|| {
        format!(
            "running {} at epsilon {epsilon} ({} space)",
            describe(attack),
            space_name(budget.space)
        )
    })?;
    frame.to_pixels(&z_adv)
}

/// The phase-1 configuration of an APGD, FAB or Square attack of the vocabulary; `in_cascade`
/// keeps Square's schedule of p unscaled, as AutoAttack's standard version does.
pub fn stage(attack: &Attack, in_cascade: bool) -> Result<Stage, Permanent> {
    Ok(match *attack {
        Attack::Apgd {
            norm,
            loss,
            targets,
            steps,
            restarts,
            eot,
        } => {
            let loss = match (targets, loss) {
                (0, ApgdLoss::Ce) => apgd::ApgdLoss::CrossEntropy,
                (0, ApgdLoss::Dlr) => apgd::ApgdLoss::Dlr,
                (targets, _) => apgd::ApgdLoss::TargetedDlr { targets },
            };
            Stage::Apgd(apgd::ApgdConfig {
                steps,
                restarts: restarts.max(1),
                eot: eot.max(1),
                ..apgd::ApgdConfig::new(norm, loss)
            })
        }
        Attack::Fab {
            norm,
            targets,
            steps,
            restarts,
            eot,
        } => Stage::Fab(fab::FabConfig {
            targets,
            steps,
            restarts: restarts.max(1),
            eot: eot.max(1),
            ..fab::FabConfig::new(norm)
        }),
        Attack::Square {
            norm,
            queries,
            p_init,
            restarts,
        } => Stage::Square(square::SquareConfig {
            queries,
            p_init,
            restarts: restarts.max(1),
            rescale_schedule: !in_cascade,
            ..square::SquareConfig::new(norm)
        }),
        _ => {
            return Err(Permanent(format!(
                "{} is not an apgd, fab or square attack",
                describe(attack)
            )));
        }
    })
}

/// Runs the cascade `attack` ([`Attack::AutoAttack`]) on `x` with labels `y`, `batch_size`
/// images per attack call: the adversarial images, the robust flags and the robust count
/// after each stage ([`autoattack::CascadeResult`]).
pub fn cascade(
    model: &dyn Classifier,
    x: &Tensor,
    y: &Tensor,
    attack: &Attack,
    budget: Budget,
    batch_size: i64,
    rng: &mut Rng,
) -> anyhow::Result<autoattack::CascadeResult> {
    let Attack::AutoAttack { stages, .. } = attack else {
        return Err(Permanent(format!("{} is not a cascade", describe(attack))).into());
    };
    let cfg = autoattack::CascadeConfig {
        stages: stages
            .iter()
            .map(|s| stage(s, true))
            .collect::<Result<_, _>>()?,
        batch_size,
    };
    autoattack::autoattack(model, x, y, budget, &cfg, rng).with_context(|| {
        format!(
            "running {} at epsilon {} ({} space)",
            describe(attack),
            budget.epsilon,
            space_name(budget.space)
        )
    })
}

/// A short human-readable name, e.g. "pgd-linf-10x1" or "pgd-l2-20x1-eot8".
pub fn describe(attack: &Attack) -> String {
    let eot = match attack.eot() {
        0 | 1 => String::new(),
        k => format!("-eot{k}"),
    };
    match attack {
        Attack::None => "none".into(),
        Attack::Fgsm {
            norm, random_start, ..
        } => format!(
            "fgsm{}-{}{eot}",
            if *random_start { "-rs" } else { "" },
            norm.as_str()
        ),
        Attack::Pgd {
            norm,
            steps,
            restarts,
            ..
        } => format!("pgd-{}-{steps}x{restarts}{eot}", norm.as_str()),
        Attack::Apgd {
            steps, restarts, ..
        }
        | Attack::Fab {
            steps, restarts, ..
        } => format!("{}-{steps}x{restarts}{eot}", attack.label()),
        Attack::Square {
            queries, restarts, ..
        } => format!("{}-{queries}x{restarts}", attack.label()),
        Attack::AutoAttack { stages, .. } => format!(
            "{}({})",
            attack.label(),
            stages.iter().map(describe).collect::<Vec<_>>().join(",")
        ),
    }
}

/// Step sizes must be finite and non-negative. The wire decoder checks this too, but
/// [`perturb`] is also called directly (bench, tests, training with hand-built specs).
fn check_parameters(attack: &Attack, epsilon: f64) -> Result<(), Permanent> {
    let step = match *attack {
        Attack::None => return Ok(()),
        Attack::Fgsm { step_fraction, .. } => step_fraction * epsilon,
        Attack::Pgd { step, .. } => step.resolve(epsilon),
        // Parameter-free: their own `validate` checks the counts and fractions.
        Attack::Apgd { .. } | Attack::Fab { .. } | Attack::Square { .. } => {
            return stage(attack, false).map(|_| ());
        }
        Attack::AutoAttack { ref stages, .. } => {
            return stages.iter().try_for_each(|s| stage(s, true).map(|_| ()));
        }
    };
    if step.is_finite() && step >= 0.0 {
        Ok(())
    } else {
        Err(Permanent(format!(
            "{}: step {step} is not a non-negative number",
            describe(attack)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::testing::inputs;
    use crate::models::basic::BasicNet;
    use advsweep_core::Norm;
    use tch::Device;

    #[test]
    fn bad_budgets_and_steps_are_permanent_errors() -> anyhow::Result<()> {
        let model = BasicNet::new(Device::Cpu)?;
        let (x, y) = inputs(2)?;
        let mut rng = Rng::new(3);
        let pgd = Attack::Pgd {
            norm: Norm::Linf,
            steps: 1,
            step: advsweep_core::StepSize::Absolute(f64::NAN),
            random_start: false,
            restarts: 1,
            eot: 1,
        };
        for (attack, eps) in [
            (&Attack::None, f64::NAN),
            (&Attack::None, -1.0),
            (&pgd, 0.1),
        ] {
            let err = perturb(&model, &x, &y, attack, Budget::pixel(eps), false, &mut rng).err();
            assert!(
                err.is_some_and(|e| !crate::error::is_retryable(&e)),
                "{attack:?} at {eps}"
            );
        }
        Ok(())
    }

    #[test]
    fn descriptions_name_eot() {
        let pgd = Attack::Pgd {
            norm: Norm::L2,
            steps: 20,
            step: advsweep_core::StepSize::FractionOfEpsilon(0.1),
            random_start: true,
            restarts: 2,
            eot: 1,
        };
        assert_eq!(describe(&pgd), "pgd-l2-20x2");
        assert_eq!(describe(&pgd.with_eot(8)), "pgd-l2-20x2-eot8");
    }

    /// The vocabulary's plus cascade runs end to end (each stage shortened to a few steps or
    /// queries to stay fast): its six stages in order, robust counts that never grow, and
    /// adversarial images within the ℓ2 ball and the box; the untargeted FAB describes itself
    /// as `fab`.
    #[test]
    fn the_plus_cascade_runs_its_stages_in_order() -> anyhow::Result<()> {
        let model = BasicNet::new(Device::Cpu)?;
        let (x, _) = inputs(6)?;
        let y = model.forward(&x, false)?.f_argmax(1, false)?;
        let Attack::AutoAttack {
            norm,
            version,
            stages,
        } = advsweep_core::catalogue::presets::cascade(
            Norm::L2,
            advsweep_core::CascadeVersion::Plus,
        )
        else {
            panic!("a cascade");
        };
        let short: Vec<Attack> = stages
            .into_iter()
            .map(|stage| match stage {
                Attack::Apgd {
                    norm,
                    loss,
                    targets,
                    restarts,
                    eot,
                    ..
                } => Attack::Apgd {
                    norm,
                    loss,
                    targets,
                    steps: 3,
                    restarts,
                    eot,
                },
                Attack::Fab {
                    norm,
                    targets,
                    restarts,
                    eot,
                    ..
                } => Attack::Fab {
                    norm,
                    targets,
                    steps: 3,
                    restarts,
                    eot,
                },
                Attack::Square {
                    norm,
                    p_init,
                    restarts,
                    ..
                } => Attack::Square {
                    norm,
                    queries: 20,
                    p_init,
                    restarts,
                },
                other => other,
            })
            .collect();
        assert_eq!(describe(&short[2]), "fab-l2-3x5");
        let attack = Attack::AutoAttack {
            norm,
            version,
            stages: short,
        };
        let eps = 0.5;
        let result = cascade(
            &model,
            &x,
            &y,
            &attack,
            Budget::pixel(eps),
            4,
            &mut Rng::new(5),
        )?;
        let names: Vec<&str> = result
            .after_stage
            .iter()
            .map(|s| s.stage.as_str())
            .collect();
        assert_eq!(
            names,
            ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
        );
        assert_eq!(result.clean_correct, 6);
        let counts: Vec<i64> = result.after_stage.iter().map(|s| s.robust).collect();
        assert!(
            counts.windows(2).all(|w| w[1] <= w[0]) && counts[0] <= 6,
            "{counts:?}"
        );
        let (_, l2) = perturbation_norms(&result.images, &x)?;
        assert!(l2.iter().all(|&d| d <= eps * (1.0 + 1e-5) + 1e-6), "{l2:?}");
        assert!(f64::try_from(result.images.f_min()?)? >= 0.0);
        assert!(f64::try_from(result.images.f_max()?)? <= 1.0);
        Ok(())
    }
}
