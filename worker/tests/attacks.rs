//! Attack behaviour: budgets in pixel and normalized space, random starts, restarts, EOT, and
//! the accuracy curves of a trained BasicNet on synthetic data.

mod common;

use advsweep_core::{Attack, EpsilonSpace, Norm, StepSize, TrainingMethod};
use advsweep_worker::attacks::{Budget, perturb, perturbation_norms, perturbation_norms_in};
use advsweep_worker::defended::Defended;
use advsweep_worker::models::basic::BasicNet;
use advsweep_worker::models::{CIFAR10_STD, Classifier};
use advsweep_worker::rng::Rng;
use common::*;
use tch::{Device, Kind, Reduction, Tensor};

fn inputs(n: i64) -> anyhow::Result<(Tensor, Tensor)> {
    tch::manual_seed(0);
    let x = Tensor::f_rand([n, 3, 32, 32], (Kind::Float, Device::Cpu))?;
    // Some pixels at the box edges, where clamping matters.
    let x = x.f_mul_scalar(1.2)?.f_sub_scalar(0.1)?.f_clamp(0.0, 1.0)?;
    let y = Tensor::f_randint(10, [n], (Kind::Int64, Device::Cpu))?;
    Ok((x, y))
}

fn attacks(norm: Norm) -> Vec<Attack> {
    vec![
        fgsm(norm),
        Attack::Fgsm {
            norm,
            random_start: true,
            step_fraction: 1.25,
            eot: 1,
        },
        Attack::Pgd {
            norm,
            steps: 3,
            step: StepSize::FractionOfEpsilon(0.5),
            random_start: true,
            restarts: 2,
            eot: 3,
        },
        Attack::Pgd {
            norm,
            steps: 2,
            step: StepSize::Absolute(10.0), // a huge step: projection must hold anyway
            random_start: false,
            restarts: 1,
            eot: 1,
        },
    ]
}

fn min_max(t: &Tensor) -> anyhow::Result<(f64, f64)> {
    Ok((f64::try_from(t.f_min()?)?, f64::try_from(t.f_max()?)?))
}

/// Every attack, on a deterministic and on a randomized model, stays in [0, 1] and in the
/// ε-ball of its space, does something, and leaves parameter gradients alone.
#[test]
fn perturbations_stay_within_the_budget() -> anyhow::Result<()> {
    let _serial = serial();
    let plain = BasicNet::new(Device::Cpu)?;
    let noisy = Defended::new(Box::new(BasicNet::new(Device::Cpu)?), None, Some(0.1))?;
    let models: [&dyn Classifier; 2] = [&plain, &noisy];
    let (x, y) = inputs(6)?;
    let mut rng = Rng::new(1);
    let std_min = f64::from(CIFAR10_STD.iter().copied().fold(f32::INFINITY, f32::min));
    let std_max = f64::from(CIFAR10_STD.iter().copied().fold(0.0, f32::max));
    for model in models {
        for (norm, eps) in [(Norm::Linf, 8.0 / 255.0), (Norm::L2, 0.5)] {
            for space in [EpsilonSpace::Pixel, EpsilonSpace::Normalized] {
                for attack in attacks(norm) {
                    let budget = Budget::new(eps, space);
                    let adv = perturb(model, &x, &y, &attack, budget, false, &mut rng)?;
                    let what = format!("{attack:?} {space:?} randomized={}", model.randomized());
                    let (lo, hi) = min_max(&adv)?;
                    assert!(lo >= 0.0 && hi <= 1.0, "{what}: range [{lo}, {hi}]");
                    let (linf, l2) = perturbation_norms_in(&adv, &x, space)?;
                    let size = if norm == Norm::Linf { &linf } else { &l2 };
                    assert!(
                        size.iter().all(|&d| d <= eps * (1.0 + 1e-5) + 1e-6),
                        "{what}: {size:?}"
                    );
                    assert!(size.iter().any(|&d| d > eps * 0.1), "{what} did nothing");
                    if space == EpsilonSpace::Normalized && norm == Norm::Linf {
                        // In pixels: a per-channel box of half-width ε·std_c.
                        let (pixel_linf, _) = perturbation_norms(&adv, &x)?;
                        assert!(pixel_linf.iter().all(|&d| d <= eps * std_max + 1e-6));
                        let delta = adv.f_sub(&x)?.f_abs()?;
                        for (c, s) in CIFAR10_STD.iter().enumerate() {
                            let m = f64::try_from(delta.f_select(1, c as i64)?.f_max()?)?;
                            assert!(m <= eps * f64::from(*s) + 1e-6, "{what}: channel {c} {m}");
                        }
                        assert!(pixel_linf.iter().any(|&d| d > eps * std_min * 0.5));
                    }
                }
            }
        }
    }
    for p in plain.weights().parameters() {
        assert!(!p.grad().defined(), "a parameter gradient was accumulated");
    }
    // ε = 0 and `none` return the input exactly.
    for attack in attacks(Norm::Linf).into_iter().chain(attacks(Norm::L2)) {
        let adv = perturb(&plain, &x, &y, &attack, Budget::pixel(0.0), false, &mut rng)?;
        assert!(adv.f_equal(&x)?, "{attack:?}");
    }
    let adv = perturb(
        &plain,
        &x,
        &y,
        &Attack::None,
        Budget::normalized(0.3),
        false,
        &mut rng,
    )?;
    assert!(adv.f_equal(&x)?);
    Ok(())
}

/// A random start moves the starting point (PGD with 0 steps returns it); restarts keep, per
/// example, the best of their runs, so they never do worse than the first run alone.
#[test]
fn random_starts_move_and_restarts_never_hurt() -> anyhow::Result<()> {
    let _serial = serial();
    let model = BasicNet::new(Device::Cpu)?;
    let (x, y) = inputs(40)?;
    for (norm, eps) in [(Norm::Linf, 8.0 / 255.0), (Norm::L2, 0.5)] {
        let start_only = Attack::Pgd {
            norm,
            steps: 0,
            step: StepSize::FractionOfEpsilon(0.25),
            random_start: true,
            restarts: 1,
            eot: 1,
        };
        let start = perturb(
            &model,
            &x,
            &y,
            &start_only,
            Budget::pixel(eps),
            false,
            &mut Rng::new(4),
        )?;
        let (linf, l2) = perturbation_norms(&start, &x)?;
        let size = if norm == Norm::Linf { linf } else { l2 };
        assert!(
            size.iter().all(|&d| d > 0.0 && d <= eps * (1.0 + 1e-5)),
            "{size:?}"
        );
        let again = perturb(
            &model,
            &x,
            &y,
            &start_only,
            Budget::pixel(eps),
            false,
            &mut Rng::new(5),
        )?;
        assert!(!again.f_equal(&start)?, "another seed, another start");

        let run = |restarts: u32| -> anyhow::Result<(Vec<bool>, Vec<f64>)> {
            let attack = Attack::Pgd {
                norm,
                steps: 2,
                step: StepSize::FractionOfEpsilon(0.5),
                random_start: true,
                restarts,
                eot: 1,
            };
            let adv = perturb(
                &model,
                &x,
                &y,
                &attack,
                Budget::pixel(eps),
                false,
                &mut Rng::new(9),
            )?;
            tch::no_grad(|| {
                let logits = model.forward(&adv, false)?;
                let wrong = logits.f_argmax(-1, false)?.f_ne_tensor(&y)?;
                let loss =
                    logits.f_cross_entropy_loss::<Tensor>(&y, None, Reduction::None, -100, 0.0)?;
                Ok((
                    Vec::<bool>::try_from(&wrong)?,
                    Vec::<f64>::try_from(&loss.f_to_kind(Kind::Double)?)?,
                ))
            })
        };
        let (wrong1, loss1) = run(1)?;
        let (wrong4, loss4) = run(4)?;
        let mut improved = 0;
        for i in 0..wrong1.len() {
            assert!(
                wrong4[i] >= wrong1[i],
                "{norm:?} example {i}: restarts lost a success"
            );
            if wrong4[i] == wrong1[i] {
                assert!(
                    loss4[i] >= loss1[i] - 1e-5,
                    "{norm:?} example {i}: {} < {}",
                    loss4[i],
                    loss1[i]
                );
                improved += usize::from(loss4[i] > loss1[i] + 1e-6);
            } else {
                improved += 1;
            }
        }
        assert!(improved > 0, "{norm:?}: four restarts never beat one");
    }
    Ok(())
}

/// On a trained model: accuracy falls as ε grows (ℓ∞, ℓ2, normalized ℓ∞), a standard model is
/// (almost) always fooled at ε = 32/255, PGD beats FGSM, more PGD steps do not help the
/// defender, and EOT on a deterministic model is plain PGD.
#[test]
fn a_trained_model_loses_accuracy_as_epsilon_grows() -> anyhow::Result<()> {
    let _serial = serial();
    let d = data(3000, 200)?;
    let model = trained(
        &d,
        &defense(TrainingMethod::Standard),
        &training(2),
        1,
        EpsilonSpace::Pixel,
    )?;
    let m = model.as_ref();
    let clean = acc(m, &d, &Attack::None, Budget::pixel(0.0), 1)?;
    assert!(
        clean > 0.8,
        "BasicNet did not learn the synthetic data: {clean}"
    );

    let curve = |norm: Norm, budgets: &[Budget]| -> anyhow::Result<Vec<f64>> {
        budgets
            .iter()
            .map(|&b| acc(m, &d, &pgd(norm, 10, 1), b, 2))
            .collect()
    };
    let pixel = |v: &[f64]| v.iter().map(|&e| Budget::pixel(e)).collect::<Vec<_>>();
    let linf = curve(
        Norm::Linf,
        &pixel(&[
            0.0,
            2.0 / 255.0,
            4.0 / 255.0,
            EPS8,
            16.0 / 255.0,
            32.0 / 255.0,
        ]),
    )?;
    let l2 = curve(Norm::L2, &pixel(&[0.5, 1.0, 2.0]))?;
    let normalized = curve(
        Norm::Linf,
        &[8.0, 32.0].map(|e| Budget::normalized(e / 255.0)),
    )?;
    println!(
        "clean {clean:.3}; pgd-linf {linf:.3?}; pgd-l2 {l2:.3?}; pgd-linf normalized {normalized:.3?}"
    );
    assert_eq!(linf[0], clean);
    for (name, c) in [("linf", &linf), ("l2", &l2), ("normalized", &normalized)] {
        assert!(
            c.windows(2).all(|w| w[1] <= w[0] + 0.01),
            "{name} accuracy is not monotone in epsilon: {c:?}"
        );
        assert!(c[c.len() - 1] < c[0] - 0.2, "{name}: {c:?}");
    }
    let large = linf[linf.len() - 1];
    assert!(large <= 0.05, "PGD-linf at 32/255 leaves {large} accuracy");
    // A normalized ℓ∞ ε is a pixel box of ε·std ≈ ε/4: weaker than the same pixel ε,
    // about as strong as a quarter of it.
    assert!(normalized[0] >= linf[3] && normalized[1] >= linf[5]);
    assert!(
        (normalized[1] - linf[3]).abs() <= 0.05,
        "{normalized:?} vs {linf:?}"
    );

    let fgsm8 = acc(m, &d, &fgsm(Norm::Linf), Budget::pixel(EPS8), 3)?;
    let fgsm_l2 = acc(m, &d, &fgsm(Norm::L2), Budget::pixel(1.0), 3)?;
    println!(
        "fgsm-linf 8/255 {fgsm8:.3} (pgd {:.3}); fgsm-l2 1.0 {fgsm_l2:.3} (pgd {:.3})",
        linf[3], l2[1]
    );
    assert!(linf[3] <= fgsm8 && fgsm8 < clean);
    assert!(l2[1] <= fgsm_l2 && fgsm_l2 < clean);

    let eps4 = Budget::pixel(4.0 / 255.0);
    let steps = [
        acc(m, &d, &pgd(Norm::Linf, 2, 1), eps4, 4)?,
        linf[2],
        acc(m, &d, &pgd(Norm::Linf, 20, 1), eps4, 4)?,
    ];
    println!("pgd-linf 4/255 with 2, 10, 20 steps: {steps:.3?}");
    assert!(
        steps[1] <= steps[0] + 0.01 && steps[2] <= steps[1] + 0.01,
        "{steps:?}"
    );

    // EOT on a deterministic model: the same attack, the same result.
    let plain = eval(m, &d, &pgd(Norm::Linf, 3, 1), eps4, 5)?;
    let eot = eval(m, &d, &pgd(Norm::Linf, 3, 1).with_eot(4), eps4, 5)?;
    assert_eq!(plain.accuracy, eot.accuracy);
    assert_eq!(plain.mean_linf, eot.mean_linf);
    assert_eq!(plain.mean_l2, eot.mean_l2);
    Ok(())
}
