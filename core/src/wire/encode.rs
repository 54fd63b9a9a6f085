//! Vocabulary → wire: total, no checks (what the coordinator stored was validated when its
//! sweep file was resolved).

use advsweep_proto::v1 as pb;

use crate::ids::SweepId;
use crate::{
    Attack, CellSpec, DataSource, DataSpec, Defense, DenoiserSpec, EpsilonSpace, LrSchedule,
    MixStrategy, Model, ModelFormat, Norm, Optimizer, Precision, RunSpec, StepSize, TrainingMethod,
    TrainingSpec,
};

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
        Attack::Apgd {
            norm,
            loss,
            targets,
            steps,
            restarts,
            eot,
        } => pb::attack_spec::Kind::Apgd(pb::Apgd {
            norm: norm_to_wire(*norm),
            loss: loss.as_str().to_owned(),
            targets: *targets,
            steps: *steps,
            restarts: *restarts,
            eot_samples: *eot,
        }),
        Attack::Fab {
            norm,
            targets,
            steps,
            restarts,
            eot,
        } => pb::attack_spec::Kind::Fab(pb::Fab {
            norm: norm_to_wire(*norm),
            targets: *targets,
            steps: *steps,
            restarts: *restarts,
            eot_samples: *eot,
        }),
        Attack::Square {
            norm,
            queries,
            p_init,
            restarts,
        } => pb::attack_spec::Kind::Square(pb::Square {
            norm: norm_to_wire(*norm),
            queries: *queries,
            p_init: *p_init,
            restarts: *restarts,
        }),
        Attack::AutoAttack {
            norm,
            version,
            stages,
        } => pb::attack_spec::Kind::Autoattack(pb::AutoAttack {
            norm: norm_to_wire(*norm),
            version: version.as_str().to_owned(),
            stages: stages.iter().map(attack_to_wire).collect(),
        }),
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
        file: model.file.as_ref().map(|f| pb::ModelFile {
            format: match f.format {
                ModelFormat::TorchScript => pb::ModelFormat::Torchscript,
                ModelFormat::Safetensors => pb::ModelFormat::Safetensors,
            } as i32,
            sha256: f.sha256.clone(),
            bytes: f.bytes,
            normalize: f.normalize.as_ref().map(|n| pb::InputNormalization {
                mean: n.mean.clone(),
                std: n.std.clone(),
            }),
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
    // The legacy run-wide inference defense (fields 4, 5) stays unset: cells carry their own.
    pb::DefenseSpec {
        kind: Some(kind),
        inference_noise: 0.0,
        denoiser: None,
    }
}

/// A denoiser into its message.
pub fn denoiser_to_wire(d: &DenoiserSpec) -> pb::DenoiserSpec {
    pb::DenoiserSpec {
        blocks: d.blocks,
        channels: d.channels,
        attack: Some(attack_to_wire(&d.attack)),
        epsilon: d.epsilon,
        epochs: d.epochs,
        learning_rate: d.learning_rate,
        pairs_per_epoch: d.pairs_per_epoch,
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
        DataSource::Cifar100Binary { path } => {
            pb::data_spec::Source::Cifar100Binary(pb::Cifar100Binary { path: path.clone() })
        }
        DataSource::ImageFolder { path } => {
            pb::data_spec::Source::ImageFolder(pb::ImageFolder { path: path.clone() })
        }
    };
    pb::DataSpec {
        source: Some(source),
        eval_limit: d.eval_limit,
        train_limit: d.train_limit,
        shard: d.shard.map(|s| pb::DataShard {
            index: s.index,
            count: s.count,
        }),
    }
}

pub fn cell_to_wire(c: &CellSpec) -> pb::CellSpec {
    pb::CellSpec {
        cell_id: c.id.to_string(),
        attack_name: c.attack_name.clone(),
        attack: Some(attack_to_wire(&c.attack)),
        epsilon: c.epsilon,
        defense_name: c.defense_name.clone(),
        inference_noise: c.inference.inference_noise.unwrap_or(0.0),
        denoiser: c.inference.denoiser.as_ref().map(denoiser_to_wire),
    }
}

pub fn epsilon_space_to_wire(space: EpsilonSpace) -> i32 {
    match space {
        EpsilonSpace::Pixel => pb::EpsilonSpace::Pixel as i32,
        EpsilonSpace::Normalized => pb::EpsilonSpace::Normalized as i32,
    }
}

/// A run with the cells the worker must evaluate on it.
pub fn run_to_wire(run: &RunSpec, sweep_id: &SweepId, cells: &[CellSpec]) -> pb::RunSpec {
    pb::RunSpec {
        run_id: run.id.to_string(),
        sweep_id: sweep_id.to_string(),
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
