//! Shared helpers of the worker's integration tests: small synthetic data, BasicNet training,
//! attack constructors and one-line evaluation.
#![allow(dead_code)]

use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard};

use advsweep_core::{
    Attack, CellResult, Defense, EpsilonSpace, Norm, StepSize, TrainingMethod, TrainingSpec,
};
use advsweep_worker::attacks::Budget;
use advsweep_worker::data::{Dataset, synthetic};
use advsweep_worker::evaluate::{CleanPredictions, evaluate_cell};
use advsweep_worker::models::{self, Classifier};
use advsweep_worker::rng::Rng;
use advsweep_worker::train::{TrainConfig, train};
use tch::Device;

pub const EPS8: f64 = 8.0 / 255.0;

/// Holds the process-wide lock that makes a test the only user of torch's global generator.
///
/// Weight initialization, random starts and inference noise draw from torch's one generator
/// after seeding it; two tests running at once on the harness's threads would interleave
/// their draws and make each other's numbers irreproducible. (libtorch already uses every core
/// within an operation, so running these tests one at a time costs little.)
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Synthetic data (seed 7) with `train` training and `test` evaluation images, on the CPU.
pub fn data(train: usize, test: usize) -> anyhow::Result<Dataset> {
    let (train_split, test_split) = synthetic::generate(7, train, test)?;
    Dataset::from_host(train_split, test_split, "synthetic".into(), Device::Cpu)
}

pub fn training(epochs: u32) -> TrainingSpec {
    TrainingSpec {
        learning_rate: 0.03,
        eval_batch_size: 150,
        ..advsweep_core::catalogue::defaults::training(epochs, 32)
    }
}

pub fn defense(method: TrainingMethod) -> Defense {
    Defense { method }
}

/// BasicNet trained on `data` with `defense` (seeded), ready to attack.
pub fn trained(
    data: &Dataset,
    defense: &Defense,
    training: &TrainingSpec,
    seed: u64,
    space: EpsilonSpace,
) -> anyhow::Result<Box<dyn Classifier>> {
    tch::manual_seed(seed as i64);
    let model = models::build("basic", Device::Cpu)?;
    train(
        model.as_ref(),
        data,
        TrainConfig {
            training,
            defense,
            seed,
            space,
        },
        &AtomicBool::new(false),
        &mut |_| Ok(()),
    )?;
    Ok(model)
}

pub fn fgsm(norm: Norm) -> Attack {
    Attack::Fgsm {
        norm,
        random_start: false,
        step_fraction: 1.0,
        eot: 1,
    }
}

pub fn pgd(norm: Norm, steps: u32, restarts: u32) -> Attack {
    Attack::Pgd {
        norm,
        steps,
        step: StepSize::FractionOfEpsilon(2.5 / f64::from(steps.max(1))),
        random_start: true,
        restarts,
        eot: 1,
    }
}

/// Evaluates `attack` at `budget` on the whole evaluation subset.
pub fn eval(
    model: &dyn Classifier,
    data: &Dataset,
    attack: &Attack,
    budget: Budget,
    seed: u64,
) -> anyhow::Result<CellResult> {
    evaluate_cell(
        model,
        data,
        attack,
        budget,
        150,
        &mut CleanPredictions::default(),
        &mut Rng::new(seed),
        &AtomicBool::new(false),
    )
}

pub fn acc(
    model: &dyn Classifier,
    data: &Dataset,
    attack: &Attack,
    budget: Budget,
    seed: u64,
) -> anyhow::Result<f64> {
    Ok(eval(model, data, attack, budget, seed)?.accuracy)
}
