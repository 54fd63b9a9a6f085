//! One leased run, executed synchronously: seed, load data, build, train, evaluate every cell.
//!
//! This is the part that runs on a dedicated blocking thread (libtorch calls block for
//! seconds); it knows nothing about gRPC. It reports through a callback — the agent turns
//! [`Progress`] events into `ReportMetrics`/`CompleteCell` RPCs — and stops between batches when
//! the shared cancel flag is set.
//!
//! The last data set stays cached on the device: the runs of a sweep usually share one
//! `DataSpec`, and reloading CIFAR-10 (or regenerating synthetic data) per run would waste
//! seconds each time.

use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use advsweep_spec::{CellResult, CellSpec, DataSpec, EpochMetrics, RunSpec};
use anyhow::Context as _;
use tch::Device;
use tracing::{info, info_span};

use crate::data::Dataset;
use crate::evaluate::evaluate_cell;
use crate::models;
use crate::rng::{Rng, hash_str};
use crate::train::{self, TrainConfig};

/// What a run reports while it executes.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Epoch(EpochMetrics),
    Cell { cell_id: String, result: CellResult },
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
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.run(run, cells, cancel, emit))) {
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
        cancel: &AtomicBool,
        emit: &mut dyn FnMut(Progress) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        crate::device::set_threads(self.threads);
        // Weights come from torch's generator; everything else from our own streams.
        tch::manual_seed((run.seed & (i64::MAX as u64)) as i64);
        let model = models::build(&run.model.name, self.device)
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
        train::train(
            model.as_ref(),
            data,
            TrainConfig {
                training: &run.training,
                defense: &run.defense,
                seed: run.seed,
            },
            cancel,
            &mut |m: EpochMetrics| {
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
                emit(Progress::Epoch(m))
            },
        )
        .context("training")?;

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
                model.as_ref(),
                data,
                &cell.attack,
                cell.epsilon,
                run.training.eval_batch_size,
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
    use advsweep_spec::{
        Attack, DataSource, Defense, Model, Norm, Optimizer, StepSize, TrainingSpec,
    };
    use std::sync::atomic::Ordering;

    fn run_spec(model: &str, data: DataSource, defense: Defense) -> RunSpec {
        RunSpec {
            id: "r".into(),
            model: Model { name: model.into() },
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
                augment: true,
                eval_batch_size: 64,
            },
            data: DataSpec {
                source: data,
                eval_limit: 100,
                train_limit: 200,
            },
            seed: 5,
        }
    }

    fn synthetic() -> DataSource {
        DataSource::Synthetic {
            seed: 1,
            train_size: 1000,
            test_size: 500,
        }
    }

    #[test]
    fn a_small_adversarial_run_reports_epochs_then_cells() -> anyhow::Result<()> {
        let pgd = Attack::Pgd {
            norm: Norm::Linf,
            steps: 2,
            step: StepSize::FractionOfEpsilon(0.5),
            random_start: true,
            restarts: 1,
        };
        let run = run_spec(
            "basic",
            synthetic(),
            Defense::Adversarial {
                attack: pgd.clone(),
                epsilon: 4.0 / 255.0,
                fraction: 0.5,
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
        executor.run_catching(&run, &cells, &AtomicBool::new(false), &mut |p| {
            events.push(p);
            Ok(())
        })?;
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
            &run_spec("nope", synthetic(), Defense::Standard),
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
            &run_spec("basic", missing, Defense::Standard),
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
            &run_spec("basic", synthetic(), Defense::Standard),
            &[],
            &cancel,
            &mut |_| Ok(()),
        );
        assert!(result.is_err_and(|e| is_cancelled(&e)));
    }
}
