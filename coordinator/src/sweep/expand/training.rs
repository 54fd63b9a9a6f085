//! The `[training]`, `[evaluation]` and `[data]` tables → the run's training and data specs.

use advsweep_core::limits::MAX_SHARDS;
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
        shard: None,
    };
    v.rule(None, spec.validate())?;
    Ok(spec)
}

/// `[evaluation] shards`: 1 to [`MAX_SHARDS`], and no more than the evaluated images make
/// evaluation batches when that is known (a slice without images would be a run for nothing).
pub(super) fn shards(v: &Validator, file: &SweepFile) -> Result<u32, SweepError> {
    let e = &file.evaluation;
    v.check((1..=MAX_SHARDS).contains(&e.shards), || {
        format!("evaluation.shards = {}: use 1 to {MAX_SHARDS}", e.shards)
    })?;
    let test_size = match &file.data {
        DataSection::Synthetic { test_size, .. } => Some(*test_size),
        _ => None,
    };
    let images = match (e.limit, test_size) {
        (0, size) => size,
        (limit, Some(size)) => Some(limit.min(size)),
        (limit, None) => Some(limit),
    };
    if let Some(images) = images {
        let batches = images.div_ceil(e.batch_size.max(1));
        v.check(e.shards <= batches.max(1), || {
            format!(
                "evaluation.shards = {}: the {images} evaluated images make only {batches} \
                 batches of {} (each shard is at least one batch; lower shards or the batch size)",
                e.shards, e.batch_size
            )
        })?;
    }
    Ok(e.shards)
}
