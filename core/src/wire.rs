//! The one mapping between the experiment vocabulary and the v1 wire types.
//!
//! Decoding never panics: a missing or out-of-range field is a [`WireError`] that names it, which
//! the gRPC layers turn into `invalid_argument`. Every size a peer controls is bounded here (the
//! `MAX_*` constants below), and the sweep-file parser enforces the same bounds, so whatever the
//! coordinator hands out a worker also accepts.
//!
//! Non-finite metrics: an epoch's `train_loss` may be NaN or +∞ (a diverged run is data worth
//! keeping and plotting around), its accuracies NaN ("not measured") or in [0, 1]; timings must
//! be finite and non-negative. Cell results are numbers a report averages, so every field must be
//! finite (accuracies in [0, 1]).

use advsweep_proto::v1 as pb;

use crate::{
    Attack, CellResult, CellSpec, DataSource, DataSpec, Defense, DenoiserSpec, EpochMetrics,
    EpsilonSpace, LrSchedule, MixStrategy, Model, NoiseInjection, Norm, Optimizer, Precision,
    RunSpec, StepSize, TrainingMethod, TrainingSpec,
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
// limits shared by both ends (the sweep-file parser checks the same ones)
// ---------------------------------------------------------------------------------------------

/// Longest run or cell id accepted (ours are 18 bytes: a prefix and 16 hex digits).
pub const MAX_ID_BYTES: usize = 128;
/// Longest model, defense, attack or noise-layer name accepted.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest data-set path accepted.
pub const MAX_PATH_BYTES: usize = 4096;
/// Most PGD steps per attack.
pub const MAX_PGD_STEPS: u32 = 10_000;
/// Most PGD restarts per attack.
pub const MAX_RESTARTS: u32 = 1_000;
/// Most training (or denoiser-training) epochs; also the highest epoch number a report may carry.
pub const MAX_EPOCHS: u32 = 100_000;
/// Largest training or evaluation batch.
pub const MAX_BATCH_SIZE: u32 = 1 << 20;
/// Largest synthetic data set (train or test images).
pub const MAX_SYNTHETIC_IMAGES: u32 = 10_000_000;
/// Most noise-injection points named by one model.
pub const MAX_NOISE_LAYERS: usize = 64;
/// Most cells handed out with one run.
pub const MAX_CELLS_PER_RUN: usize = 1_000_000;

/// At most `max` bytes of `value`, cut at a character boundary, for error messages.
fn shown(value: &str, max: usize) -> String {
    if value.len() <= max {
        return format!("{value:?}");
    }
    let mut cut = max;
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}… ({} bytes)", &value[..cut], value.len())
}

/// An identifier: 1–[`MAX_ID_BYTES`] printable ASCII characters, no spaces.
pub fn check_id(value: &str, field: &'static str) -> Result<(), WireError> {
    if value.is_empty() {
        return Err(WireError::Missing(field));
    }
    if value.len() > MAX_ID_BYTES || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            field,
            format!(
                "{} is not an id (1-{MAX_ID_BYTES} printable ASCII characters, no spaces)",
                shown(value, 64)
            ),
        ));
    }
    Ok(())
}

/// A display name: at most [`MAX_NAME_BYTES`] bytes, no control characters (may be empty).
pub fn check_name(value: &str, field: &'static str) -> Result<(), WireError> {
    if value.len() > MAX_NAME_BYTES || value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!(
                "{} is not a name (at most {MAX_NAME_BYTES} bytes, no control characters)",
                shown(value, 64)
            ),
        ));
    }
    Ok(())
}

/// A file-system path: 1–[`MAX_PATH_BYTES`] bytes, no NUL or other control characters.
pub fn check_path(value: &str, field: &'static str) -> Result<(), WireError> {
    if value.trim().is_empty() {
        return Err(WireError::Missing(field));
    }
    if value.len() > MAX_PATH_BYTES || value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!(
                "{} is not a path (at most {MAX_PATH_BYTES} bytes, no NUL or control characters)",
                shown(value, 64)
            ),
        ));
    }
    Ok(())
}

fn at_most(value: u32, max: u32, field: &'static str) -> Result<u32, WireError> {
    if value > max {
        return Err(invalid(field, format!("{value} is more than {max}")));
    }
    Ok(value)
}

fn in_range(value: u32, min: u32, max: u32, field: &'static str) -> Result<u32, WireError> {
    if !(min..=max).contains(&value) {
        return Err(invalid(field, format!("{value} is not in {min}..={max}")));
    }
    Ok(value)
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
            eot,
        } => pb::attack_spec::Kind::Fgsm(pb::Fgsm {
            norm: norm_to_wire(*norm),
            random_start: *random_start,
            step_fraction: *step_fraction,
            eot_samples: *eot,
        }),
        Attack::Pgd {
            norm,
            steps,
            step,
            random_start,
            restarts,
            eot,
        } => {
            let (step_size, step_fraction) = step_to_wire(*step);
            pb::attack_spec::Kind::Pgd(pb::Pgd {
                norm: norm_to_wire(*norm),
                steps: *steps,
                step_size,
                step_fraction,
                random_start: *random_start,
                restarts: *restarts,
                eot_samples: *eot,
            })
        }
    };
    pb::AttackSpec { kind: Some(kind) }
}

pub fn model_to_wire(model: &Model) -> pb::ModelSpec {
    pb::ModelSpec {
        name: model.name.clone(),
        noise: model.noise.as_ref().map(|n| pb::NoiseInjection {
            sigma: n.sigma,
            layers: n.layers.clone(),
            learnable: n.learnable,
        }),
    }
}

fn mix_to_wire(strategy: MixStrategy) -> i32 {
    match strategy {
        MixStrategy::BothPerBatch => pb::MixStrategy::BothPerBatch as i32,
        MixStrategy::WorstPerExample => pb::MixStrategy::WorstPerExample as i32,
    }
}

pub fn defense_to_wire(defense: &Defense) -> pb::DefenseSpec {
    let kind = match &defense.method {
        TrainingMethod::Standard => pb::defense_spec::Kind::Standard(pb::StandardTraining {}),
        TrainingMethod::Adversarial {
            attack,
            epsilon,
            fraction,
        } => pb::defense_spec::Kind::Adversarial(pb::AdversarialTraining {
            attack: Some(attack_to_wire(attack)),
            epsilon: *epsilon,
            fraction: *fraction,
        }),
        TrainingMethod::Mixed {
            linf,
            l2,
            epsilon_linf,
            epsilon_l2,
            strategy,
            fraction,
        } => pb::defense_spec::Kind::Mixed(pb::MixedAdversarialTraining {
            linf: Some(attack_to_wire(linf)),
            l2: Some(attack_to_wire(l2)),
            epsilon_linf: *epsilon_linf,
            epsilon_l2: *epsilon_l2,
            strategy: mix_to_wire(*strategy),
            fraction: *fraction,
        }),
    };
    pb::DefenseSpec {
        kind: Some(kind),
        inference_noise: defense.inference_noise.unwrap_or(0.0),
        denoiser: defense.denoiser.as_ref().map(|d| pb::DenoiserSpec {
            blocks: d.blocks,
            channels: d.channels,
            attack: Some(attack_to_wire(&d.attack)),
            epsilon: d.epsilon,
            epochs: d.epochs,
            learning_rate: d.learning_rate,
            pairs_per_epoch: d.pairs_per_epoch,
        }),
    }
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
        Optimizer::Adam {
            beta1,
            beta2,
            weight_decay,
        } => pb::training_spec::Optimizer::Adam(pb::AdamOptimizer {
            beta1,
            beta2,
            weight_decay,
        }),
    };
    let schedule = match t.schedule {
        LrSchedule::Constant => pb::lr_schedule::Kind::Constant(pb::ConstantLr {}),
        LrSchedule::Step {
            every_epochs,
            gamma,
        } => pb::lr_schedule::Kind::Step(pb::StepLr {
            every_epochs,
            gamma,
        }),
        LrSchedule::Cosine => pb::lr_schedule::Kind::Cosine(pb::CosineLr {}),
        LrSchedule::OneCycle => pb::lr_schedule::Kind::OneCycle(pb::OneCycleLr {}),
    };
    pb::TrainingSpec {
        epochs: t.epochs,
        batch_size: t.batch_size,
        learning_rate: t.learning_rate,
        optimizer: Some(optimizer),
        schedule: Some(pb::LrSchedule {
            kind: Some(schedule),
        }),
        augment: t.augment,
        eval_batch_size: t.eval_batch_size,
        checkpoint_every: t.checkpoint_every,
        precision: match t.precision {
            Precision::Fp32 => pb::Precision::Fp32 as i32,
            Precision::Bf16 => pb::Precision::Bf16 as i32,
        },
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
        DataSource::ImageFolder { path } => {
            pb::data_spec::Source::ImageFolder(pb::ImageFolder { path: path.clone() })
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

pub fn epsilon_space_to_wire(space: EpsilonSpace) -> i32 {
    match space {
        EpsilonSpace::Pixel => pb::EpsilonSpace::Pixel as i32,
        EpsilonSpace::Normalized => pb::EpsilonSpace::Normalized as i32,
    }
}

/// Unknown values are pixel space (the default), for display; [`run_from_wire`] rejects them.
pub fn epsilon_space_from_wire(space: i32) -> EpsilonSpace {
    match pb::EpsilonSpace::try_from(space) {
        Ok(pb::EpsilonSpace::Normalized) => EpsilonSpace::Normalized,
        _ => EpsilonSpace::Pixel,
    }
}

/// A run with the cells the worker must evaluate on it.
pub fn run_to_wire(run: &RunSpec, sweep_id: &str, cells: &[CellSpec]) -> pb::RunSpec {
    pb::RunSpec {
        run_id: run.id.clone(),
        sweep_id: sweep_id.to_owned(),
        model: Some(model_to_wire(&run.model)),
        model_name: run.model_name.clone(),
        epsilon_space: epsilon_space_to_wire(run.epsilon_space),
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

/// Most gradient samples per step a worker accepts (a guard against absurd requests).
pub const MAX_EOT_SAMPLES: u32 = 1000;
/// Most residual blocks of a DnCNN denoiser.
pub const MAX_DENOISER_BLOCKS: u32 = 64;
/// Most channels of a DnCNN denoiser.
pub const MAX_DENOISER_CHANNELS: u32 = 1024;

fn eot_from_wire(samples: u32, field: &'static str) -> Result<u32, WireError> {
    if samples > MAX_EOT_SAMPLES {
        return Err(invalid(
            field,
            format!("{samples} is more than {MAX_EOT_SAMPLES}"),
        ));
    }
    Ok(samples.max(1))
}

fn fraction_from_wire(fraction: f64, field: &'static str) -> Result<f64, WireError> {
    if fraction > 0.0 && fraction <= 1.0 {
        Ok(fraction)
    } else {
        Err(invalid(field, format!("{fraction} is not in (0, 1]")))
    }
}

fn required_attack(a: Option<&pb::AttackSpec>, field: &'static str) -> Result<Attack, WireError> {
    attack_from_wire(a.ok_or(WireError::Missing(field))?)
}

pub fn model_from_wire(m: &pb::ModelSpec) -> Result<Model, WireError> {
    if m.name.is_empty() {
        return Err(WireError::Missing("run.model.name"));
    }
    check_name(&m.name, "run.model.name")?;
    let noise = match &m.noise {
        None => None,
        Some(n) => {
            if n.layers.is_empty() {
                return Err(WireError::Missing("run.model.noise.layers"));
            }
            if n.layers.len() > MAX_NOISE_LAYERS {
                return Err(invalid(
                    "run.model.noise.layers",
                    format!("{} layers, more than {MAX_NOISE_LAYERS}", n.layers.len()),
                ));
            }
            for layer in &n.layers {
                check_name(layer, "run.model.noise.layers")?;
            }
            Some(NoiseInjection {
                sigma: non_negative(n.sigma, "run.model.noise.sigma")?,
                layers: n.layers.clone(),
                learnable: n.learnable,
            })
        }
    };
    Ok(Model {
        name: m.name.clone(),
        noise,
    })
}

pub fn attack_from_wire(a: &pb::AttackSpec) -> Result<Attack, WireError> {
    match a.kind.as_ref().ok_or(WireError::Missing("attack.kind"))? {
        pb::attack_spec::Kind::None(_) => Ok(Attack::None),
        pb::attack_spec::Kind::Fgsm(f) => Ok(Attack::Fgsm {
            norm: norm_from_wire(f.norm, "attack.fgsm.norm")?,
            random_start: f.random_start,
            step_fraction: positive(f.step_fraction, "attack.fgsm.step_fraction")?,
            eot: eot_from_wire(f.eot_samples, "attack.fgsm.eot_samples")?,
        }),
        pb::attack_spec::Kind::Pgd(p) => {
            let step = if p.step_size > 0.0 {
                StepSize::Absolute(positive(p.step_size, "attack.pgd.step_size")?)
            } else {
                StepSize::FractionOfEpsilon(positive(p.step_fraction, "attack.pgd.step_fraction")?)
            };
            Ok(Attack::Pgd {
                norm: norm_from_wire(p.norm, "attack.pgd.norm")?,
                steps: in_range(p.steps, 1, MAX_PGD_STEPS, "attack.pgd.steps")?,
                step,
                random_start: p.random_start,
                restarts: at_most(p.restarts, MAX_RESTARTS, "attack.pgd.restarts")?.max(1),
                eot: eot_from_wire(p.eot_samples, "attack.pgd.eot_samples")?,
            })
        }
    }
}

fn mix_from_wire(strategy: i32) -> Result<MixStrategy, WireError> {
    match pb::MixStrategy::try_from(strategy) {
        Ok(pb::MixStrategy::BothPerBatch) => Ok(MixStrategy::BothPerBatch),
        Ok(pb::MixStrategy::WorstPerExample) => Ok(MixStrategy::WorstPerExample),
        _ => Err(invalid(
            "defense.mixed.strategy",
            format!("unknown strategy {strategy}"),
        )),
    }
}

fn denoiser_from_wire(n: &pb::DenoiserSpec) -> Result<DenoiserSpec, WireError> {
    Ok(DenoiserSpec {
        blocks: in_range(n.blocks, 1, MAX_DENOISER_BLOCKS, "defense.denoiser.blocks")?,
        channels: in_range(
            n.channels,
            1,
            MAX_DENOISER_CHANNELS,
            "defense.denoiser.channels",
        )?,
        attack: required_attack(n.attack.as_ref(), "defense.denoiser.attack")?,
        epsilon: non_negative(n.epsilon, "defense.denoiser.epsilon")?,
        epochs: in_range(n.epochs, 1, MAX_EPOCHS, "defense.denoiser.epochs")?,
        learning_rate: positive(n.learning_rate, "defense.denoiser.learning_rate")?,
        pairs_per_epoch: n.pairs_per_epoch,
    })
}

pub fn defense_from_wire(d: &pb::DefenseSpec) -> Result<Defense, WireError> {
    let method = match d.kind.as_ref().ok_or(WireError::Missing("defense.kind"))? {
        pb::defense_spec::Kind::Standard(_) => TrainingMethod::Standard,
        pb::defense_spec::Kind::Adversarial(a) => TrainingMethod::Adversarial {
            attack: required_attack(a.attack.as_ref(), "defense.adversarial.attack")?,
            epsilon: non_negative(a.epsilon, "defense.adversarial.epsilon")?,
            fraction: fraction_from_wire(a.fraction, "defense.adversarial.fraction")?,
        },
        pb::defense_spec::Kind::Mixed(m) => TrainingMethod::Mixed {
            linf: required_attack(m.linf.as_ref(), "defense.mixed.linf")?,
            l2: required_attack(m.l2.as_ref(), "defense.mixed.l2")?,
            epsilon_linf: non_negative(m.epsilon_linf, "defense.mixed.epsilon_linf")?,
            epsilon_l2: non_negative(m.epsilon_l2, "defense.mixed.epsilon_l2")?,
            strategy: mix_from_wire(m.strategy)?,
            fraction: fraction_from_wire(m.fraction, "defense.mixed.fraction")?,
        },
    };
    let inference_noise = match non_negative(d.inference_noise, "defense.inference_noise")? {
        s if s > 0.0 => Some(s),
        _ => None,
    };
    let denoiser = d.denoiser.as_ref().map(denoiser_from_wire).transpose()?;
    Ok(Defense {
        method,
        inference_noise,
        denoiser,
    })
}

fn optimizer_from_wire(o: Option<&pb::training_spec::Optimizer>) -> Result<Optimizer, WireError> {
    Ok(match o.ok_or(WireError::Missing("training.optimizer"))? {
        pb::training_spec::Optimizer::Sgd(s) => Optimizer::Sgd {
            momentum: non_negative(s.momentum, "training.sgd.momentum")?,
            weight_decay: non_negative(s.weight_decay, "training.sgd.weight_decay")?,
            nesterov: s.nesterov,
        },
        pb::training_spec::Optimizer::Adam(a) => {
            for (beta, field) in [
                (a.beta1, "training.adam.beta1"),
                (a.beta2, "training.adam.beta2"),
            ] {
                if !(0.0..1.0).contains(&beta) {
                    return Err(invalid(field, format!("{beta} is not in [0, 1)")));
                }
            }
            Optimizer::Adam {
                beta1: a.beta1,
                beta2: a.beta2,
                weight_decay: non_negative(a.weight_decay, "training.adam.weight_decay")?,
            }
        }
    })
}

fn schedule_from_wire(s: Option<&pb::lr_schedule::Kind>) -> Result<LrSchedule, WireError> {
    Ok(match s {
        None | Some(pb::lr_schedule::Kind::Constant(_)) => LrSchedule::Constant,
        Some(pb::lr_schedule::Kind::Step(s)) => LrSchedule::Step {
            every_epochs: in_range(
                s.every_epochs,
                1,
                u32::MAX,
                "training.schedule.step.every_epochs",
            )?,
            gamma: positive(s.gamma, "training.schedule.step.gamma")?,
        },
        Some(pb::lr_schedule::Kind::Cosine(_)) => LrSchedule::Cosine,
        Some(pb::lr_schedule::Kind::OneCycle(_)) => LrSchedule::OneCycle,
    })
}

pub fn training_from_wire(t: &pb::TrainingSpec) -> Result<TrainingSpec, WireError> {
    let epochs = in_range(t.epochs, 1, MAX_EPOCHS, "training.epochs")?;
    let batch_size = in_range(t.batch_size, 1, MAX_BATCH_SIZE, "training.batch_size")?;
    let optimizer = optimizer_from_wire(t.optimizer.as_ref())?;
    let schedule = schedule_from_wire(t.schedule.as_ref().and_then(|s| s.kind.as_ref()))?;
    Ok(TrainingSpec {
        epochs,
        batch_size,
        learning_rate: positive(t.learning_rate, "training.learning_rate")?,
        optimizer,
        schedule,
        augment: t.augment,
        eval_batch_size: at_most(
            t.eval_batch_size,
            MAX_BATCH_SIZE,
            "training.eval_batch_size",
        )?
        .max(1),
        checkpoint_every: t.checkpoint_every.max(1),
        precision: match pb::Precision::try_from(t.precision) {
            Ok(pb::Precision::Fp32) => Precision::Fp32,
            Ok(pb::Precision::Bf16) => Precision::Bf16,
            Err(_) => {
                return Err(invalid(
                    "training.precision",
                    format!("unknown precision {}", t.precision),
                ));
            }
        },
    })
}

pub fn data_from_wire(d: &pb::DataSpec) -> Result<DataSpec, WireError> {
    let source = match d.source.as_ref().ok_or(WireError::Missing("data.source"))? {
        pb::data_spec::Source::Synthetic(s) => {
            for (size, field) in [
                (s.train_size, "data.synthetic.train_size"),
                (s.test_size, "data.synthetic.test_size"),
            ] {
                in_range(size, 1, MAX_SYNTHETIC_IMAGES, field)?;
            }
            DataSource::Synthetic {
                seed: s.seed,
                train_size: s.train_size,
                test_size: s.test_size,
            }
        }
        pb::data_spec::Source::Cifar10Binary(c) => {
            check_path(&c.path, "data.cifar10_binary.path")?;
            DataSource::Cifar10Binary {
                path: c.path.clone(),
            }
        }
        pb::data_spec::Source::ImageFolder(f) => {
            check_path(&f.path, "data.image_folder.path")?;
            DataSource::ImageFolder {
                path: f.path.clone(),
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
    check_id(&c.cell_id, "cell.cell_id")?;
    check_name(&c.attack_name, "cell.attack_name")?;
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
    check_id(&r.run_id, "run.run_id")?;
    check_name(&r.sweep_id, "run.sweep_id")?;
    check_name(&r.model_name, "run.model_name")?;
    check_name(&r.defense_name, "run.defense_name")?;
    if r.cells.len() > MAX_CELLS_PER_RUN {
        return Err(invalid(
            "run.cells",
            format!("{} cells, more than {MAX_CELLS_PER_RUN}", r.cells.len()),
        ));
    }
    let model = model_from_wire(r.model.as_ref().ok_or(WireError::Missing("run.model"))?)?;
    let epsilon_space = match pb::EpsilonSpace::try_from(r.epsilon_space) {
        Ok(pb::EpsilonSpace::Pixel | pb::EpsilonSpace::Unspecified) => EpsilonSpace::Pixel,
        Ok(pb::EpsilonSpace::Normalized) => EpsilonSpace::Normalized,
        Err(_) => {
            return Err(invalid(
                "run.epsilon_space",
                format!("unknown space {}", r.epsilon_space),
            ));
        }
    };
    let run = RunSpec {
        id: r.run_id.clone(),
        model_name: if r.model_name.is_empty() {
            model.name.clone()
        } else {
            r.model_name.clone()
        },
        model,
        epsilon_space,
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

/// An epoch as shown by `status` and reports: no validation (what the coordinator stored).
/// Reports from workers go through [`epoch_metrics_from_wire`].
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

/// An accuracy: in [0, 1], or NaN when it was not measured.
fn accuracy_or_nan(value: f64, field: &'static str) -> Result<f64, WireError> {
    if value.is_nan() || (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(invalid(field, format!("{value} is not in [0, 1] (or NaN)")))
    }
}

/// A training loss: non-negative, or NaN / +∞ for a diverged run (kept as data).
fn loss(value: f64, field: &'static str) -> Result<f64, WireError> {
    if value.is_nan() || value >= 0.0 {
        Ok(value)
    } else {
        Err(invalid(
            field,
            format!("{value} is negative (a loss is ≥ 0, or NaN / inf when diverged)"),
        ))
    }
}

fn finite_non_negative(value: f64, field: &'static str) -> Result<f64, WireError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(invalid(
            field,
            format!("{value} is not a finite non-negative number"),
        ))
    }
}

/// An epoch reported by a worker, validated (see the module docs for the NaN policy).
pub fn epoch_metrics_from_wire(m: &pb::EpochMetrics) -> Result<EpochMetrics, WireError> {
    Ok(EpochMetrics {
        epoch: in_range(m.epoch, 1, MAX_EPOCHS, "epochs.epoch")?,
        train_loss: loss(m.train_loss, "epochs.train_loss")?,
        train_accuracy: accuracy_or_nan(m.train_accuracy, "epochs.train_accuracy")?,
        test_accuracy: accuracy_or_nan(m.test_accuracy, "epochs.test_accuracy")?,
        seconds: finite_non_negative(m.seconds, "epochs.seconds")?,
        images_per_second: finite_non_negative(m.images_per_second, "epochs.images_per_second")?,
    })
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
        finite_non_negative(value, field)?;
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

    fn pgd(norm: Norm) -> Attack {
        Attack::Pgd {
            norm,
            steps: 7,
            step: StepSize::FractionOfEpsilon(0.25),
            random_start: true,
            restarts: 2,
            eot: 1,
        }
    }

    fn sample_run() -> (RunSpec, Vec<CellSpec>) {
        let run = RunSpec {
            id: "r1".into(),
            model_name: "noisy-resnet18".into(),
            model: Model {
                name: "resnet18".into(),
                noise: Some(NoiseInjection {
                    sigma: 0.1,
                    layers: vec!["input".into(), "layer1".into()],
                    learnable: true,
                }),
            },
            defense_name: "at-mixed".into(),
            defense: Defense {
                method: TrainingMethod::Mixed {
                    linf: pgd(Norm::Linf),
                    l2: pgd(Norm::L2),
                    epsilon_linf: 0.03,
                    epsilon_l2: 0.5,
                    strategy: MixStrategy::WorstPerExample,
                    fraction: 1.0,
                },
                inference_noise: Some(0.05),
                denoiser: Some(DenoiserSpec {
                    blocks: 10,
                    channels: 64,
                    attack: pgd(Norm::Linf),
                    epsilon: 0.03,
                    epochs: 5,
                    learning_rate: 1e-3,
                    pairs_per_epoch: 2000,
                }),
            },
            training: TrainingSpec {
                epochs: 3,
                batch_size: 64,
                learning_rate: 0.05,
                optimizer: Optimizer::Adam {
                    beta1: 0.9,
                    beta2: 0.999,
                    weight_decay: 5e-4,
                },
                schedule: LrSchedule::Step {
                    every_epochs: 2,
                    gamma: 0.1,
                },
                augment: true,
                eval_batch_size: 500,
                checkpoint_every: 2,
                precision: crate::Precision::Fp32,
            },
            data: DataSpec {
                source: DataSource::ImageFolder {
                    path: "/data/cifar".into(),
                },
                eval_limit: 1000,
                train_limit: 0,
            },
            seed: 7,
            epsilon_space: EpsilonSpace::Normalized,
        };
        let cells = vec![CellSpec {
            id: "c1".into(),
            run_id: "r1".into(),
            attack_name: "fgsm".into(),
            attack: Attack::Fgsm {
                norm: Norm::Linf,
                random_start: false,
                step_fraction: 1.0,
                eot: 8,
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
