//! The one mapping between the experiment vocabulary and the v1 wire types.
//!
//! Decoding never panics: a missing or out-of-range field is a [`WireError`] that names it, which
//! the gRPC layers turn into `invalid_argument`.

use advsweep_proto::v1 as pb;

use crate::{
    Attack, CellResult, CellSpec, DataSource, DataSpec, Defense, EpochMetrics, Model, Norm,
    Optimizer, RunSpec, StepSize, TrainingSpec,
};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WireError {
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` is invalid: {why}")]
    Invalid { field: &'static str, why: String },
}

fn invalid(field: &'static str, why: impl Into<String>) -> WireError {
    WireError::Invalid {
        field,
        why: why.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// spec -> wire
// ---------------------------------------------------------------------------------------------

pub fn norm_to_wire(norm: Norm) -> i32 {
    match norm {
        Norm::Linf => pb::Norm::Linf as i32,
        Norm::L2 => pb::Norm::L2 as i32,
    }
}

fn step_to_wire(step: StepSize) -> (f64, f64) {
    match step {
        StepSize::Absolute(s) => (s, 0.0),
        StepSize::FractionOfEpsilon(f) => (0.0, f),
    }
}

pub fn attack_to_wire(attack: &Attack) -> pb::AttackSpec {
    let kind = match attack {
        Attack::None => pb::attack_spec::Kind::None(pb::NoAttack {}),
        Attack::Fgsm {
            norm,
            random_start,
            step_fraction,
        } => pb::attack_spec::Kind::Fgsm(pb::Fgsm {
            norm: norm_to_wire(*norm),
            random_start: *random_start,
            step_fraction: *step_fraction,
        }),
        Attack::Pgd {
            norm,
            steps,
            step,
            random_start,
            restarts,
        } => {
            let (step_size, step_fraction) = step_to_wire(*step);
            pb::attack_spec::Kind::Pgd(pb::Pgd {
                norm: norm_to_wire(*norm),
                steps: *steps,
                step_size,
                step_fraction,
                random_start: *random_start,
                restarts: *restarts,
            })
        }
    };
    pb::AttackSpec { kind: Some(kind) }
}

pub fn defense_to_wire(defense: &Defense) -> pb::DefenseSpec {
    let kind = match defense {
        Defense::Standard => pb::defense_spec::Kind::Standard(pb::StandardTraining {}),
        Defense::Adversarial {
            attack,
            epsilon,
            fraction,
        } => pb::defense_spec::Kind::Adversarial(pb::AdversarialTraining {
            attack: Some(attack_to_wire(attack)),
            epsilon: *epsilon,
            fraction: *fraction,
        }),
    };
    pb::DefenseSpec { kind: Some(kind) }
}

pub fn training_to_wire(t: &TrainingSpec) -> pb::TrainingSpec {
    let optimizer = match t.optimizer {
        Optimizer::Sgd {
            momentum,
            weight_decay,
            nesterov,
        } => pb::training_spec::Optimizer::Sgd(pb::SgdOptimizer {
            momentum,
            weight_decay,
            nesterov,
        }),
    };
    pb::TrainingSpec {
        epochs: t.epochs,
        batch_size: t.batch_size,
        learning_rate: t.learning_rate,
        optimizer: Some(optimizer),
        augment: t.augment,
        eval_batch_size: t.eval_batch_size,
    }
}

pub fn data_to_wire(d: &DataSpec) -> pb::DataSpec {
    let source = match &d.source {
        DataSource::Synthetic {
            seed,
            train_size,
            test_size,
        } => pb::data_spec::Source::Synthetic(pb::SyntheticData {
            seed: *seed,
            train_size: *train_size,
            test_size: *test_size,
        }),
        DataSource::Cifar10Binary { path } => {
            pb::data_spec::Source::Cifar10Binary(pb::Cifar10Binary { path: path.clone() })
        }
    };
    pb::DataSpec {
        source: Some(source),
        eval_limit: d.eval_limit,
        train_limit: d.train_limit,
    }
}

pub fn cell_to_wire(c: &CellSpec) -> pb::CellSpec {
    pb::CellSpec {
        cell_id: c.id.clone(),
        attack_name: c.attack_name.clone(),
        attack: Some(attack_to_wire(&c.attack)),
        epsilon: c.epsilon,
    }
}

/// A run with the cells the worker must evaluate on it.
pub fn run_to_wire(run: &RunSpec, sweep_id: &str, cells: &[CellSpec]) -> pb::RunSpec {
    pb::RunSpec {
        run_id: run.id.clone(),
        sweep_id: sweep_id.to_owned(),
        model: Some(pb::ModelSpec {
            name: run.model.name.clone(),
        }),
        defense_name: run.defense_name.clone(),
        defense: Some(defense_to_wire(&run.defense)),
        training: Some(training_to_wire(&run.training)),
        data: Some(data_to_wire(&run.data)),
        seed: run.seed,
        cells: cells.iter().map(cell_to_wire).collect(),
    }
}

pub fn epoch_to_wire(m: &EpochMetrics) -> pb::EpochMetrics {
    pb::EpochMetrics {
        epoch: m.epoch,
        train_loss: m.train_loss,
        train_accuracy: m.train_accuracy,
        test_accuracy: m.test_accuracy,
        seconds: m.seconds,
        images_per_second: m.images_per_second,
    }
}

pub fn cell_result_to_wire(r: &CellResult) -> pb::CellResult {
    pb::CellResult {
        accuracy: r.accuracy,
        attack_success_rate: r.attack_success_rate,
        mean_linf: r.mean_linf,
        mean_l2: r.mean_l2,
        images_per_second: r.images_per_second,
        seconds: r.seconds,
        examples: r.examples,
    }
}

// ---------------------------------------------------------------------------------------------
// wire -> spec
// ---------------------------------------------------------------------------------------------

fn norm_from_wire(norm: i32, field: &'static str) -> Result<Norm, WireError> {
    match pb::Norm::try_from(norm) {
        Ok(pb::Norm::Linf) => Ok(Norm::Linf),
        Ok(pb::Norm::L2) => Ok(Norm::L2),
        _ => Err(invalid(field, format!("unknown norm {norm}"))),
    }
}

fn positive(value: f64, field: &'static str) -> Result<f64, WireError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(invalid(field, format!("{value} is not a positive number")))
    }
}

fn non_negative(value: f64, field: &'static str) -> Result<f64, WireError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(invalid(
            field,
            format!("{value} is not a non-negative number"),
        ))
    }
}

pub fn attack_from_wire(a: &pb::AttackSpec) -> Result<Attack, WireError> {
    match a.kind.as_ref().ok_or(WireError::Missing("attack.kind"))? {
        pb::attack_spec::Kind::None(_) => Ok(Attack::None),
        pb::attack_spec::Kind::Fgsm(f) => Ok(Attack::Fgsm {
            norm: norm_from_wire(f.norm, "attack.fgsm.norm")?,
            random_start: f.random_start,
            step_fraction: positive(f.step_fraction, "attack.fgsm.step_fraction")?,
        }),
        pb::attack_spec::Kind::Pgd(p) => {
            let step = if p.step_size > 0.0 {
                StepSize::Absolute(positive(p.step_size, "attack.pgd.step_size")?)
            } else {
                StepSize::FractionOfEpsilon(positive(p.step_fraction, "attack.pgd.step_fraction")?)
            };
            if p.steps == 0 {
                return Err(invalid("attack.pgd.steps", "must be at least 1"));
            }
            Ok(Attack::Pgd {
                norm: norm_from_wire(p.norm, "attack.pgd.norm")?,
                steps: p.steps,
                step,
                random_start: p.random_start,
                restarts: p.restarts.max(1),
            })
        }
    }
}

pub fn defense_from_wire(d: &pb::DefenseSpec) -> Result<Defense, WireError> {
    match d.kind.as_ref().ok_or(WireError::Missing("defense.kind"))? {
        pb::defense_spec::Kind::Standard(_) => Ok(Defense::Standard),
        pb::defense_spec::Kind::Adversarial(a) => {
            let fraction = a.fraction;
            if !(fraction > 0.0 && fraction <= 1.0) {
                return Err(invalid(
                    "defense.adversarial.fraction",
                    format!("{fraction} is not in (0, 1]"),
                ));
            }
            Ok(Defense::Adversarial {
                attack: attack_from_wire(
                    a.attack
                        .as_ref()
                        .ok_or(WireError::Missing("defense.adversarial.attack"))?,
                )?,
                epsilon: non_negative(a.epsilon, "defense.adversarial.epsilon")?,
                fraction,
            })
        }
    }
}

pub fn training_from_wire(t: &pb::TrainingSpec) -> Result<TrainingSpec, WireError> {
    if t.epochs == 0 {
        return Err(invalid("training.epochs", "must be at least 1"));
    }
    if t.batch_size == 0 {
        return Err(invalid("training.batch_size", "must be at least 1"));
    }
    let optimizer = match t
        .optimizer
        .as_ref()
        .ok_or(WireError::Missing("training.optimizer"))?
    {
        pb::training_spec::Optimizer::Sgd(s) => Optimizer::Sgd {
            momentum: non_negative(s.momentum, "training.sgd.momentum")?,
            weight_decay: non_negative(s.weight_decay, "training.sgd.weight_decay")?,
            nesterov: s.nesterov,
        },
    };
    Ok(TrainingSpec {
        epochs: t.epochs,
        batch_size: t.batch_size,
        learning_rate: positive(t.learning_rate, "training.learning_rate")?,
        optimizer,
        augment: t.augment,
        eval_batch_size: t.eval_batch_size.max(1),
    })
}

pub fn data_from_wire(d: &pb::DataSpec) -> Result<DataSpec, WireError> {
    let source = match d.source.as_ref().ok_or(WireError::Missing("data.source"))? {
        pb::data_spec::Source::Synthetic(s) => {
            if s.train_size == 0 || s.test_size == 0 {
                return Err(invalid(
                    "data.synthetic",
                    "train_size and test_size must be at least 1",
                ));
            }
            DataSource::Synthetic {
                seed: s.seed,
                train_size: s.train_size,
                test_size: s.test_size,
            }
        }
        pb::data_spec::Source::Cifar10Binary(c) => {
            if c.path.is_empty() {
                return Err(WireError::Missing("data.cifar10_binary.path"));
            }
            DataSource::Cifar10Binary {
                path: c.path.clone(),
            }
        }
    };
    Ok(DataSpec {
        source,
        eval_limit: d.eval_limit,
        train_limit: d.train_limit,
    })
}

pub fn cell_from_wire(run_id: &str, c: &pb::CellSpec) -> Result<CellSpec, WireError> {
    if c.cell_id.is_empty() {
        return Err(WireError::Missing("cell.cell_id"));
    }
    Ok(CellSpec {
        id: c.cell_id.clone(),
        run_id: run_id.to_owned(),
        attack_name: c.attack_name.clone(),
        attack: attack_from_wire(c.attack.as_ref().ok_or(WireError::Missing("cell.attack"))?)?,
        epsilon: non_negative(c.epsilon, "cell.epsilon")?,
    })
}

/// Decodes a leased run and its cells.
pub fn run_from_wire(r: &pb::RunSpec) -> Result<(RunSpec, Vec<CellSpec>), WireError> {
    if r.run_id.is_empty() {
        return Err(WireError::Missing("run.run_id"));
    }
    let model = r.model.as_ref().ok_or(WireError::Missing("run.model"))?;
    if model.name.is_empty() {
        return Err(WireError::Missing("run.model.name"));
    }
    let run = RunSpec {
        id: r.run_id.clone(),
        model: Model {
            name: model.name.clone(),
        },
        defense_name: r.defense_name.clone(),
        defense: defense_from_wire(
            r.defense
                .as_ref()
                .ok_or(WireError::Missing("run.defense"))?,
        )?,
        training: training_from_wire(
            r.training
                .as_ref()
                .ok_or(WireError::Missing("run.training"))?,
        )?,
        data: data_from_wire(r.data.as_ref().ok_or(WireError::Missing("run.data"))?)?,
        seed: r.seed,
    };
    let cells = r
        .cells
        .iter()
        .map(|c| cell_from_wire(&r.run_id, c))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((run, cells))
}

pub fn epoch_from_wire(m: &pb::EpochMetrics) -> EpochMetrics {
    EpochMetrics {
        epoch: m.epoch,
        train_loss: m.train_loss,
        train_accuracy: m.train_accuracy,
        test_accuracy: m.test_accuracy,
        seconds: m.seconds,
        images_per_second: m.images_per_second,
    }
}

pub fn cell_result_from_wire(r: &pb::CellResult) -> Result<CellResult, WireError> {
    for (value, field) in [
        (r.accuracy, "result.accuracy"),
        (r.attack_success_rate, "result.attack_success_rate"),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return Err(invalid(field, format!("{value} is not in [0, 1]")));
        }
    }
    for (value, field) in [
        (r.mean_linf, "result.mean_linf"),
        (r.mean_l2, "result.mean_l2"),
        (r.images_per_second, "result.images_per_second"),
        (r.seconds, "result.seconds"),
    ] {
        if !(value.is_finite() && value >= 0.0) {
            return Err(invalid(
                field,
                format!("{value} is not a finite non-negative number"),
            ));
        }
    }
    Ok(CellResult {
        accuracy: r.accuracy,
        attack_success_rate: r.attack_success_rate,
        mean_linf: r.mean_linf,
        mean_l2: r.mean_l2,
        images_per_second: r.images_per_second,
        seconds: r.seconds,
        examples: r.examples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_run() -> (RunSpec, Vec<CellSpec>) {
        let run = RunSpec {
            id: "r1".into(),
            model: Model {
                name: "basic".into(),
            },
            defense_name: "at-pgd".into(),
            defense: Defense::Adversarial {
                attack: Attack::Pgd {
                    norm: Norm::L2,
                    steps: 7,
                    step: StepSize::FractionOfEpsilon(0.25),
                    random_start: true,
                    restarts: 2,
                },
                epsilon: 0.5,
                fraction: 1.0,
            },
            training: TrainingSpec {
                epochs: 3,
                batch_size: 64,
                learning_rate: 0.05,
                optimizer: Optimizer::Sgd {
                    momentum: 0.9,
                    weight_decay: 5e-4,
                    nesterov: true,
                },
                augment: true,
                eval_batch_size: 500,
            },
            data: DataSpec {
                source: DataSource::Cifar10Binary {
                    path: "/data/cifar".into(),
                },
                eval_limit: 1000,
                train_limit: 0,
            },
            seed: 7,
        };
        let cells = vec![CellSpec {
            id: "c1".into(),
            run_id: "r1".into(),
            attack_name: "fgsm".into(),
            attack: Attack::Fgsm {
                norm: Norm::Linf,
                random_start: false,
                step_fraction: 1.0,
            },
            epsilon: 0.03,
        }];
        (run, cells)
    }

    #[test]
    fn a_run_survives_the_round_trip() {
        let (run, cells) = sample_run();
        let wire = run_to_wire(&run, "s1", &cells);
        assert_eq!(run_from_wire(&wire), Ok((run, cells)));
    }

    #[test]
    fn missing_fields_are_named() {
        let (run, cells) = sample_run();
        let mut wire = run_to_wire(&run, "s1", &cells);
        wire.training = None;
        assert_eq!(
            run_from_wire(&wire)
                .expect_err("must be rejected")
                .to_string(),
            "missing field `run.training`"
        );
        let mut wire = run_to_wire(&run, "s1", &cells);
        if let Some(t) = wire.training.as_mut() {
            t.learning_rate = f64::NAN;
        }
        assert!(
            run_from_wire(&wire)
                .expect_err("must be rejected")
                .to_string()
                .contains("training.learning_rate")
        );
    }

    #[test]
    fn out_of_range_results_are_rejected() {
        let bad = pb::CellResult {
            accuracy: 1.5,
            ..Default::default()
        };
        assert!(cell_result_from_wire(&bad).is_err());
    }
}
