//! Calibration of the synthetic data set and throughput numbers (ignored by default: about a
//! minute of CPU). Run with
//! `cargo test -p advsweep-worker --release --test calibration -- --ignored --nocapture`.
//!
//! Trains BasicNet with the sweep defaults (5 epochs of 4 000 images, batch 128, SGD lr 0.01,
//! momentum 0.9, weight decay 5e-4) and evaluates clean, FGSM and PGD-10 ℓ∞ at ε = 8/255 on
//! 1 000 test images. Generator parameters can be overridden with SYN_* variables.

use std::sync::atomic::AtomicBool;

use advsweep_core::catalogue::{defaults, presets};
use advsweep_core::{Attack, Defense, Norm, StepSize, TrainingSpec};
use advsweep_worker::attacks::Budget;
use advsweep_worker::data::{Dataset, synthetic};
use advsweep_worker::evaluate::{CleanPredictions, evaluate_cell};
use advsweep_worker::models;
use advsweep_worker::rng::Rng;
use advsweep_worker::train::{TrainConfig, train};
use tch::Device;

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "calibration: slow, prints numbers"]
fn synthetic_calibration() -> anyhow::Result<()> {
    let d = synthetic::Params::DEFAULT;
    let params = synthetic::Params {
        signal_amplitude: env_f64("SYN_SIGNAL", d.signal_amplitude),
        distractor_amplitude: env_f64("SYN_DISTRACTOR", d.distractor_amplitude),
        noise_sigma: env_f64("SYN_NOISE", d.noise_sigma),
        brightness: env_f64("SYN_BRIGHTNESS", d.brightness),
        max_shift: env_f64("SYN_SHIFT", d.max_shift as f64) as i64,
        gratings_per_class: env_f64("SYN_GRATINGS", d.gratings_per_class as f64) as usize,
        max_frequency: env_f64("SYN_FREQ", d.max_frequency as f64) as i64,
        ..d
    };
    let epochs = env_f64("SYN_EPOCHS", 5.0) as u32;
    let lr = env_f64("SYN_LR", 0.01);
    let seeds: Vec<u64> = std::env::var("SYN_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_else(|| vec![0]);
    println!("{params:?} epochs={epochs} lr={lr}");
    let t0 = std::time::Instant::now();
    let data_seed = env_f64("SYN_DATA_SEED", 0.0) as u64;
    let (train_split, test_split) = synthetic::generate_with(data_seed, 4000, 1000, params)?;
    println!(
        "generated 5000 images in {:.2}s",
        t0.elapsed().as_secs_f64()
    );
    let data = Dataset::from_host(train_split, test_split, "synthetic".into(), Device::Cpu)?;
    let training = TrainingSpec {
        learning_rate: lr,
        ..defaults::training(epochs, 128)
    };
    let cancel = AtomicBool::new(false);
    let eps = 8.0 / 255.0;
    let fgsm = presets::FGSM;
    let pgd = presets::PGD_LINF;
    let pgd_l2 = presets::attack("pgd-l2")
        .expect("the pgd-l2 preset")
        .clone();
    // SYN_AT=1: adversarial training with PGD-ℓ∞ (7 steps) at SYN_AT_EPS/255 (default 8) on
    // SYN_AT_FRACTION of each batch, instead of standard training.
    let defense = if env_f64("SYN_AT", 0.0) > 0.0 {
        Defense {
            method: advsweep_core::TrainingMethod::Adversarial {
                attack: Attack::Pgd {
                    norm: Norm::Linf,
                    steps: 7,
                    step: StepSize::FractionOfEpsilon(0.25),
                    random_start: true,
                    restarts: 1,
                    eot: 1,
                },
                epsilon: env_f64("SYN_AT_EPS", 8.0) / 255.0,
                fraction: env_f64("SYN_AT_FRACTION", 1.0),
            },
        }
    } else {
        Defense::standard()
    };
    for seed in seeds {
        tch::manual_seed(seed as i64);
        let model = models::build("basic", Device::Cpu)?;
        train(
            model.as_ref(),
            &data,
            TrainConfig {
                training: &training,
                defense: &defense,
                seed,
                space: advsweep_core::EpsilonSpace::Pixel,
            },
            &cancel,
            &mut |m| {
                println!(
                    "seed {seed} epoch {}: loss {:.3} train {:.3} test {:.3} {:.0} img/s",
                    m.epoch, m.train_loss, m.train_accuracy, m.test_accuracy, m.images_per_second
                );
                Ok(())
            },
        )?;
        let mut rng = Rng::new(seed);
        let mut clean = CleanPredictions::default();
        for (name, attack, e) in [
            ("clean", &Attack::None, 0.0),
            ("fgsm 8/255", &fgsm, eps),
            ("pgd-linf-10 8/255", &pgd, eps),
            ("pgd-linf-10 4/255", &pgd, eps / 2.0),
            ("pgd-l2-10 0.5", &pgd_l2, 0.5),
        ] {
            let r = evaluate_cell(
                model.as_ref(),
                &data,
                attack,
                Budget::pixel(e),
                500,
                &mut clean,
                &mut rng,
                &cancel,
            )?;
            println!(
                "seed {seed} {name}: acc {:.3} success {:.3} linf {:.4} l2 {:.3} {:.0} img/s",
                r.accuracy, r.attack_success_rate, r.mean_linf, r.mean_l2, r.images_per_second
            );
        }
    }
    Ok(())
}
