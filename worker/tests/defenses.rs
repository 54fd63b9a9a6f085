//! Defenses: inference noise (with EOT), the DnCNN denoiser, adversarial and mixed-norm
//! adversarial training, each against a standard BasicNet on the same synthetic data.

mod common;

use std::sync::atomic::AtomicBool;

use advsweep_core::{Attack, DenoiserSpec, EpsilonSpace, MixStrategy, Norm, TrainingMethod};
use advsweep_worker::attacks::{Budget, perturb};
use advsweep_worker::defended::Defended;
use advsweep_worker::denoiser::{self, DenoiserTraining};
use advsweep_worker::models::Classifier;
use advsweep_worker::models::basic::BasicNet;
use advsweep_worker::rng::Rng;
use common::*;
use tch::{Device, Kind, Reduction, Tensor};

const EPS4: f64 = 4.0 / 255.0;
/// Epochs of the adversarially trained models: enough to be clear of the convergence edge
/// whatever the CPU's kernels (see `adversarial_training_beats_standard_training`).
const AT_EPOCHS: u32 = 3;

fn standard(d: &advsweep_worker::data::Dataset) -> anyhow::Result<Box<dyn Classifier>> {
    trained(
        d,
        &defense(TrainingMethod::Standard),
        &training(2),
        1,
        EpsilonSpace::Pixel,
    )
}

/// `spec`'s denoiser trained against `classifier` on `data` (batches of 32, pixel ε, seed 3).
fn train_denoiser(
    classifier: &dyn Classifier,
    data: &advsweep_worker::data::Dataset,
    spec: &DenoiserSpec,
    on_epoch: &mut dyn FnMut(u32, f64),
) -> anyhow::Result<denoiser::Denoiser> {
    denoiser::train(
        classifier,
        data,
        DenoiserTraining {
            spec,
            batch_size: 32,
            space: EpsilonSpace::Pixel,
            seed: 3,
        },
        &AtomicBool::new(false),
        on_epoch,
    )
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Inference noise draws fresh noise at every forward pass (attacks included), and PGD with
/// EOT is at least as strong against it as PGD with one sample per step.
#[test]
fn inference_noise_is_random_and_eot_attacks_it_harder() -> anyhow::Result<()> {
    let _serial = serial();
    let d = data(3000, 150)?;
    let plain = Defended::new(standard(&d)?, None, None)?;
    assert!(!plain.randomized());
    let bare_clean = acc(&plain, &d, &Attack::None, Budget::pixel(0.0), 0)?;
    let (classifier, _) = plain.into_parts();
    let err = Defended::new(Box::new(BasicNet::new(Device::Cpu)?), None, Some(-0.1)).err();
    assert!(err.is_some_and(|e| e.to_string().contains("-0.1")));
    let noisy = Defended::new(classifier, None, Some(0.2))?;
    assert!(noisy.randomized());

    let (x, _) = d.test_batch(0, 8)?;
    let (a, b) = tch::no_grad(|| -> anyhow::Result<_> {
        Ok((noisy.preprocess(&x, false)?, noisy.preprocess(&x, false)?))
    })?;
    assert!(!a.f_equal(&b)?, "two forward passes drew the same noise");
    let (lo, hi) = (f64::try_from(a.f_min()?)?, f64::try_from(a.f_max()?)?);
    assert!(
        lo >= 0.0 && hi <= 1.0,
        "noisy input outside [0, 1]: [{lo}, {hi}]"
    );
    let sd = f64::try_from(a.f_sub(&x)?.f_std(true)?)?;
    assert!(
        (0.12..0.2).contains(&sd),
        "noise std {sd} (σ = 0.2, clamped)"
    );

    let clean = acc(&noisy, &d, &Attack::None, Budget::pixel(0.0), 0)?;
    let attack = pgd(Norm::Linf, 5, 1);
    let budget = Budget::pixel(EPS8);
    let mut single = Vec::new();
    let mut eot = Vec::new();
    for seed in 0..2 {
        single.push(acc(&noisy, &d, &attack, budget, seed)?);
        eot.push(acc(&noisy, &d, &attack.with_eot(8), budget, seed)?);
    }
    println!(
        "σ = 0.2: clean {clean:.3} (no noise {bare_clean:.3}); PGD-5 8/255 one sample {single:.3?}, EOT-8 {eot:.3?}"
    );
    assert!(clean > 0.6, "{clean}");
    assert!(
        mean(&eot) <= mean(&single) + 0.02,
        "EOT {eot:?} vs one sample {single:?}"
    );
    // Same seed, same numbers: the noise is drawn from the cell's seed.
    assert_eq!(acc(&noisy, &d, &attack, budget, 0)?, single[0]);
    Ok(())
}

/// The denoiser trains (MSE on attacked inputs below the identity's) and the defended model
/// is differentiable end to end.
#[test]
fn the_denoiser_learns_and_passes_gradients() -> anyhow::Result<()> {
    let _serial = serial();
    let d = data(3000, 200)?;
    let classifier = standard(&d)?;
    let attack = fgsm(Norm::Linf);
    let eps = 16.0 / 255.0;
    let spec = DenoiserSpec {
        blocks: 2,
        channels: 16,
        attack: attack.clone(),
        epsilon: eps,
        epochs: 2,
        learning_rate: 1e-3,
        pairs_per_epoch: 0,
    };
    let small = data(1500, 10)?;
    let mut epochs = Vec::new();
    let den = train_denoiser(classifier.as_ref(), &small, &spec, &mut |epoch, mse| {
        epochs.push((epoch, mse))
    })?;
    assert_eq!(epochs.len(), 2);
    let (x, y) = d.test_batch(0, 200)?;
    let x_adv = perturb(
        classifier.as_ref(),
        &x,
        &y,
        &attack,
        Budget::pixel(eps),
        false,
        &mut Rng::new(5),
    )?;
    let mse = |a: &Tensor| -> anyhow::Result<f64> {
        Ok(f64::try_from(a.f_mse_loss(&x, Reduction::Mean)?)?)
    };
    let identity = mse(&x_adv)?;
    let denoised = mse(&tch::no_grad(|| den.denoise(&x_adv, false))?)?;
    println!(
        "denoiser epochs {epochs:?}; test MSE to clean: identity {identity:.6}, denoised {denoised:.6}"
    );
    assert!(denoised < 0.97 * identity, "{denoised} vs {identity}");

    // Gradients flow from the loss through classifier and denoiser to the input.
    let bare_grad = input_gradient(classifier.as_ref(), &x_adv, &y)?;
    let defended = Defended::new(classifier, Some(den), None)?;
    let grad = input_gradient(&defended, &x_adv, &y)?;
    let size = f64::try_from(grad.f_abs()?.f_sum(Kind::Double)?)?;
    let change = f64::try_from(grad.f_sub(&bare_grad)?.f_abs()?.f_sum(Kind::Double)?)?;
    assert!(size > 0.0, "no gradient reached the input");
    assert!(
        change > 1e-3 * size,
        "the denoiser did not change the gradient"
    );
    let before = acc(&defended, &d, &fgsm(Norm::Linf), Budget::pixel(EPS8), 1)?;
    println!("defended FGSM 8/255 accuracy {before:.3}");
    Ok(())
}

/// `pairs_per_epoch` is a budget: each epoch trains on that many pairs (whole batches and one
/// short one), not on the whole training set.
#[test]
fn the_denoiser_trains_on_pairs_per_epoch_only() -> anyhow::Result<()> {
    let _serial = serial();
    let d = data(1000, 10)?;
    let classifier = standard(&d)?;
    let spec = DenoiserSpec {
        blocks: 1,
        channels: 4,
        attack: fgsm(Norm::Linf),
        epsilon: EPS4,
        epochs: 3,
        learning_rate: 1e-3,
        pairs_per_epoch: 70,
    };
    let den = train_denoiser(classifier.as_ref(), &d, &spec, &mut |_, _| {})?;
    // 70 pairs in batches of 32: 32 + 32 + 6, three batches per epoch, three epochs.
    let batches = den
        .batches_tracked()
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(batches, 9, "training batches over 3 epochs of 70 pairs");
    Ok(())
}

fn input_gradient(model: &dyn Classifier, x: &Tensor, y: &Tensor) -> anyhow::Result<Tensor> {
    tch::with_grad(|| {
        let x = x.f_detach()?.f_set_requires_grad(true)?;
        let loss = model.forward(&x, false)?.f_cross_entropy_loss::<Tensor>(
            y,
            None,
            Reduction::Sum,
            -100,
            0.0,
        )?;
        let mut g = Tensor::f_run_backward(&[&loss], &[&x], false, false)?;
        g.pop().ok_or_else(|| anyhow::anyhow!("no gradient"))
    })
}

/// PGD adversarial training at ε = 4/255 raises PGD accuracy at that ε over standard training.
#[test]
fn adversarial_training_beats_standard_training() -> anyhow::Result<()> {
    let _serial = serial();
    let d = data(3000, 300)?;
    let std_model = standard(&d)?;
    let at = trained(
        &d,
        &defense(TrainingMethod::Adversarial {
            attack: pgd(Norm::Linf, 3, 1),
            epsilon: EPS4,
            fraction: 0.5,
        }),
        // Three epochs, not two: after two the adversarial model is still on the edge of
        // converging (on an AMX Xeon it scored exactly the standard model's 78 %, on the AMD
        // machine before it scored higher); after three or four it keeps 89–92 % here.
        &training(AT_EPOCHS),
        1,
        EpsilonSpace::Pixel,
    )?;
    let robust = |m: &dyn Classifier| acc(m, &d, &pgd(Norm::Linf, 10, 1), Budget::pixel(EPS4), 1);
    let (std_acc, at_acc) = (robust(std_model.as_ref())?, robust(at.as_ref())?);
    let at_clean = acc(at.as_ref(), &d, &Attack::None, Budget::pixel(0.0), 1)?;
    println!("PGD-10 4/255: standard {std_acc:.3}, adversarial {at_acc:.3} (clean {at_clean:.3})");
    assert!(at_acc > std_acc + 0.05, "AT {at_acc} vs standard {std_acc}");
    Ok(())
}

/// Mixed ℓ∞ + ℓ2 training, with either strategy, beats standard training under both attacks.
#[test]
fn mixed_norm_training_beats_standard_under_both_norms() -> anyhow::Result<()> {
    let _serial = serial();
    let d = data(3000, 300)?;
    let robust = |m: &dyn Classifier| -> anyhow::Result<(f64, f64)> {
        Ok((
            acc(m, &d, &pgd(Norm::Linf, 5, 1), Budget::pixel(EPS4), 1)?,
            acc(m, &d, &pgd(Norm::L2, 5, 1), Budget::pixel(0.5), 1)?,
        ))
    };
    let (std_linf, std_l2) = robust(standard(&d)?.as_ref())?;
    for (strategy, fraction) in [
        (MixStrategy::BothPerBatch, 0.25),
        (MixStrategy::WorstPerExample, 0.5),
    ] {
        let method = TrainingMethod::Mixed {
            linf: pgd(Norm::Linf, 3, 1),
            l2: pgd(Norm::L2, 3, 1),
            epsilon_linf: EPS4,
            epsilon_l2: 0.5,
            strategy,
            fraction,
        };
        let m = trained(
            &d,
            &defense(method),
            &training(AT_EPOCHS),
            1,
            EpsilonSpace::Pixel,
        )?;
        let (linf, l2) = robust(m.as_ref())?;
        println!(
            "{strategy:?} (fraction {fraction}): PGD-5-linf 4/255 {linf:.3} (standard {std_linf:.3}), PGD-5-l2 0.5 {l2:.3} (standard {std_l2:.3})"
        );
        assert!(linf > std_linf + 0.03 && l2 > std_l2 + 0.03, "{strategy:?}");
    }
    Ok(())
}
