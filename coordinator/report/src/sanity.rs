//! Signs of an unsound evaluation (Carlini et al. 2019, Athalye et al. 2018, AutoAttack): the
//! checks a careful reviewer would run on a run's numbers before believing them. They are
//! warnings stored with the run's results, never silent corrections.

use advsweep_core::{
    Attack, DataSource, InferenceDefense, Norm, RunSpec, StageAccuracy, TrainingMethod,
};

use super::epsilon;

/// One evaluated cell of a run.
#[derive(Debug, Clone)]
pub struct EvaluatedCell {
    pub attack_name: String,
    pub attack: Attack,
    pub epsilon: f64,
    pub accuracy: f64,
    /// A cascade's accuracy after each stage (empty for other attacks).
    pub stages: Vec<StageAccuracy>,
    /// What the worker's checks found while evaluating it.
    pub warnings: Vec<String>,
    /// The defense preset it evaluates (a run's cells may come from several that share its
    /// classifier), and what wraps the classifier for it.
    pub defense_name: String,
    pub inference: InferenceDefense,
}

/// The black-box stage of a cascade (Square) lowering the accuracy left by the white-box
/// stages before it by more than this (0.2 points) hints at gradient masking (Croce & Hein
/// 2020: a gradient-based attack should find what a score-based one finds).
pub const BLACK_BOX_GAIN: f64 = 0.002;

/// Accuracy differences smaller than this are treated as sampling noise.
pub const TOLERANCE: f64 = 0.01;

/// A standard model on natural images should fall to about 0 under PGD-ℓ∞ from this pixel-space
/// ε on (a normalized ε is converted: it must allow at least this much in every channel).
const LARGE_LINF_EPSILON: f64 = 8.0 / 255.0;
const NEAR_ZERO: f64 = 0.05;

fn pct(a: f64) -> String {
    format!("{:.1} %", 100.0 * a)
}

/// The warnings of a run's cells, judged per defense: a run's cells of several presets that
/// share its classifier (`standard`, `noise-injection`, `dncnn`) are compared only with cells of
/// the same preset, and each warning then names its preset.
pub fn warnings(run: &RunSpec, cells: &[EvaluatedCell]) -> Vec<String> {
    let mut groups: Vec<(&str, &InferenceDefense, Vec<EvaluatedCell>)> = Vec::new();
    for cell in cells {
        let key = (cell.defense_name.as_str(), &cell.inference);
        match groups.iter_mut().find(|(n, i, _)| (*n, *i) == key) {
            Some((_, _, group)) => group.push(cell.clone()),
            None => groups.push((key.0, key.1, vec![cell.clone()])),
        }
    }
    if groups.len() <= 1 {
        let inference = cells
            .first()
            .map(|c| c.inference.clone())
            .unwrap_or_default();
        return defense_warnings(run, &inference, cells);
    }
    groups
        .iter()
        .flat_map(|(name, inference, group)| {
            defense_warnings(run, inference, group)
                .into_iter()
                .map(move |w| format!("{name}: {w}"))
        })
        .collect()
}

/// The warnings of the cells of one defense of `run` (its classifier wrapped by `inference`).
fn defense_warnings(
    run: &RunSpec,
    inference: &InferenceDefense,
    cells: &[EvaluatedCell],
) -> Vec<String> {
    let label = |e: f64| epsilon::label_in(e, run.epsilon_space);
    let mut out = Vec::new();
    let attacked: Vec<&EvaluatedCell> = cells
        .iter()
        .filter(|c| !c.attack.is_none() && c.epsilon > 0.0)
        .collect();

    // What the worker saw while attacking (hidden randomness, zero input gradients).
    for c in &attacked {
        for warning in &c.warnings {
            out.push(format!(
                "{} at ε={}: {warning}",
                c.attack_name,
                label(c.epsilon)
            ));
        }
    }

    // A black-box stage that beats the white-box stages before it: gradient masking.
    for c in &attacked {
        for (i, stage) in c.stages.iter().enumerate() {
            let Some(before) = i.checked_sub(1).and_then(|j| c.stages.get(j)) else {
                continue;
            };
            if stage.is_black_box() && before.accuracy - stage.accuracy > BLACK_BOX_GAIN {
                out.push(format!(
                    "{} at ε={}: the black-box {} stage lowered the accuracy the white-box stages \
                     left from {} to {} (more than {:.1} points): the gradients are probably \
                     masked or obfuscated, and gradient-based numbers overestimate this defense",
                    c.attack_name,
                    label(c.epsilon),
                    stage.title(),
                    pct(before.accuracy),
                    pct(stage.accuracy),
                    100.0 * BLACK_BOX_GAIN
                ));
            }
        }
    }

    // PGD must not do worse than FGSM at the same norm and ε.
    for pgd in attacked
        .iter()
        .filter(|c| matches!(c.attack, Attack::Pgd { .. }))
    {
        for fgsm in attacked
            .iter()
            .filter(|c| matches!(c.attack, Attack::Fgsm { .. }))
        {
            if pgd.attack.norm() == fgsm.attack.norm()
                && (pgd.epsilon - fgsm.epsilon).abs() < 1e-12
                && pgd.accuracy > fgsm.accuracy + TOLERANCE
            {
                out.push(format!(
                    "{} is weaker than {} at ε={} ({} vs {} accuracy): the iterative attack is \
                     probably mis-configured (too few steps or too small a step)",
                    pgd.attack_name,
                    fgsm.attack_name,
                    label(pgd.epsilon),
                    pct(pgd.accuracy),
                    pct(fgsm.accuracy)
                ));
            }
        }
    }

    // Accuracy must not rise with ε for the same attack.
    let mut names: Vec<&str> = attacked.iter().map(|c| c.attack_name.as_str()).collect();
    names.dedup();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let mut series: Vec<&&EvaluatedCell> =
            attacked.iter().filter(|c| c.attack_name == name).collect();
        series.sort_by(|a, b| a.epsilon.total_cmp(&b.epsilon));
        for pair in series.windows(2) {
            if pair[1].accuracy > pair[0].accuracy + TOLERANCE {
                out.push(format!(
                    "{name}: accuracy rises with ε ({} at ε={} but {} at ε={}): gradient masking \
                     or a broken attack",
                    pct(pair[0].accuracy),
                    label(pair[0].epsilon),
                    pct(pair[1].accuracy),
                    label(pair[1].epsilon)
                ));
            }
        }
    }
    if let Some(clean) = cells.iter().find(|c| c.attack.is_none()) {
        for c in &attacked {
            if c.accuracy > clean.accuracy + TOLERANCE {
                out.push(format!(
                    "{} at ε={} leaves more accuracy than no attack ({} vs {} clean)",
                    c.attack_name,
                    label(c.epsilon),
                    pct(c.accuracy),
                    pct(clean.accuracy)
                ));
            }
        }
    }

    // A model at chance on clean data learned nothing: training collapsed to a constant
    // prediction, and its "robust" accuracies (also at chance) say nothing about robustness.
    if let Some(classes) = run.data.source.classes()
        && let Some(clean) = cells.iter().find(|c| c.attack.is_none())
        && clean.accuracy <= 1.0 / classes as f64 + TOLERANCE
    {
        out.push(if run.training.epochs == 0 {
            // Evaluated as given: nothing trained, so the model (or how it is fed) is at fault.
            format!(
                "clean accuracy {} is chance level for {classes} classes: the model as given has not \
                 learned this data (check that its file holds trained weights, that it expects \
                 images in [0, 1] or declares `normalize`, and its class order), so the attacked \
                 accuracies say nothing about robustness",
                pct(clean.accuracy)
            )
        } else {
            format!(
                "clean accuracy {} is chance level for {classes} classes: training collapsed (a \
                 constant prediction), so the attacked accuracies say nothing about robustness; \
                 try other seeds, a lower learning rate or a smaller training ε",
                pct(clean.accuracy)
            )
        });
    }

    // A randomized model must be attacked with EOT.
    if run.randomized_with(inference) {
        let without: Vec<&str> = attacked
            .iter()
            .filter(|c| c.attack.eot() <= 1)
            .map(|c| c.attack_name.as_str())
            .collect();
        if !without.is_empty() {
            out.push(format!(
                "the model is randomized but {} ran without EOT (eot = 1): its robustness is \
                 probably overestimated",
                without.join(", ")
            ));
        }
    }

    // A standard model on natural images falls to ~0 under PGD-ℓ∞ at 8/255.
    let undefended = matches!(run.defense.method, TrainingMethod::Standard)
        && inference.denoiser.is_none()
        && !run.randomized_with(inference);
    let natural = !matches!(run.data.source, DataSource::Synthetic { .. });
    if undefended && natural {
        for c in attacked.iter().filter(|c| {
            matches!(
                c.attack,
                Attack::Pgd {
                    norm: Norm::Linf,
                    ..
                }
            ) && run.epsilon_space.pixel_linf_range(c.epsilon).0 >= LARGE_LINF_EPSILON - 1e-12
        }) {
            if c.accuracy > NEAR_ZERO {
                out.push(format!(
                    "a standard model keeps {} under {} at ε={}; expected about 0 (RobustBench): \
                     the attack may be too weak",
                    pct(c.accuracy),
                    c.attack_name,
                    label(c.epsilon)
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use advsweep_core::catalogue::presets;
    use advsweep_core::{DataSpec, Defense, EpsilonSpace, Model, Optimizer, TrainingSpec};

    fn run(data: DataSource) -> RunSpec {
        let defense = Defense::standard();
        RunSpec {
            id: advsweep_core::RunId::new("r-0000000000000001").expect("a run id"),
            model_name: "basic".into(),
            model: Model::plain("basic"),
            defense_name: "standard".into(),
            defense,
            training: TrainingSpec {
                epochs: 1,
                batch_size: 1,
                learning_rate: 0.1,
                optimizer: Optimizer::Sgd {
                    momentum: 0.0,
                    weight_decay: 0.0,
                    nesterov: false,
                },
                schedule: advsweep_core::LrSchedule::Constant,
                augment: false,
                eval_batch_size: 1,
                checkpoint_every: 1,
                precision: advsweep_core::Precision::Fp32,
            },
            data: DataSpec {
                source: data,
                eval_limit: 0,
                train_limit: 0,
                shard: None,
            },
            seed: 0,
            epsilon_space: EpsilonSpace::Pixel,
        }
    }

    fn cell(name: &str, attack: Attack, epsilon: f64, accuracy: f64) -> EvaluatedCell {
        EvaluatedCell {
            attack_name: name.into(),
            attack,
            epsilon,
            accuracy,
            stages: Vec::new(),
            warnings: Vec::new(),
            defense_name: "standard".into(),
            inference: InferenceDefense::default(),
        }
    }

    /// `cell` of the noise-injection defense (σ = 0.05 at inference).
    fn noisy(cell: EvaluatedCell) -> EvaluatedCell {
        EvaluatedCell {
            defense_name: "noise-injection".into(),
            inference: InferenceDefense {
                inference_noise: Some(0.05),
                denoiser: None,
            },
            ..cell
        }
    }

    fn fgsm() -> Attack {
        presets::FGSM
    }

    fn pgd() -> Attack {
        presets::PGD_LINF
    }

    #[test]
    fn a_sound_evaluation_has_no_warnings() {
        let cifar = DataSource::Cifar10Binary { path: "x".into() };
        let w = warnings(
            &run(cifar),
            &[
                cell("none", Attack::None, 0.0, 0.9),
                cell("fgsm", fgsm(), 2.0 / 255.0, 0.5),
                cell("fgsm", fgsm(), 8.0 / 255.0, 0.2),
                cell("pgd", pgd(), 2.0 / 255.0, 0.3),
                cell("pgd", pgd(), 8.0 / 255.0, 0.0),
            ],
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn a_black_box_stage_beating_the_white_box_ones_is_gradient_masking() {
        let cascade = |square: f64| {
            let attack = presets::attack("autoattack").cloned().expect("built in");
            let stages = [0.451, 0.443, 0.443, square]
                .into_iter()
                .zip(attack.stages())
                .map(|(accuracy, s)| StageAccuracy {
                    name: s.label(),
                    accuracy,
                })
                .collect();
            EvaluatedCell {
                stages,
                ..cell("autoattack", attack, 8.0 / 255.0, square)
            }
        };
        let synthetic = || {
            run(DataSource::Synthetic {
                seed: 0,
                train_size: 100,
                test_size: 100,
            })
        };
        // 0.15 points is sampling noise; 0.3 is not.
        assert!(warnings(&synthetic(), &[cascade(0.4415)]).is_empty());
        let w = warnings(&synthetic(), &[cascade(0.440)]).join("\n");
        assert!(
            w.contains("black-box Square stage lowered the accuracy")
                && w.contains("from 44.3 % to 44.0 %")
                && w.contains("masked"),
            "{w}"
        );
    }

    #[test]
    fn what_the_worker_saw_is_shown_with_the_cell() {
        let cifar = DataSource::Cifar10Binary { path: "x".into() };
        let attack = presets::attack("autoattack").cloned().expect("built in");
        let seen = EvaluatedCell {
            warnings: vec!["3 of 200 images (1.5 %) have an all-zero input gradient".into()],
            ..cell("autoattack", attack, 8.0 / 255.0, 0.0)
        };
        let w = warnings(&run(cifar), &[seen]);
        assert_eq!(
            w,
            ["autoattack at ε=8/255: 3 of 200 images (1.5 %) have an all-zero input gradient"]
        );
    }

    #[test]
    fn each_unsound_sign_is_named() {
        let cifar = DataSource::Cifar10Binary { path: "x".into() };
        let w = warnings(
            &run(cifar.clone()),
            &[
                cell("none", Attack::None, 0.0, 0.9),
                cell("fgsm", fgsm(), 8.0 / 255.0, 0.2),
                cell("pgd", pgd(), 2.0 / 255.0, 0.3),
                cell("pgd", pgd(), 8.0 / 255.0, 0.4),
            ],
        );
        let all = w.join("\n");
        assert!(all.contains("pgd is weaker than fgsm at ε=8/255"), "{all}");
        assert!(all.contains("pgd: accuracy rises with ε"), "{all}");
        assert!(all.contains("a standard model keeps 40.0 %"), "{all}");

        let noisy_cells = warnings(&run(cifar), &[noisy(cell("pgd", pgd(), 8.0 / 255.0, 0.1))]);
        assert!(
            noisy_cells.iter().any(|w| w.contains("without EOT")),
            "{noisy_cells:?}"
        );
        let with_eot = warnings(
            &run(DataSource::Cifar10Binary { path: "x".into() }),
            &[noisy(cell("pgd", pgd().with_eot(10), 8.0 / 255.0, 0.1))],
        );
        assert!(with_eot.iter().all(|w| !w.contains("EOT")), "{with_eot:?}");

        // A collapsed adversarial training (CPU run of the seed's noise-injection sweep).
        let collapsed = warnings(
            &run(DataSource::Cifar10Binary { path: "x".into() }),
            &[
                cell("none", Attack::None, 0.0, 0.1007),
                cell("pgd", pgd(), 8.0 / 255.0, 0.0995),
            ],
        );
        assert!(
            collapsed
                .iter()
                .any(|w| w.contains("clean accuracy 10.1 % is chance level")),
            "{collapsed:?}"
        );
        // Chance follows the data's classes: 10 % is a learned CIFAR-100 model, 1 % is not.
        let cifar100 = run(DataSource::Cifar100Binary { path: "x".into() });
        let learned = warnings(&cifar100, &[cell("none", Attack::None, 0.0, 0.1007)]);
        assert!(learned.is_empty(), "{learned:?}");
        let chance = warnings(&cifar100, &[cell("none", Attack::None, 0.0, 0.0101)]);
        assert!(
            chance
                .iter()
                .any(|w| w.contains("chance level for 100 classes")),
            "{chance:?}"
        );
    }

    #[test]
    fn normalized_budgets_are_judged_by_their_pixel_size() {
        let mut normalized = run(DataSource::Cifar10Binary { path: "x".into() });
        normalized.epsilon_space = EpsilonSpace::Normalized;
        // 0.05 normalized is about 3/255 in pixels: a standard model may keep accuracy there.
        let small = warnings(&normalized, &[cell("pgd", pgd(), 0.05, 0.16)]);
        assert!(small.is_empty(), "{small:?}");
        // 0.15 normalized is at least 9.3/255 in every channel: it should be about 0.
        let large = warnings(&normalized, &[cell("pgd", pgd(), 0.15, 0.16)]);
        assert!(
            large
                .iter()
                .any(|w| w.contains("keeps 16.0 % under pgd at ε=0.15;")),
            "{large:?}"
        );
    }
}
