//! The executor's tests: whole tiny runs (training, denoiser, cells) on synthetic data, and
//! the failures a run reports as permanent or cancelled.

use super::*;
use crate::error::{is_cancelled, is_retryable};
use advsweep_core::{
    Attack, CellId, DataSource, Defense, Model, Norm, Optimizer, RunId, StepSize, TrainingSpec,
};
use std::sync::atomic::Ordering;

/// The id of the test runs.
const RUN: &str = "r-0000000000000001";
/// The ids of their cells: clean, PGD (with EOT).
const CLEAN: &str = "c-00000000000c1ea0";
const PGD: &str = "c-0000000000000f9d";
const PGD_EOT: &str = "c-0000000000f9de07";

fn id<T>(id: &str) -> T
where
    T: std::str::FromStr,
    T::Err: std::fmt::Debug,
{
    id.parse().expect("a well-formed id")
}

fn run_spec(model: &str, data: DataSource, defense: Defense) -> RunSpec {
    RunSpec {
        id: id::<RunId>(RUN),
        model_name: model.into(),
        model: Model::plain(model),
        defense_name: "d".into(),
        defense,
        training: TrainingSpec {
            epochs: 1,
            batch_size: 50,
            learning_rate: 0.05,
            optimizer: Optimizer::Sgd {
                momentum: 0.9,
                weight_decay: 5e-4,
                nesterov: true,
            },
            schedule: advsweep_core::LrSchedule::Constant,
            augment: true,
            eval_batch_size: 64,
            checkpoint_every: 1,
            precision: advsweep_core::Precision::Fp32,
        },
        data: DataSpec {
            source: data,
            eval_limit: 100,
            train_limit: 200,
            shard: None,
        },
        seed: 5,
        epsilon_space: advsweep_core::EpsilonSpace::Pixel,
    }
}

/// A one-block DnCNN trained for one epoch on FGSM pairs at 8/255.
fn small_denoiser() -> advsweep_core::DenoiserSpec {
    advsweep_core::DenoiserSpec {
        blocks: 1,
        channels: 8,
        attack: Attack::Fgsm {
            norm: Norm::Linf,
            random_start: false,
            step_fraction: 1.0,
            eot: 1,
        },
        epsilon: 8.0 / 255.0,
        epochs: 1,
        learning_rate: 1e-3,
        pairs_per_epoch: 0,
    }
}

fn synthetic() -> DataSource {
    DataSource::Synthetic {
        seed: 1,
        train_size: 1000,
        test_size: 500,
    }
}

/// Every part of the seed study at once, tiny: mixed-norm training with Adam and a
/// one-cycle schedule, a denoiser, inference noise, normalized-space ε, an EOT cell.
#[test]
fn a_run_with_every_defense_reports_epochs_then_cells() -> anyhow::Result<()> {
    let pgd = |norm| Attack::Pgd {
        norm,
        steps: 2,
        step: StepSize::FractionOfEpsilon(0.5),
        random_start: true,
        restarts: 1,
        eot: 1,
    };
    let mut run = run_spec(
        "basic",
        DataSource::Synthetic {
            seed: 2,
            train_size: 200,
            test_size: 60,
        },
        Defense {
            method: advsweep_core::TrainingMethod::Mixed {
                linf: pgd(Norm::Linf),
                l2: pgd(Norm::L2),
                epsilon_linf: 4.0 / 255.0,
                epsilon_l2: 0.25,
                strategy: advsweep_core::MixStrategy::WorstPerExample,
                fraction: 0.5,
            },
        },
    );
    let inference = InferenceDefense {
        inference_noise: Some(0.05),
        denoiser: Some(small_denoiser()),
    };
    run.training.epochs = 2;
    run.training.optimizer = Optimizer::Adam {
        beta1: 0.9,
        beta2: 0.999,
        weight_decay: 0.0,
    };
    run.training.learning_rate = 1e-3;
    run.training.schedule = advsweep_core::LrSchedule::OneCycle;
    run.epsilon_space = advsweep_core::EpsilonSpace::Normalized;
    let eps = 8.0 / 255.0;
    let cells = vec![
        CellSpec {
            id: id::<CellId>(CLEAN),
            run_id: id(RUN),
            attack_name: "none".into(),
            attack: Attack::None,
            epsilon: 0.0,
            defense_name: "everything".into(),
            inference: inference.clone(),
        },
        CellSpec {
            id: id::<CellId>(PGD_EOT),
            run_id: id(RUN),
            attack_name: "pgd".into(),
            attack: pgd(Norm::Linf).with_eot(3),
            epsilon: eps,
            defense_name: "everything".into(),
            inference,
        },
    ];
    let executor = Executor::new(Device::Cpu, 2);
    let mut events = Vec::new();
    let mut checkpoints = Vec::new();
    executor.run_catching(&run, &cells, &AtomicBool::new(false), &mut |p| {
        match p {
            Progress::Checkpoint { epoch, .. } => checkpoints.push(epoch),
            other => events.push(other),
        }
        Ok(())
    })?;
    // One resumable checkpoint after every epoch.
    let epochs: Vec<u32> = (1..=run.training.epochs).collect();
    assert_eq!(checkpoints, epochs);
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(matches!(
        events[1],
        Progress::Epoch(EpochMetrics { epoch: 2, .. })
    ));
    let Progress::Cell { result: adv, .. } = &events[3] else {
        anyhow::bail!("expected a cell, got {:?}", events[3]);
    };
    assert_eq!(adv.examples, 60);
    // Normalized ε: the pixel perturbation is at most ε · max std (≈ ε / 3.8).
    let max_std = f64::from(crate::models::CIFAR10_STD[2]);
    assert!(adv.mean_linf <= eps * max_std + 1e-6, "{}", adv.mean_linf);
    assert!(adv.mean_linf > eps * 0.1);
    Ok(())
}

#[test]
fn a_small_adversarial_run_reports_epochs_then_cells() -> anyhow::Result<()> {
    let pgd = Attack::Pgd {
        norm: Norm::Linf,
        steps: 2,
        step: StepSize::FractionOfEpsilon(0.5),
        random_start: true,
        restarts: 1,
        eot: 1,
    };
    let run = run_spec(
        "basic",
        synthetic(),
        Defense {
            method: advsweep_core::TrainingMethod::Adversarial {
                attack: pgd.clone(),
                epsilon: 4.0 / 255.0,
                fraction: 0.5,
            },
        },
    );
    let cells = vec![
        CellSpec {
            id: id::<CellId>(CLEAN),
            run_id: id(RUN),
            attack_name: "none".into(),
            attack: Attack::None,
            epsilon: 0.0,
            defense_name: String::new(),
            inference: InferenceDefense::default(),
        },
        CellSpec {
            id: id::<CellId>(PGD),
            run_id: id(RUN),
            attack_name: "pgd".into(),
            attack: pgd,
            epsilon: 8.0 / 255.0,
            defense_name: String::new(),
            inference: InferenceDefense::default(),
        },
    ];
    let executor = Executor::new(Device::Cpu, 2);
    let mut events = Vec::new();
    let mut checkpoints = Vec::new();
    executor.run_catching(&run, &cells, &AtomicBool::new(false), &mut |p| {
        match p {
            Progress::Checkpoint { epoch, .. } => checkpoints.push(epoch),
            other => events.push(other),
        }
        Ok(())
    })?;
    // One resumable checkpoint after every epoch.
    let epochs: Vec<u32> = (1..=run.training.epochs).collect();
    assert_eq!(checkpoints, epochs);
    assert_eq!(events.len(), 3);
    assert!(matches!(
        events[0],
        Progress::Epoch(EpochMetrics { epoch: 1, .. })
    ));
    let Progress::Cell { cell_id, result } = &events[1] else {
        anyhow::bail!("expected a cell, got {:?}", events[1]);
    };
    assert_eq!(cell_id, CLEAN);
    assert_eq!(result.examples, 100);
    assert_eq!(result.attack_success_rate, 0.0);
    assert_eq!(result.mean_linf, 0.0);
    let Progress::Cell { result: adv, .. } = &events[2] else {
        anyhow::bail!("expected a cell, got {:?}", events[2]);
    };
    assert!(adv.accuracy <= result.accuracy);
    assert!(adv.mean_linf <= 8.0 / 255.0 + 1e-6);
    Ok(())
}

#[test]
fn bad_parameters_and_data_are_permanent_failures() {
    let executor = Executor::new(Device::Cpu, 1);
    let cancel = AtomicBool::new(false);
    let mut ignore = |_: Progress| Ok(());

    let err = executor.run_catching(
        &run_spec("nope", synthetic(), Defense::standard()),
        &[],
        &cancel,
        &mut ignore,
    );
    let err = err
        .err()
        .unwrap_or_else(|| anyhow::anyhow!("expected an error"));
    assert!(
        format!("{err:#}").contains("unknown model `nope`"),
        "{err:#}"
    );
    assert!(!is_retryable(&err));

    let missing = DataSource::Cifar10Binary {
        path: "/definitely/not/here".into(),
    };
    let err = executor.run_catching(
        &run_spec("basic", missing, Defense::standard()),
        &[],
        &cancel,
        &mut ignore,
    );
    let err = err
        .err()
        .unwrap_or_else(|| anyhow::anyhow!("expected an error"));
    assert!(
        format!("{err:#}").contains("/definitely/not/here"),
        "{err:#}"
    );
    assert!(!is_retryable(&err));
}

#[test]
fn a_set_cancel_flag_stops_the_run() {
    let executor = Executor::new(Device::Cpu, 1);
    let cancel = AtomicBool::new(false);
    cancel.store(true, Ordering::Relaxed);
    let result = executor.run_catching(
        &run_spec("basic", synthetic(), Defense::standard()),
        &[],
        &cancel,
        &mut |_| Ok(()),
    );
    assert!(result.is_err_and(|e| is_cancelled(&e)));
}

/// The number of classes comes from the data: a CIFAR-100 run builds a 100-way model (labels
/// up to 99 would make a 10-way model's loss fail), trains and evaluates it.
#[test]
fn a_cifar100_run_builds_a_model_with_one_output_per_class() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    crate::data::cifar100::fabricate(dir.path(), 300)?;
    let mut run = run_spec(
        "basic",
        DataSource::Cifar100Binary {
            path: dir.path().display().to_string(),
        },
        Defense {
            method: advsweep_core::TrainingMethod::Standard,
        },
    );
    run.data.train_limit = 300;
    run.data.eval_limit = 100;
    let cells = vec![CellSpec {
        id: id::<CellId>(CLEAN),
        run_id: id(RUN),
        attack_name: "none".into(),
        attack: Attack::None,
        epsilon: 0.0,
        defense_name: String::new(),
        inference: InferenceDefense::default(),
    }];
    let executor = Executor::new(Device::Cpu, 1);
    let mut results = Vec::new();
    executor.run_catching(&run, &cells, &AtomicBool::new(false), &mut |p| {
        if let Progress::Cell { result, .. } = p {
            results.push(result);
        }
        Ok(())
    })?;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].examples, 100);
    Ok(())
}

/// Train once: the cells of three defenses that share a classifier (none, inference noise, a
/// denoiser in front) evaluated in one run — one training — give exactly the results each
/// defense gets in a run of its own (three trainings, as before runs were shared).
#[test]
fn defenses_sharing_a_classifier_are_evaluated_on_one_training() -> anyhow::Result<()> {
    let run = run_spec("basic", synthetic(), Defense::standard());
    let defenses = [
        ("standard", InferenceDefense::default()),
        (
            "noise-injection",
            InferenceDefense {
                inference_noise: Some(0.05),
                denoiser: None,
            },
        ),
        (
            "dncnn",
            InferenceDefense {
                inference_noise: None,
                denoiser: Some(small_denoiser()),
            },
        ),
    ];
    let fgsm = Attack::Fgsm {
        norm: Norm::Linf,
        random_start: false,
        step_fraction: 1.0,
        eot: 1,
    };
    let cells_of = |d: usize| -> Vec<CellSpec> {
        let (name, inference) = &defenses[d];
        [(Attack::None, 0.0), (fgsm.clone(), 8.0 / 255.0)]
            .into_iter()
            .enumerate()
            .map(|(a, (attack, epsilon))| CellSpec {
                id: id(&format!("c-{:016x}", 16 * d + a + 1)),
                run_id: id(RUN),
                attack_name: if a == 0 { "none" } else { "fgsm" }.into(),
                attack,
                epsilon,
                defense_name: (*name).into(),
                inference: inference.clone(),
            })
            .collect()
    };
    let execute = |cells: &[CellSpec]| -> anyhow::Result<(usize, Vec<(String, CellResult)>)> {
        let mut epochs = 0;
        let mut results = Vec::new();
        Executor::new(Device::Cpu, 2).run_catching(
            &run,
            cells,
            &AtomicBool::new(false),
            &mut |p| {
                match p {
                    Progress::Epoch(_) => epochs += 1,
                    Progress::Cell { cell_id, result } => results.push((cell_id, result)),
                    _ => {}
                }
                Ok(())
            },
        )?;
        Ok((epochs, results))
    };
    let all: Vec<CellSpec> = (0..defenses.len()).flat_map(cells_of).collect();
    let (epochs, together) = execute(&all)?;
    assert_eq!(epochs, 1, "one training for the three defenses");
    let mut alone = Vec::new();
    for d in 0..defenses.len() {
        let (epochs, results) = execute(&cells_of(d))?;
        assert_eq!(epochs, 1);
        alone.extend(results);
    }
    assert_eq!(together.len(), 6);
    for ((id, shared), (same_id, own)) in together.iter().zip(&alone) {
        assert_eq!(id, same_id);
        assert_eq!(shared.accuracy, own.accuracy, "{id}");
        assert_eq!(shared.attack_success_rate, own.attack_success_rate, "{id}");
        assert_eq!(shared.mean_linf, own.mean_linf, "{id}");
    }
    // The defenses differ: the denoiser and the noise change what FGSM does.
    let fgsm_accuracy: Vec<f64> = together
        .iter()
        .filter(|(id, _)| id.ends_with('2'))
        .map(|(_, r)| r.accuracy)
        .collect();
    assert_eq!(fgsm_accuracy.len(), 3);
    assert!(
        fgsm_accuracy[0] != fgsm_accuracy[1] || fgsm_accuracy[0] != fgsm_accuracy[2],
        "{fgsm_accuracy:?}"
    );
    Ok(())
}
