//! Wire → vocabulary: the structure (a missing message, an unknown enum value) is checked
//! here, proto3's zero defaults are filled in, and the values are then judged by the types'
//! `validate()` ([`crate::validate`]), the same rules the sweep-file resolver applies.

use advsweep_proto::v1 as pb;

use super::{MAX_CELLS_PER_RUN, WireError};
use crate::ids::RunId;
use crate::limits::MAX_CASCADE_STAGES;
use crate::validate::{self, invalid};
use crate::{
    ApgdLoss, Attack, CascadeVersion, CellSpec, DataShard, DataSource, DataSpec, Defense,
    DenoiserSpec, EpsilonSpace, InferenceDefense, InputNormalization, LrSchedule, MixStrategy,
    Model, ModelFile, ModelFormat, NoiseInjection, Norm, Optimizer, Precision, RunSpec, StepSize,
    TrainingMethod, TrainingSpec,
};

fn norm_from_wire(norm: i32, field: &'static str) -> Result<Norm, WireError> {
    match pb::Norm::try_from(norm) {
        Ok(pb::Norm::Linf) => Ok(Norm::Linf),
        Ok(pb::Norm::L2) => Ok(Norm::L2),
        _ => Err(invalid(field, format!("unknown norm {norm}"))),
    }
}

fn required<'a, T>(value: Option<&'a T>, field: &'static str) -> Result<&'a T, WireError> {
    value.ok_or(WireError::Missing(field))
}

/// The attack as sent: 0 restarts or EOT samples mean 1 (not validated).
fn attack_structure(a: &pb::AttackSpec) -> Result<Attack, WireError> {
    Ok(match required(a.kind.as_ref(), "attack.kind")? {
        pb::attack_spec::Kind::None(_) => Attack::None,
        pb::attack_spec::Kind::Fgsm(f) => Attack::Fgsm {
            norm: norm_from_wire(f.norm, "attack.fgsm.norm")?,
            random_start: f.random_start,
            step_fraction: f.step_fraction,
            eot: f.eot_samples.max(1),
        },
        pb::attack_spec::Kind::Pgd(p) => Attack::Pgd {
            norm: norm_from_wire(p.norm, "attack.pgd.norm")?,
            steps: p.steps,
            // A positive step_size wins; otherwise the step is a fraction of ε.
            step: if p.step_size > 0.0 {
                StepSize::Absolute(p.step_size)
            } else {
                StepSize::FractionOfEpsilon(p.step_fraction)
            },
            random_start: p.random_start,
            restarts: p.restarts.max(1),
            eot: p.eot_samples.max(1),
        },
        pb::attack_spec::Kind::Apgd(a) => Attack::Apgd {
            norm: norm_from_wire(a.norm, "attack.apgd.norm")?,
            loss: match a.loss.as_str() {
                "ce" => ApgdLoss::Ce,
                "dlr" => ApgdLoss::Dlr,
                other => {
                    return Err(invalid(
                        "attack.apgd.loss",
                        format!(
                            "unknown loss {} (known: ce, dlr)",
                            validate::shown(other, 32)
                        ),
                    ));
                }
            },
            targets: a.targets,
            steps: a.steps,
            restarts: a.restarts.max(1),
            eot: a.eot_samples.max(1),
        },
        pb::attack_spec::Kind::Fab(f) => Attack::Fab {
            norm: norm_from_wire(f.norm, "attack.fab.norm")?,
            targets: f.targets,
            steps: f.steps,
            restarts: f.restarts.max(1),
            eot: f.eot_samples.max(1),
        },
        pb::attack_spec::Kind::Square(q) => Attack::Square {
            norm: norm_from_wire(q.norm, "attack.square.norm")?,
            queries: q.queries,
            p_init: q.p_init,
            restarts: q.restarts.max(1),
        },
        pb::attack_spec::Kind::Autoattack(c) => Attack::AutoAttack {
            norm: norm_from_wire(c.norm, "attack.autoattack.norm")?,
            version: match c.version.as_str() {
                "custom" => CascadeVersion::Custom,
                named => CascadeVersion::named(named).ok_or_else(|| {
                    invalid(
                        "attack.autoattack.version",
                        format!(
                            "unknown version {} (known: {}, custom)",
                            validate::shown(named, 32),
                            CascadeVersion::NAMED.map(CascadeVersion::as_str).join(", ")
                        ),
                    )
                })?,
            },
            stages: {
                if c.stages.len() > MAX_CASCADE_STAGES {
                    return Err(invalid(
                        "attack.autoattack.stages",
                        format!("{} stages, more than {MAX_CASCADE_STAGES}", c.stages.len()),
                    ));
                }
                // A stage holding a cascade is refused by `validate`; decoding it first is
                // bounded by prost's recursion limit.
                c.stages
                    .iter()
                    .map(attack_structure)
                    .collect::<Result<_, _>>()?
            },
        },
    })
}

fn required_attack(a: Option<&pb::AttackSpec>, field: &'static str) -> Result<Attack, WireError> {
    attack_structure(required(a, field)?)
}

pub fn attack_from_wire(a: &pb::AttackSpec) -> Result<Attack, WireError> {
    let attack = attack_structure(a)?;
    attack.validate()?;
    Ok(attack)
}

fn model_structure(m: &pb::ModelSpec) -> Result<Model, WireError> {
    Ok(Model {
        name: m.name.clone(),
        noise: m.noise.as_ref().map(|n| NoiseInjection {
            sigma: n.sigma,
            layers: n.layers.clone(),
            learnable: n.learnable,
        }),
        file: m.file.as_ref().map(model_file_structure).transpose()?,
    })
}

fn model_file_structure(f: &pb::ModelFile) -> Result<ModelFile, WireError> {
    Ok(ModelFile {
        format: match pb::ModelFormat::try_from(f.format) {
            Ok(pb::ModelFormat::Torchscript) => ModelFormat::TorchScript,
            Ok(pb::ModelFormat::Safetensors) => ModelFormat::Safetensors,
            _ => {
                return Err(invalid(
                    "run.model.file.format",
                    format!("unknown model file format {}", f.format),
                ));
            }
        },
        sha256: f.sha256.clone(),
        bytes: f.bytes,
        normalize: f.normalize.as_ref().map(|n| InputNormalization {
            mean: n.mean.clone(),
            std: n.std.clone(),
        }),
    })
}

pub fn model_from_wire(m: &pb::ModelSpec) -> Result<Model, WireError> {
    let model = model_structure(m)?;
    model.validate()?;
    Ok(model)
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

fn method_structure(kind: &pb::defense_spec::Kind) -> Result<TrainingMethod, WireError> {
    Ok(match kind {
        pb::defense_spec::Kind::Standard(_) => TrainingMethod::Standard,
        pb::defense_spec::Kind::Adversarial(a) => TrainingMethod::Adversarial {
            attack: required_attack(a.attack.as_ref(), "defense.adversarial.attack")?,
            epsilon: a.epsilon,
            fraction: a.fraction,
        },
        pb::defense_spec::Kind::Mixed(m) => TrainingMethod::Mixed {
            linf: required_attack(m.linf.as_ref(), "defense.mixed.linf")?,
            l2: required_attack(m.l2.as_ref(), "defense.mixed.l2")?,
            epsilon_linf: m.epsilon_linf,
            epsilon_l2: m.epsilon_l2,
            strategy: mix_from_wire(m.strategy)?,
            fraction: m.fraction,
        },
    })
}

fn denoiser_structure(n: &pb::DenoiserSpec) -> Result<DenoiserSpec, WireError> {
    Ok(DenoiserSpec {
        blocks: n.blocks,
        channels: n.channels,
        attack: required_attack(n.attack.as_ref(), "defense.denoiser.attack")?,
        epsilon: n.epsilon,
        epochs: n.epochs,
        learning_rate: n.learning_rate,
        pairs_per_epoch: n.pairs_per_epoch,
    })
}

fn defense_structure(d: &pb::DefenseSpec) -> Result<Defense, WireError> {
    Ok(Defense {
        method: method_structure(required(d.kind.as_ref(), "defense.kind")?)?,
    })
}

/// An inference defense from its fields (a cell's, or a legacy run-wide one); 0 (proto3's
/// unset) is no inference noise.
fn inference_structure(
    inference_noise: f64,
    denoiser: Option<&pb::DenoiserSpec>,
) -> Result<InferenceDefense, WireError> {
    Ok(InferenceDefense {
        inference_noise: (inference_noise != 0.0).then_some(inference_noise),
        denoiser: denoiser.map(denoiser_structure).transpose()?,
    })
}

/// A cell status's inference defense, for display (no validation: what the coordinator
/// stored); empty when it is not readable.
pub fn inference_from_status(c: &pb::CellStatus) -> InferenceDefense {
    inference_structure(c.inference_noise, c.denoiser.as_ref()).unwrap_or_default()
}

pub fn defense_from_wire(d: &pb::DefenseSpec) -> Result<Defense, WireError> {
    let defense = defense_structure(d)?;
    defense.validate()?;
    Ok(defense)
}

fn optimizer_structure(o: &pb::training_spec::Optimizer) -> Optimizer {
    match o {
        pb::training_spec::Optimizer::Sgd(s) => Optimizer::Sgd {
            momentum: s.momentum,
            weight_decay: s.weight_decay,
            nesterov: s.nesterov,
        },
        pb::training_spec::Optimizer::Adam(a) => Optimizer::Adam {
            beta1: a.beta1,
            beta2: a.beta2,
            weight_decay: a.weight_decay,
        },
    }
}

fn schedule_structure(s: Option<&pb::lr_schedule::Kind>) -> LrSchedule {
    match s {
        None | Some(pb::lr_schedule::Kind::Constant(_)) => LrSchedule::Constant,
        Some(pb::lr_schedule::Kind::Step(s)) => LrSchedule::Step {
            every_epochs: s.every_epochs,
            gamma: s.gamma,
        },
        Some(pb::lr_schedule::Kind::Cosine(_)) => LrSchedule::Cosine,
        Some(pb::lr_schedule::Kind::OneCycle(_)) => LrSchedule::OneCycle,
    }
}

fn precision_from_wire(precision: i32) -> Result<Precision, WireError> {
    match pb::Precision::try_from(precision) {
        Ok(pb::Precision::Fp32) => Ok(Precision::Fp32),
        Ok(pb::Precision::Bf16) => Ok(Precision::Bf16),
        Err(_) => Err(invalid(
            "training.precision",
            format!("unknown precision {precision}"),
        )),
    }
}

/// 0 evaluation batch size and 0 checkpoint interval (proto3's unset) mean 1.
fn training_structure(t: &pb::TrainingSpec) -> Result<TrainingSpec, WireError> {
    Ok(TrainingSpec {
        epochs: t.epochs,
        batch_size: t.batch_size,
        learning_rate: t.learning_rate,
        optimizer: optimizer_structure(required(t.optimizer.as_ref(), "training.optimizer")?),
        schedule: schedule_structure(t.schedule.as_ref().and_then(|s| s.kind.as_ref())),
        augment: t.augment,
        eval_batch_size: t.eval_batch_size.max(1),
        checkpoint_every: t.checkpoint_every.max(1),
        precision: precision_from_wire(t.precision)?,
    })
}

pub fn training_from_wire(t: &pb::TrainingSpec) -> Result<TrainingSpec, WireError> {
    let training = training_structure(t)?;
    training.validate()?;
    Ok(training)
}

fn data_structure(d: &pb::DataSpec) -> Result<DataSpec, WireError> {
    let source = match required(d.source.as_ref(), "data.source")? {
        pb::data_spec::Source::Synthetic(s) => DataSource::Synthetic {
            seed: s.seed,
            train_size: s.train_size,
            test_size: s.test_size,
        },
        pb::data_spec::Source::Cifar10Binary(c) => DataSource::Cifar10Binary {
            path: c.path.clone(),
        },
        pb::data_spec::Source::Cifar100Binary(c) => DataSource::Cifar100Binary {
            path: c.path.clone(),
        },
        pb::data_spec::Source::ImageFolder(f) => DataSource::ImageFolder {
            path: f.path.clone(),
        },
    };
    Ok(DataSpec {
        source,
        eval_limit: d.eval_limit,
        train_limit: d.train_limit,
        shard: d.shard.map(|s| DataShard {
            index: s.index,
            count: s.count,
        }),
    })
}

pub fn data_from_wire(d: &pb::DataSpec) -> Result<DataSpec, WireError> {
    let data = data_structure(d)?;
    data.validate()?;
    Ok(data)
}

pub fn cell_from_wire(run_id: &RunId, c: &pb::CellSpec) -> Result<CellSpec, WireError> {
    let attack = required_attack(c.attack.as_ref(), "cell.attack")?;
    let cell = CellSpec {
        id: crate::ids::parse_field("cell.cell_id", &c.cell_id)?,
        run_id: run_id.clone(),
        attack_name: c.attack_name.clone(),
        attack,
        epsilon: c.epsilon,
        defense_name: c.defense_name.clone(),
        inference: inference_structure(c.inference_noise, c.denoiser.as_ref())?,
    };
    cell.validate()?;
    Ok(cell)
}

/// Unknown values are pixel space (the default), for display; [`run_from_wire`] rejects them.
pub fn epsilon_space_from_wire(space: i32) -> EpsilonSpace {
    match pb::EpsilonSpace::try_from(space) {
        Ok(pb::EpsilonSpace::Normalized) => EpsilonSpace::Normalized,
        _ => EpsilonSpace::Pixel,
    }
}

/// Decodes a leased run and its cells.
pub fn run_from_wire(r: &pb::RunSpec) -> Result<(RunSpec, Vec<CellSpec>), WireError> {
    validate::name("run.sweep_id", &r.sweep_id)?;
    if r.cells.len() > MAX_CELLS_PER_RUN {
        return Err(invalid(
            "run.cells",
            format!("{} cells, more than {MAX_CELLS_PER_RUN}", r.cells.len()),
        ));
    }
    let model = model_structure(required(r.model.as_ref(), "run.model")?)?;
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
    let defense_spec = required(r.defense.as_ref(), "run.defense")?;
    let defense = defense_structure(defense_spec)?;
    // A coordinator from before cells carried their own inference defense sends one for the
    // whole run: every cell that carries none gets it.
    let legacy = inference_structure(defense_spec.inference_noise, defense_spec.denoiser.as_ref())?;
    let training = training_structure(required(r.training.as_ref(), "run.training")?)?;
    let data = data_structure(required(r.data.as_ref(), "run.data")?)?;
    let run = RunSpec {
        id: crate::ids::parse_field("run.run_id", &r.run_id)?,
        model_name: if r.model_name.is_empty() {
            model.name.clone()
        } else {
            r.model_name.clone()
        },
        model,
        epsilon_space,
        defense_name: r.defense_name.clone(),
        defense,
        training,
        data,
        seed: r.seed,
    };
    run.validate()?;
    let cells = r
        .cells
        .iter()
        .map(|c| {
            let mut cell = cell_from_wire(&run.id, c)?;
            if cell.inference.is_empty() {
                cell.inference = legacy.clone();
            }
            if cell.defense_name.is_empty() {
                cell.defense_name = run.defense_name.clone();
            }
            cell.validate_in_run(&run)?;
            Ok(cell)
        })
        .collect::<Result<Vec<_>, WireError>>()?;
    Ok((run, cells))
}
