//! The `[training]`, `[evaluation]` and `[data]` tables → the run's training and data specs.

use advsweep_core::validate::eot_samples;
use advsweep_core::{DataSource, DataSpec, LrSchedule, Optimizer, TrainingSpec};

use super::check::Validator;
use super::{Overrides, SweepError};
use crate::sweep::file::{DataSection, OptimizerKind, ScheduleKind, SweepFile};

pub(super) fn training(v: &Validator, file: &SweepFile) -> Result<TrainingSpec, SweepError> {
    let t = &file.training;
    let optimizer = match t.optimizer {
        OptimizerKind::Sgd => Optimizer::Sgd {
            momentum: t.momentum,
            weight_decay: t.weight_decay,
            nesterov: t.nesterov,
        },
        OptimizerKind::Adam => Optimizer::Adam {
            beta1: t.beta1,
            beta2: t.beta2,
            weight_decay: t.weight_decay,
        },
    };
    let schedule = match t.schedule {
        ScheduleKind::Constant => LrSchedule::Constant,
        ScheduleKind::Step => LrSchedule::Step {
            every_epochs: t.step_every,
            gamma: t.step_gamma,
        },
        ScheduleKind::Cosine => LrSchedule::Cosine,
        ScheduleKind::OneCycle => LrSchedule::OneCycle,
    };
    let spec = TrainingSpec {
        epochs: t.epochs,
        batch_size: t.batch_size,
        learning_rate: t.learning_rate,
        optimizer,
        schedule,
        augment: t.augment,
        eval_batch_size: file.evaluation.batch_size,
        checkpoint_every: t.checkpoint_every,
        precision: t.precision,
    };
    v.rule(None, spec.validate())?;
    v.rule(
        None,
        eot_samples("evaluation.eot_samples", file.evaluation.eot_samples),
    )?;
    Ok(spec)
}

pub(super) fn data(
    v: &Validator,
    file: &SweepFile,
    overrides: &Overrides,
) -> Result<DataSpec, SweepError> {
    let path_of = |path: &String| overrides.data_path.clone().unwrap_or_else(|| path.clone());
    let (source, train_limit) = match &file.data {
        DataSection::Synthetic {
            seed,
            train_size,
            test_size,
            train_limit,
        } => (
            DataSource::Synthetic {
                seed: *seed,
                train_size: *train_size,
                test_size: *test_size,
            },
            *train_limit,
        ),
        DataSection::Cifar10 { path, train_limit } => (
            DataSource::Cifar10Binary {
                path: path_of(path),
            },
            *train_limit,
        ),
        DataSection::Cifar100 { path, train_limit } => (
            DataSource::Cifar100Binary {
                path: path_of(path),
            },
            *train_limit,
        ),
        DataSection::ImageFolder { path, train_limit } => (
            DataSource::ImageFolder {
                path: path_of(path),
            },
            *train_limit,
        ),
    };
    let spec = DataSpec {
        source,
        eval_limit: file.evaluation.limit,
        train_limit,
    };
    v.rule(None, spec.validate())?;
    Ok(spec)
}
