//! One leased run, executed synchronously: seed, load data, build, train (the classifier,
//! then the denoiser if the defense has one), wrap the defended model
//! ([`crate::defended::Defended`]: inference noise → denoiser → classifier) and evaluate every
//! cell against it, with every ε in the run's ε space.
//!
//! This is the part that runs on a dedicated blocking thread (libtorch calls block for
//! seconds); it knows nothing about gRPC. It reports through a callback — the agent turns
//! [`Progress`] events into `ReportMetrics`/`CompleteCell` RPCs — and stops between batches when
//! the shared cancel flag is set.
//!
//! The last data set stays cached on the device: the runs of a sweep usually share one
//! `DataSpec`, and reloading CIFAR-10 (or regenerating synthetic data) per run would waste
//! seconds each time.//!
//! Layout: this file is the executor; `resume.rs` encodes and decodes the training checkpoints
//! it emits and resumes from.

mod resume;

use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use advsweep_core::{CellResult, CellSpec, DataSpec, EpochMetrics, RunSpec};
use anyhow::Context as _;
use tch::Device;
use tracing::{info, info_span};

use crate::attacks::Budget;
use crate::data::Dataset;
use crate::defended::Defended;
use crate::denoiser::{self, DenoiserTraining};
use crate::evaluate::{CleanPredictions, evaluate_cell};
use crate::models;
use crate::optim::Optim;
use crate::rng::{Rng, hash_str};
use crate::train::{self, TrainConfig};
use resume::{decode_checkpoint, encode_checkpoint};

/// What a run reports while it executes.
#[derive(Clone, PartialEq)]
pub enum Progress {
    Epoch(EpochMetrics),
    /// A resumable snapshot after `epoch` (safetensors bytes: weights, optimizer state, epoch).
    Checkpoint {
        epoch: u32,
        bytes: Vec<u8>,
    },
    Cell {
        cell_id: String,
        result: CellResult,
    },
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Progress::Epoch(m) => f.debug_tuple("Epoch").field(m).finish(),
            Progress::Checkpoint { epoch, bytes } => f
                .debug_struct("Checkpoint")
                .field("epoch", epoch)
                .field("bytes", &bytes.len())
                .finish(),
            Progress::Cell { cell_id, result } => f
                .debug_struct("Cell")
                .field("cell_id", cell_id)
                .field("result", result)
                .finish(),
        }
    }
}

const CELL_STREAM: u64 = 0x4345_4c4c; // "CELL"

/// Executes runs on one device; shared (behind an `Arc`) with the blocking threads.
#[derive(Debug)]
pub struct Executor {
    device: Device,
    threads: usize,
    cache: Mutex<Option<(DataSpec, Dataset)>>,
}

impl Executor {
    pub fn new(device: Device, threads: usize) -> Executor {
        Executor {
            device,
            threads,
            cache: Mutex::new(None),
        }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// [`Executor::run`], with a panic anywhere below turned into a (retryable) error so that
    /// one bad run cannot take the worker down.
    pub fn run_catching(
        &self,
        run: &RunSpec,
        cells: &[CellSpec],
        cancel: &AtomicBool,
        emit: &mut dyn FnMut(Progress) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.run_catching_from(run, cells, None, cancel, emit)
    }

    /// [`Executor::run_catching`], resuming from a training checkpoint when given one.
    pub fn run_catching_from(
        &self,
        run: &RunSpec,
        cells: &[CellSpec],
        resume: Option<&[u8]>,
        cancel: &AtomicBool,
        emit: &mut dyn FnMut(Progress) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.run(run, cells, resume, cancel, emit)
        })) {
            Ok(result) => result,
            Err(panic) => {
                // The cached data set may be half-built; drop it.
                *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                Err(anyhow::anyhow!("panic while executing the run: {message}"))
            }
        }
    }

    /// Trains the run's model and evaluates its cells, reporting through `emit`.
    pub fn run(
        &self,
        run: &RunSpec,
        cells: &[CellSpec],
        resume: Option<&[u8]>,
        cancel: &AtomicBool,
        emit: &mut dyn FnMut(Progress) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        crate::device::set_threads(self.threads);
        // Weights come from torch's generator; everything else from our own streams.
        tch::manual_seed((run.seed & (i64::MAX as u64)) as i64);
        let model = models::build(&run.model, self.device)
            .with_context(|| format!("building model `{}`", run.model.name))?;
        info!(
            model = model.name(),
            parameters = models::trainable_parameters(model.as_ref()),
            "model built"
        );

        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let reuse =
            matches!(&*cache, Some((spec, ds)) if spec == &run.data && ds.device() == self.device);
        if !reuse {
            *cache = None; // free the old set before loading the new one
            let t0 = Instant::now();
            let ds = Dataset::load(&run.data, self.device).context("loading data")?;
            info!(data = %ds.description, seconds = t0.elapsed().as_secs_f64(), "data loaded");
            *cache = Some((run.data.clone(), ds));
        }
        let Some((_, data)) = cache.as_ref() else {
            anyhow::bail!("data cache unexpectedly empty");
        };

        let epochs = run.training.epochs;
        let resume = match resume {
            None => None,
            Some(bytes) => {
                let r = decode_checkpoint(model.as_ref(), bytes)
                    .context("resuming from the run's checkpoint")?;
                info!(
                    epochs_done = r.epochs_done,
                    of = epochs,
                    "resuming from checkpoint"
                );
                Some(r)
            }
        };
        let model_ref = model.as_ref();
        let every = run.training.checkpoint_every.max(1);
        train::train_from(
            model.as_ref(),
            data,
            TrainConfig {
                training: &run.training,
                defense: &run.defense,
                seed: run.seed,
                space: run.epsilon_space,
            },
            cancel,
            resume,
            &mut |m: EpochMetrics, opt: &Optim| {
                info!(
                    epoch = m.epoch,
                    of = epochs,
                    loss = format_args!("{:.4}", m.train_loss),
                    train_acc = format_args!("{:.4}", m.train_accuracy),
                    test_acc = format_args!("{:.4}", m.test_accuracy),
                    img_per_s = format_args!("{:.0}", m.images_per_second),
                    seconds = format_args!("{:.1}", m.seconds),
                    "epoch done"
                );
                let epoch = m.epoch;
                emit(Progress::Epoch(m))?;
                if epoch.is_multiple_of(every) || epoch == epochs {
                    let bytes = encode_checkpoint(model_ref, opt, epoch)?;
                    emit(Progress::Checkpoint { epoch, bytes })?;
                }
                Ok(())
            },
        )
        .context("training")?;

        let denoiser = match &run.defense.denoiser {
            None => None,
            Some(spec) => {
                let t0 = Instant::now();
                let d = denoiser::train(
                    model.as_ref(),
                    data,
                    DenoiserTraining {
                        spec,
                        batch_size: run.training.batch_size,
                        space: run.epsilon_space,
                        seed: run.seed,
                    },
                    cancel,
                    &mut |_, _| {},
                )
                .context("training the denoiser")?;
                info!(
                    seconds = format_args!("{:.1}", t0.elapsed().as_secs_f64()),
                    "denoiser trained"
                );
                Some(d)
            }
        };
        let defended = Defended::new(model, denoiser, run.defense.inference_noise)?;
        let budget = |epsilon| Budget::new(epsilon, run.epsilon_space);
        let mut clean = CleanPredictions::default();

        for cell in cells {
            let span = info_span!(
                "cell",
                cell_id = %cell.id,
                attack = %cell.attack_name,
                epsilon = cell.epsilon
            );
            let _entered = span.enter();
            let mut rng = Rng::from_words(&[run.seed, CELL_STREAM, hash_str(&cell.id)]);
            let result = evaluate_cell(
                &defended,
                data,
                &cell.attack,
                budget(cell.epsilon),
                run.training.eval_batch_size,
                &mut clean,
                &mut rng,
                cancel,
            )
            .with_context(|| {
                format!(
                    "evaluating cell {} ({} at epsilon {})",
                    cell.id, cell.attack_name, cell.epsilon
                )
            })?;
            info!(
                accuracy = format_args!("{:.4}", result.accuracy),
                success_rate = format_args!("{:.4}", result.attack_success_rate),
                mean_linf = format_args!("{:.5}", result.mean_linf),
                mean_l2 = format_args!("{:.4}", result.mean_l2),
                img_per_s = format_args!("{:.0}", result.images_per_second),
                "cell done"
            );
            emit(Progress::Cell {
                cell_id: cell.id.clone(),
                result,
            })?;
        }
        info!(
            seconds = format_args!("{:.1}", started.elapsed().as_secs_f64()),
            cells = cells.len(),
            "run finished"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{is_cancelled, is_retryable};
    use advsweep_core::{
        Attack, DataSource, Defense, Model, Norm, Optimizer, StepSize, TrainingSpec,
    };
    use std::sync::atomic::Ordering;

    fn run_spec(model: &str, data: DataSource, defense: Defense) -> RunSpec {
        RunSpec {
            id: "r".into(),
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
            },
            seed: 5,
            epsilon_space: advsweep_core::EpsilonSpace::Pixel,
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
                inference_noise: Some(0.05),
                denoiser: Some(advsweep_core::DenoiserSpec {
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
                }),
            },
        );
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
                id: "clean".into(),
                run_id: "r".into(),
                attack_name: "none".into(),
                attack: Attack::None,
                epsilon: 0.0,
            },
            CellSpec {
                id: "pgd-eot".into(),
                run_id: "r".into(),
                attack_name: "pgd".into(),
                attack: pgd(Norm::Linf).with_eot(3),
                epsilon: eps,
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
                inference_noise: None,
                denoiser: None,
            },
        );
        let cells = vec![
            CellSpec {
                id: "clean".into(),
                run_id: "r".into(),
                attack_name: "none".into(),
                attack: Attack::None,
                epsilon: 0.0,
            },
            CellSpec {
                id: "pgd".into(),
                run_id: "r".into(),
                attack_name: "pgd".into(),
                attack: pgd,
                epsilon: 8.0 / 255.0,
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
        assert_eq!(cell_id, "clean");
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
}
