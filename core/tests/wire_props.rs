//! Property tests of wire decoding: whatever a peer sends, decoding returns a value or a
//! `WireError` naming a field, never panics; what it accepts obeys the documented bounds and
//! survives a round trip.
//!
//! Case counts: 5,000 epochs and 5,000 cell results against an oracle of the NaN policy, 3,000
//! random runs.

use advsweep_core::SweepId;
use advsweep_core::wire::{self, WireError};
use advsweep_proto::v1 as pb;
use proptest::prelude::*;
use proptest::test_runner::Config;

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.0..=1.0f64,
        2 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-0.0),
        1 => -10.0..0.0f64,
        1 => 1.0..1e6f64,
    ]
}

fn count() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..8, 1 => any::<u32>(), 1 => Just(u32::MAX)]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9-]{0,12}",
        1 => "\\PC{0,40}",
        1 => ".{0,10}",
        1 => Just("x".repeat(5000)),
        1 => Just("a\0b".to_owned()),
    ]
}

fn field_of(e: &WireError) -> &'static str {
    match e {
        WireError::Missing(f) | WireError::Invalid { field: f, .. } => f,
    }
}

proptest! {
    #![proptest_config(Config { cases: 5000, failure_persistence: None, ..Config::default() })]

    /// A diverged loss (NaN, +∞) and an unmeasured accuracy (NaN) are data; everything else out
    /// of range is refused, naming the field.
    #[test]
    fn epochs_follow_the_nan_policy_5000_cases(
        epoch in count(),
        loss in number(),
        train_accuracy in number(),
        test_accuracy in number(),
        seconds in number(),
        images_per_second in number(),
    ) {
        let m = pb::EpochMetrics { epoch, train_loss: loss, train_accuracy, test_accuracy, seconds, images_per_second };
        let accuracy_ok = |a: f64| a.is_nan() || (0.0..=1.0).contains(&a);
        let timing_ok = |t: f64| t.is_finite() && t >= 0.0;
        let expected = (1..=wire::MAX_EPOCHS).contains(&epoch)
            && (loss.is_nan() || loss >= 0.0)
            && accuracy_ok(train_accuracy)
            && accuracy_ok(test_accuracy)
            && timing_ok(seconds)
            && timing_ok(images_per_second);
        match wire::epoch_metrics_from_wire(&m) {
            Ok(decoded) => {
                prop_assert!(expected, "accepted {m:?}");
                let back = wire::epoch_to_wire(&decoded);
                prop_assert_eq!(back.epoch, m.epoch);
                prop_assert!(back.train_loss.to_bits() == m.train_loss.to_bits());
            }
            Err(e) => {
                prop_assert!(!expected, "refused {m:?}: {e}");
                prop_assert!(field_of(&e).starts_with("epochs."), "{e}");
            }
        }
    }

    #[test]
    fn cell_results_are_finite_and_in_range_5000_cases(
        accuracy in number(),
        success in number(),
        linf in number(),
        l2 in number(),
        ips in number(),
        seconds in number(),
        examples in any::<u32>(),
        counts in prop_oneof![Just(None), any::<(u32, u32)>().prop_map(Some)],
    ) {
        // Half the cases consistent counts, half anything.
        let (clean_correct, flipped) = counts.unwrap_or((examples / 2, examples / 4));
        let r = pb::CellResult {
            accuracy,
            attack_success_rate: success,
            mean_linf: linf,
            mean_l2: l2,
            images_per_second: ips,
            seconds,
            examples,
            stages: Vec::new(),
            warnings: Vec::new(),
            clean_correct,
            flipped,
        };
        let rate_ok = |v: f64| (0.0..=1.0).contains(&v);
        let size_ok = |v: f64| v.is_finite() && v >= 0.0;
        let counts_ok = clean_correct <= examples && flipped <= clean_correct;
        let expected = rate_ok(accuracy) && rate_ok(success) && [linf, l2, ips, seconds].into_iter().all(size_ok) && counts_ok;
        match wire::cell_result_from_wire(&r) {
            Ok(decoded) => {
                prop_assert!(expected, "accepted {r:?}");
                prop_assert_eq!(wire::cell_result_to_wire(&decoded), r);
            }
            Err(e) => {
                prop_assert!(!expected, "refused {r:?}: {e}");
                prop_assert!(field_of(&e).starts_with("result."), "{e}");
            }
        }
    }
}

fn attack() -> BoxedStrategy<Option<pb::AttackSpec>> {
    let kind = prop_oneof![
        Just(pb::attack_spec::Kind::None(pb::NoAttack {})),
        (count(), any::<bool>(), number(), count()).prop_map(|(norm, random_start, f, eot)| {
            pb::attack_spec::Kind::Fgsm(pb::Fgsm {
                norm: norm as i32 - 1,
                random_start,
                step_fraction: f,
                eot_samples: eot,
            })
        }),
        (count(), count(), number(), number(), count(), count()).prop_map(
            |(norm, steps, size, fraction, restarts, eot)| {
                pb::attack_spec::Kind::Pgd(pb::Pgd {
                    norm: norm as i32 - 1,
                    steps,
                    step_size: size,
                    step_fraction: fraction,
                    random_start: true,
                    restarts,
                    eot_samples: eot,
                })
            }
        ),
    ];
    proptest::option::weighted(
        0.9,
        proptest::option::weighted(0.95, kind).prop_map(|kind| pb::AttackSpec { kind }),
    )
    .boxed()
}

fn defense() -> BoxedStrategy<Option<pb::DefenseSpec>> {
    let kind = prop_oneof![
        Just(pb::defense_spec::Kind::Standard(pb::StandardTraining {})),
        (attack(), number(), number()).prop_map(|(attack, epsilon, fraction)| {
            pb::defense_spec::Kind::Adversarial(pb::AdversarialTraining {
                attack,
                epsilon,
                fraction,
            })
        }),
        (attack(), attack(), number(), number(), count(), number()).prop_map(
            |(linf, l2, epsilon_linf, epsilon_l2, strategy, fraction)| {
                pb::defense_spec::Kind::Mixed(pb::MixedAdversarialTraining {
                    linf,
                    l2,
                    epsilon_linf,
                    epsilon_l2,
                    strategy: strategy as i32 - 1,
                    fraction,
                })
            }
        ),
    ];
    let denoiser = (
        count(),
        count(),
        attack(),
        number(),
        count(),
        number(),
        count(),
    )
        .prop_map(
            |(blocks, channels, attack, epsilon, epochs, learning_rate, pairs_per_epoch)| {
                pb::DenoiserSpec {
                    blocks,
                    channels,
                    attack,
                    epsilon,
                    epochs,
                    learning_rate,
                    pairs_per_epoch,
                }
            },
        );
    proptest::option::weighted(
        0.9,
        (
            proptest::option::weighted(0.95, kind),
            number(),
            proptest::option::of(denoiser),
        )
            .prop_map(|(kind, inference_noise, denoiser)| pb::DefenseSpec {
                kind,
                inference_noise,
                denoiser,
            }),
    )
    .boxed()
}

fn training() -> BoxedStrategy<Option<pb::TrainingSpec>> {
    let optimizer = prop_oneof![
        (number(), number(), any::<bool>()).prop_map(|(momentum, weight_decay, nesterov)| {
            pb::training_spec::Optimizer::Sgd(pb::SgdOptimizer {
                momentum,
                weight_decay,
                nesterov,
            })
        }),
        (number(), number(), number()).prop_map(|(beta1, beta2, weight_decay)| {
            pb::training_spec::Optimizer::Adam(pb::AdamOptimizer {
                beta1,
                beta2,
                weight_decay,
            })
        }),
    ];
    let schedule = prop_oneof![
        Just(None),
        Just(Some(pb::lr_schedule::Kind::Cosine(pb::CosineLr {}))),
        (count(), number()).prop_map(|(every_epochs, gamma)| {
            Some(pb::lr_schedule::Kind::Step(pb::StepLr {
                every_epochs,
                gamma,
            }))
        }),
    ];
    proptest::option::weighted(
        0.9,
        (
            count(),
            count(),
            number(),
            proptest::option::weighted(0.95, optimizer),
            schedule,
            count(),
            count(),
            -2i32..4, // known precisions are 0 and 1
        )
            .prop_map(
                |(
                    epochs,
                    batch_size,
                    learning_rate,
                    optimizer,
                    kind,
                    eval_batch_size,
                    checkpoint_every,
                    precision,
                )| {
                    pb::TrainingSpec {
                        epochs,
                        batch_size,
                        learning_rate,
                        optimizer,
                        schedule: Some(pb::LrSchedule { kind }),
                        augment: false,
                        eval_batch_size,
                        checkpoint_every,
                        precision,
                    }
                },
            ),
    )
    .boxed()
}

fn data() -> BoxedStrategy<Option<pb::DataSpec>> {
    let source = prop_oneof![
        (any::<u64>(), count(), count()).prop_map(|(seed, train_size, test_size)| {
            pb::data_spec::Source::Synthetic(pb::SyntheticData {
                seed,
                train_size,
                test_size,
            })
        }),
        text().prop_map(|path| pb::data_spec::Source::Cifar10Binary(pb::Cifar10Binary { path })),
        text().prop_map(|path| pb::data_spec::Source::Cifar100Binary(pb::Cifar100Binary { path })),
        text().prop_map(|path| pb::data_spec::Source::ImageFolder(pb::ImageFolder { path })),
    ];
    proptest::option::weighted(
        0.9,
        (
            proptest::option::weighted(0.95, source),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(|(source, eval_limit, train_limit)| pb::DataSpec {
                source,
                eval_limit,
                train_limit,
                shard: None,
            }),
    )
    .boxed()
}

fn model() -> BoxedStrategy<Option<pb::ModelSpec>> {
    let noise = (
        number(),
        proptest::collection::vec(text(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(sigma, layers, learnable)| pb::NoiseInjection {
            sigma,
            layers,
            learnable,
        });
    proptest::option::weighted(
        0.9,
        (
            text(),
            proptest::option::of(noise),
            proptest::option::of(model_file()),
        )
            .prop_map(|(name, noise, file)| pb::ModelSpec { name, noise, file }),
    )
    .boxed()
}

fn model_file() -> BoxedStrategy<pb::ModelFile> {
    let stats = || proptest::collection::vec(number(), 0..5);
    let normalize = (stats(), stats()).prop_map(|(mean, std)| pb::InputNormalization { mean, std });
    (
        -1i32..4,
        prop_oneof![text(), "[0-9a-f]{64}"],
        any::<u64>(),
        proptest::option::of(normalize),
    )
        .prop_map(|(format, sha256, bytes, normalize)| pb::ModelFile {
            format,
            sha256,
            bytes,
            normalize,
        })
        .boxed()
}

fn cell() -> BoxedStrategy<pb::CellSpec> {
    (
        text(),
        text(),
        attack(),
        number(),
        proptest::option::weighted(0.5, text()),
        proptest::option::weighted(0.3, number()),
    )
        .prop_map(
            |(cell_id, attack_name, attack, epsilon, defense_name, inference_noise)| pb::CellSpec {
                cell_id,
                attack_name,
                attack,
                epsilon,
                defense_name: defense_name.unwrap_or_default(),
                inference_noise: inference_noise.unwrap_or(0.0),
                denoiser: None,
            },
        )
        .boxed()
}

proptest! {
    #![proptest_config(Config { cases: 3000, failure_persistence: None, ..Config::default() })]

    /// Random runs decode or fail on a named field; an accepted one encodes back to a run that
    /// decodes to the same value.
    #[test]
    fn random_runs_decode_or_name_a_field_3000_cases(
        run_id in text(),
        sweep_id in text(),
        model in model(),
        model_name in text(),
        space in count(),
        defense_name in text(),
        defense in defense(),
        training in training(),
        data in data(),
        seed in any::<u64>(),
        cells in proptest::collection::vec(cell(), 0..4),
    ) {
        let r = pb::RunSpec {
            run_id,
            sweep_id,
            model,
            model_name,
            epsilon_space: space as i32 - 1,
            defense_name,
            defense,
            training,
            data,
            seed,
            cells,
        };
        match wire::run_from_wire(&r) {
            Ok((run, cells)) => {
                prop_assert!(!run.id.as_str().is_empty() && run.id.as_str().len() <= wire::MAX_ID_BYTES);
                prop_assert!(run.training.epochs <= wire::MAX_EPOCHS);
                let sweep_id = r.sweep_id.parse().unwrap_or_else(|_| SweepId::from_digest(&[0; 8]));
                let again = wire::run_to_wire(&run, &sweep_id, &cells);
                prop_assert_eq!(wire::run_from_wire(&again), Ok((run, cells)));
            }
            Err(e) => prop_assert!(!field_of(&e).is_empty(), "{e}"),
        }
    }
}
