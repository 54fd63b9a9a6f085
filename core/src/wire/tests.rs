//! Round trips and named errors.

use advsweep_proto::v1 as pb;

use super::*;
use crate::{
    Attack, CellId, CellSpec, DataSource, DataSpec, Defense, DenoiserSpec, EpsilonSpace,
    InferenceDefense, LrSchedule, MixStrategy, Model, NoiseInjection, Norm, Optimizer, RunId,
    RunSpec, StepSize, SweepId, TrainingMethod, TrainingSpec,
};

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

fn run_id() -> RunId {
    RunId::new("r-0000000000000001").expect("a run id")
}

fn sweep_id() -> SweepId {
    SweepId::new("s-0000000000000001").expect("a sweep id")
}

fn sample_run() -> (RunSpec, Vec<CellSpec>) {
    let run = RunSpec {
        id: run_id(),
        model_name: "noisy-resnet18".into(),
        model: Model {
            name: "resnet18".into(),
            noise: Some(NoiseInjection {
                sigma: 0.1,
                layers: vec!["input".into(), "layer1".into()],
                learnable: true,
            }),
            file: None,
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
            shard: None,
        },
        seed: 7,
        epsilon_space: EpsilonSpace::Normalized,
    };
    let cells = vec![CellSpec {
        id: CellId::new("c-0000000000000001").expect("a cell id"),
        run_id: run_id(),
        attack_name: "fgsm".into(),
        attack: Attack::Fgsm {
            norm: Norm::Linf,
            random_start: false,
            step_fraction: 1.0,
            eot: 8,
        },
        epsilon: 0.03,
        defense_name: "at-mixed-denoised".into(),
        inference: InferenceDefense {
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
    }];
    (run, cells)
}

/// A coordinator from before cells carried their own inference defense sends it for the whole
/// run: every cell without one gets it, and the run's defense name.
#[test]
fn a_run_wide_inference_defense_reaches_every_cell() {
    let (run, mut cells) = sample_run();
    let inference = std::mem::take(&mut cells[0].inference);
    cells[0].defense_name.clear();
    let mut wire = run_to_wire(&run, &sweep_id(), &cells);
    let defense = wire.defense.as_mut().expect("a defense");
    defense.inference_noise = 0.05;
    defense.denoiser = inference
        .denoiser
        .as_ref()
        .map(crate::wire::denoiser_to_wire);
    let (_, decoded) = run_from_wire(&wire).expect("decodes");
    assert_eq!(decoded[0].inference, inference);
    assert_eq!(decoded[0].defense_name, "at-mixed");
}

#[test]
fn a_run_survives_the_round_trip() {
    let (run, cells) = sample_run();
    let wire = run_to_wire(&run, &sweep_id(), &cells);
    assert_eq!(run_from_wire(&wire), Ok((run, cells)));
}

#[test]
fn ids_are_parsed_naming_the_field() {
    let (run, cells) = sample_run();
    let mut wire = run_to_wire(&run, &sweep_id(), &cells);
    wire.run_id = "r1".into();
    let e = run_from_wire(&wire).expect_err("not a run id");
    assert_eq!(
        e.to_string(),
        "field `run.run_id` is invalid: \"r1\" is not a run id (`r-` and 16 lowercase hex digits)"
    );
    wire.run_id = String::new();
    let e = run_from_wire(&wire).expect_err("no run id");
    assert_eq!(e.to_string(), "missing field `run.run_id`");
    let mut wire = run_to_wire(&run, &sweep_id(), &cells);
    wire.cells[0].cell_id = run.id.to_string();
    let e = run_from_wire(&wire).expect_err("a run id as a cell id");
    assert_eq!(e.field(), "cell.cell_id");
}

#[test]
fn missing_fields_are_named() {
    let (run, cells) = sample_run();
    let mut wire = run_to_wire(&run, &sweep_id(), &cells);
    wire.training = None;
    assert_eq!(
        run_from_wire(&wire)
            .expect_err("must be rejected")
            .to_string(),
        "missing field `run.training`"
    );
    let mut wire = run_to_wire(&run, &sweep_id(), &cells);
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

#[test]
fn stage_accuracies_round_trip_and_are_checked() {
    let good = pb::CellResult {
        accuracy: 0.4,
        stages: vec![
            pb::StageAccuracy {
                name: "apgd-ce".into(),
                accuracy: 0.45,
            },
            pb::StageAccuracy {
                name: "square".into(),
                accuracy: 0.4,
            },
        ],
        ..Default::default()
    };
    let decoded = cell_result_from_wire(&good).expect("valid");
    assert_eq!(decoded.stages.len(), 2);
    assert_eq!(crate::wire::cell_result_to_wire(&decoded), good);
    for (name, accuracy, field) in [
        ("", 0.3, "result.stages.name"),
        ("apgd-ce", 1.5, "result.stages.accuracy"),
        ("apgd-ce", f64::NAN, "result.stages.accuracy"),
    ] {
        let bad = pb::CellResult {
            stages: vec![pb::StageAccuracy {
                name: name.into(),
                accuracy,
            }],
            ..Default::default()
        };
        let err = cell_result_from_wire(&bad).expect_err("invalid");
        assert_eq!(err.field(), field, "{err}");
    }
}

#[test]
fn autoattack_presets_round_trip_and_bad_ones_name_their_field() {
    use crate::catalogue::presets;
    for name in presets::attack_names() {
        let attack = presets::attack(name).expect("built in");
        let decoded = crate::wire::attack_from_wire(&crate::wire::attack_to_wire(attack))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&decoded, attack, "{name}");
    }
    let apgd = |targets: u32, steps: u32| crate::Attack::Apgd {
        norm: crate::Norm::Linf,
        loss: crate::ApgdLoss::Dlr,
        targets,
        steps,
        restarts: 1,
        eot: 1,
    };
    let square = crate::Attack::Square {
        norm: crate::Norm::Linf,
        queries: 0,
        p_init: 0.8,
        restarts: 1,
    };
    let nested = crate::Attack::AutoAttack {
        norm: crate::Norm::Linf,
        version: crate::CascadeVersion::Custom,
        stages: vec![presets::attack("autoattack").cloned().expect("built in")],
    };
    let mixed_norms = crate::Attack::AutoAttack {
        norm: crate::Norm::L2,
        version: crate::CascadeVersion::Custom,
        stages: vec![apgd(0, 100)],
    };
    for (attack, field) in [
        (apgd(0, 0), "attack.apgd.steps"),
        (apgd(10, 100), "attack.apgd.targets"),
        (square, "attack.square.queries"),
        (nested, "attack.autoattack.stages"),
        (mixed_norms, "attack.autoattack.stages"),
    ] {
        let err = crate::wire::attack_from_wire(&crate::wire::attack_to_wire(&attack))
            .expect_err("invalid");
        assert_eq!(err.field(), field, "{err}");
    }
    let mut unknown = crate::wire::attack_to_wire(presets::attack("autoattack").expect("built in"));
    if let Some(pb::attack_spec::Kind::Autoattack(c)) = unknown.kind.as_mut() {
        c.version = "plus-plus".into();
    }
    let err = crate::wire::attack_from_wire(&unknown).expect_err("unknown version");
    assert_eq!(err.field(), "attack.autoattack.version");
    let message = err.to_string();
    for known in ["standard", "plus", "rand", "custom"] {
        assert!(message.contains(known), "{message}");
    }
}

/// The plus cascade travels as `version = "plus"` with its six stages, the untargeted FAB
/// (`targets = 0`) among them; a FAB wanting more targets than wrong classes is refused.
#[test]
fn the_plus_cascade_and_untargeted_fab_travel() {
    use crate::catalogue::presets;
    let plus = presets::attack("autoattack-plus-l2").expect("built in");
    let wire = crate::wire::attack_to_wire(plus);
    let Some(pb::attack_spec::Kind::Autoattack(c)) = wire.kind.as_ref() else {
        panic!("a cascade on the wire");
    };
    assert_eq!(c.version, "plus");
    assert_eq!(c.stages.len(), 6);
    let decoded = crate::wire::attack_from_wire(&wire).expect("valid");
    assert_eq!(&decoded, plus);
    assert_eq!(decoded.stages()[2].label(), "fab-l2");
    let fab = |targets: u32| crate::Attack::Fab {
        norm: crate::Norm::Linf,
        targets,
        steps: 100,
        restarts: 5,
        eot: 1,
    };
    let untargeted = crate::wire::attack_from_wire(&crate::wire::attack_to_wire(&fab(0)))
        .expect("untargeted FAB");
    assert_eq!(untargeted.label(), "fab");
    let err = crate::wire::attack_from_wire(&crate::wire::attack_to_wire(&fab(10)))
        .expect_err("10 targets of 10 classes");
    assert_eq!(err.field(), "attack.fab.targets");
    assert!(err.to_string().contains("0 (untargeted)"), "{err}");
}

#[test]
fn a_cell_chunk_round_trips_and_impossible_counts_name_their_field() {
    let chunk = crate::CellChunk {
        start: 200,
        images: 100,
        adversarial_correct: 40,
        clean_correct: 80,
        flipped: 41,
        linf_sum: 3.1,
        l2_sum: 70.0,
        stage_robust: vec![45, 42, 40],
        seconds: 12.5,
        rng_state: u64::MAX - 3,
    };
    let wire = super::cell_chunk_to_wire(&chunk);
    assert_eq!(super::cell_chunk_from_wire(&wire).expect("valid"), chunk);
    let field = |w: pb::CellChunk| {
        super::cell_chunk_from_wire(&w)
            .expect_err("invalid")
            .field()
    };
    assert_eq!(
        field(pb::CellChunk {
            images: 0,
            ..wire.clone()
        }),
        "chunk.images"
    );
    assert_eq!(
        field(pb::CellChunk {
            clean_correct: 101,
            ..wire.clone()
        }),
        "chunk.clean_correct"
    );
    assert_eq!(
        field(pb::CellChunk {
            flipped: 81,
            ..wire.clone()
        }),
        "chunk.flipped"
    );
    assert_eq!(
        field(pb::CellChunk {
            stage_robust: vec![40, 42],
            ..wire.clone()
        }),
        "chunk.stage_robust"
    );
    assert_eq!(
        field(pb::CellChunk {
            l2_sum: f64::NAN,
            ..wire.clone()
        }),
        "chunk.l2_sum"
    );
    assert_eq!(
        field(pb::CellChunk {
            stage_robust: vec![1; 64],
            ..wire
        }),
        "chunk.stage_robust"
    );
}

#[test]
fn cell_warnings_are_bounded_and_printable() {
    let result = |warnings: Vec<String>| pb::CellResult {
        accuracy: 0.5,
        examples: 10,
        warnings,
        ..Default::default()
    };
    let ok =
        super::cell_result_from_wire(&result(vec!["3 of 10 images have a zero gradient".into()]))
            .expect("a warning");
    assert_eq!(ok.warnings.len(), 1);
    for bad in [
        vec![String::new()],
        vec!["x".repeat(1001)],
        vec!["evil \u{202E}txt".into()],
        vec!["\u{1b}[31mred".into()],
        vec!["w".into(); 9],
    ] {
        let e = super::cell_result_from_wire(&result(bad.clone())).expect_err("refused");
        assert_eq!(e.field(), "result.warnings", "{bad:?}");
    }
}
