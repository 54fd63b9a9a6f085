//! Grid expansion as a user sees it: counts, tied ε, ids that survive re-ordering, no duplicates.

mod common;

use std::collections::HashSet;

use advsweep_coordinator::sweep::{Overrides, Plan, expand, parse_sweep};
use advsweep_core::{Attack, Defense, TrainingMethod};

fn plan(text: &str) -> Plan {
    let file = parse_sweep(text, "test.toml").unwrap_or_else(|e| panic!("parse: {e}"));
    expand(&file, &Overrides::default(), "test.toml").unwrap_or_else(|e| panic!("expand: {e}"))
}

const QUICKSTART: &str = include_str!("../../sweeps/quickstart.toml");

const GRID: &str = r#"
version = 1
name = "grid"
[data]
source = "synthetic"
[grid]
models = ["basic"]
defenses = ["standard", "at-pgd-linf", "at-fixed"]
attacks = ["none", "fgsm", "pgd-linf", "pgd-l2"]
epsilons = [0.01, "8/255", 0.1]
seeds = [0, 1]

[defenses.at-fixed]
kind = "adversarial"
attack = "fgsm"
epsilon = "4/255"
fraction = 0.5
"#;

/// The same sweep with every list and table in another order.
const GRID_REORDERED: &str = r#"
name = "grid"
version = 1

[defenses.at-fixed]
fraction = 0.5
epsilon = 0.01568627450980392
attack = "fgsm"
kind = "adversarial"

[grid]
seeds = [1, 0]
epsilons = [0.1, 0.03137254901960784, 0.01]
attacks = ["pgd-l2", "pgd-linf", "fgsm", "none"]
defenses = ["at-fixed", "at-pgd-linf", "standard"]
models = ["basic"]

[data]
source = "synthetic"
"#;

#[test]
fn quickstart_expands_to_three_runs_and_eleven_cells() {
    let p = plan(QUICKSTART);
    // standard: 1 run × (clean + 2 attacks × 2 ε) = 5 cells;
    // at-fgsm (tied): 2 runs × (clean + 2 attacks at the tied ε) = 6 cells.
    assert_eq!(p.runs.len(), 3);
    assert_eq!(p.cells.len(), 11);
    let standard = p
        .runs
        .iter()
        .filter(|r| r.defense == Defense::standard())
        .count();
    assert_eq!(standard, 1);
}

#[test]
fn counts_multiply_over_seeds_and_untied_defenses() {
    let p = plan(GRID);
    // Runs per seed: standard 1 + tied at-pgd-linf 3 + fixed at-fixed 1 = 5; × 2 seeds.
    assert_eq!(p.runs.len(), 10);
    // Cells per seed: untied runs (2) × (clean + 3 attacks × 3 ε) = 20; tied runs 3 × 4 = 12.
    assert_eq!(p.cells.len(), 2 * (20 + 12));
}

#[test]
fn tied_defenses_train_and_attack_at_the_same_epsilon() {
    let p = plan(GRID);
    let tied: Vec<_> = p
        .runs
        .iter()
        .filter(|r| r.defense_name == "at-pgd-linf")
        .collect();
    assert_eq!(tied.len(), 6);
    let mut trained_at = HashSet::new();
    for run in tied {
        let TrainingMethod::Adversarial {
            epsilon, attack, ..
        } = &run.defense.method
        else {
            panic!("at-pgd-linf must be adversarial training");
        };
        assert!(matches!(attack, Attack::Pgd { .. }));
        trained_at.insert(epsilon.to_bits());
        let cells: Vec<_> = p.cells_of(&run.id).collect();
        assert_eq!(cells.len(), 4, "clean + three attacks at the tied ε");
        for cell in cells {
            assert_eq!(
                cell.epsilon, *epsilon,
                "cell {} of a tied run",
                cell.attack_name
            );
        }
    }
    let expected: HashSet<u64> = [0.01, 8.0 / 255.0, 0.1]
        .iter()
        .map(|e: &f64| e.to_bits())
        .collect();
    assert_eq!(trained_at, expected);

    // An untied defense is attacked at every ε, its clean cell labelled 0.
    let fixed = p
        .runs
        .iter()
        .find(|r| r.defense_name == "at-fixed")
        .expect("at-fixed run");
    let mut eps: Vec<f64> = p.cells_of(&fixed.id).map(|c| c.epsilon).collect();
    eps.sort_by(f64::total_cmp);
    eps.dedup();
    assert_eq!(eps, vec![0.0, 0.01, 8.0 / 255.0, 0.1]);
}

#[test]
fn ids_are_stable_when_the_file_is_reordered() {
    let a = plan(GRID);
    let b = plan(GRID_REORDERED);
    let ids = |p: &Plan| -> (HashSet<String>, HashSet<String>) {
        (
            p.runs.iter().map(|r| r.id.to_string()).collect(),
            p.cells.iter().map(|c| c.id.to_string()).collect(),
        )
    };
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(a.sweep_id, b.sweep_id);
    // And stable across calls (no randomness, no time).
    assert_eq!(plan(GRID).sweep_id, a.sweep_id);
}

#[test]
fn ids_change_when_the_experiment_changes() {
    let more_epochs = GRID.replace("[data]", "[training]\nepochs = 7\n[data]");
    let a = plan(GRID);
    let b = plan(&more_epochs);
    let a_runs: HashSet<_> = a.runs.iter().map(|r| &r.id).collect();
    assert!(b.runs.iter().all(|r| !a_runs.contains(&r.id)));
}

#[test]
fn expansion_is_duplicate_free_even_with_aliased_presets() {
    // `fgsm-again` is the same attack as `fgsm` under another name: one cell, not two.
    let text = GRID.replace(
        r#"attacks = ["none", "fgsm", "pgd-linf", "pgd-l2"]"#,
        r#"attacks = ["none", "fgsm", "fgsm-again", "pgd-linf", "pgd-l2"]"#,
    ) + "\n[attacks.fgsm-again]\nkind = \"fgsm\"\n";
    let p = plan(&text);
    let runs: HashSet<_> = p.runs.iter().map(|r| &r.id).collect();
    let cells: HashSet<_> = p.cells.iter().map(|c| &c.id).collect();
    assert_eq!(runs.len(), p.runs.len());
    assert_eq!(cells.len(), p.cells.len());
    assert_eq!(p.cells.len(), plan(GRID).cells.len());
    assert!(p.cells.iter().all(|c| runs.contains(&c.run_id)));
}

#[test]
fn data_path_override_replaces_the_file_path() {
    let text = r#"
version = 1
name = "c"
[data]
source = "cifar10"
path = "/nowhere"
[grid]
models = ["basic"]
defenses = ["standard"]
attacks = ["none"]
epsilons = [0.0]
"#;
    let file = parse_sweep(text, "c.toml").expect("parses");
    let overridden = expand(
        &file,
        &Overrides {
            data_path: Some("/data/cifar".into()),
            ..Overrides::default()
        },
        "c.toml",
    )
    .expect("expands");
    match &overridden.runs[0].data.source {
        advsweep_core::DataSource::Cifar10Binary { path } => assert_eq!(path, "/data/cifar"),
        other => panic!("unexpected source {other:?}"),
    }
}

const CATALOGUE: &str = r#"
version = 1
name = "catalogue"
[data]
source = "synthetic"
[evaluation]
eot_samples = 7
[grid]
models = ["basic", "noisy-resnet18", "pni-vgg"]
defenses = ["standard", "at-mixed-worst", "dncnn", "at-pgd-linf-noise"]
attacks = ["none", "pgd-linf", "fgsm-eot3"]
epsilons = ["8/255"]

[models.pni-vgg]
arch = "vgg11"
noise = { sigma = 0.2, layers = ["stage3", "input"], learnable = true }

[attacks.fgsm-eot3]
kind = "fgsm"
eot = 3
"#;

#[test]
fn the_catalogue_resolves_models_defenses_and_eot() {
    let p = plan(CATALOGUE);
    // dncnn wraps the standard classifier and at-pgd-linf-noise the at-pgd-linf one: three
    // classifiers per model.
    assert_eq!(p.runs.len(), 3 * 3);
    assert_eq!(p.cells.len(), 3 * 4 * 3);
    // noisy-resnet18: every hidden injection point of ResNet-18, not the input.
    let noisy = p
        .runs
        .iter()
        .find(|r| r.model_name == "noisy-resnet18")
        .expect("noisy run");
    let noise = noisy.model.noise.as_ref().expect("noise");
    assert_eq!(noisy.model.name, "resnet18");
    assert_eq!(
        noise.layers,
        ["stem", "layer1", "layer2", "layer3", "layer4"]
    );
    // A custom preset keeps the architecture's order, whatever order the file used.
    let pni = p
        .runs
        .iter()
        .find(|r| r.model_name == "pni-vgg")
        .expect("pni run");
    let noise = pni.model.noise.as_ref().expect("noise");
    assert_eq!(
        (noise.layers.as_slice(), noise.learnable),
        (&["input".to_owned(), "stage3".to_owned()][..], true)
    );

    for run in &p.runs {
        for cell in p.cells_of(&run.id) {
            let expected = match cell.attack_name.as_str() {
                "none" => 1,
                "fgsm-eot3" => 3,
                // `auto`: EOT only against randomized models.
                _ if run.randomized_with(&cell.inference) => 7,
                _ => 1,
            };
            assert_eq!(
                cell.attack.eot(),
                expected,
                "{} on {}/{}",
                cell.attack_name,
                run.model_name,
                run.defense_name
            );
        }
    }
    let mixed = p
        .runs
        .iter()
        .find(|r| r.defense_name == "at-mixed-worst")
        .expect("mixed");
    match &mixed.defense.method {
        TrainingMethod::Mixed {
            epsilon_linf,
            epsilon_l2,
            strategy,
            ..
        } => {
            assert_eq!((*epsilon_linf, *epsilon_l2), (8.0 / 255.0, 8.0 / 255.0));
            assert_eq!(*strategy, advsweep_core::MixStrategy::WorstPerExample);
        }
        other => panic!("unexpected {other:?}"),
    }
    let dncnn = p
        .cells
        .iter()
        .find(|c| c.defense_name == "dncnn")
        .expect("dncnn");
    let d = dncnn.inference.denoiser.as_ref().expect("denoiser");
    assert_eq!((d.blocks, d.epsilon), (10, 8.0 / 255.0));
    let dncnn_run = p
        .runs
        .iter()
        .find(|r| r.id == dncnn.run_id)
        .expect("its run");
    assert_eq!(
        dncnn_run.defense_name, "standard",
        "the shared classifier's label"
    );
    let noisy_at = p
        .cells
        .iter()
        .find(|c| c.defense_name == "at-pgd-linf-noise")
        .expect("at+noise");
    let run = p
        .runs
        .iter()
        .find(|r| r.id == noisy_at.run_id)
        .expect("its run");
    assert_eq!(
        run.defense_name, "at-pgd-linf",
        "the built-in preset that trains it bare"
    );
    assert!(run.randomized_with(&noisy_at.inference));
}

/// Train once: defenses that act only at inference (noise, a denoiser in front) evaluate the
/// classifier the undefended preset trains, so the seed's denoiser sweep trains one classifier
/// where it trained three, and runs without such a defense keep the ids they always had.
#[test]
fn inference_only_defenses_share_the_classifier_and_old_ids_stay() {
    // The quickstart's standard BasicNet had this id before runs were shared.
    assert_eq!(plan(QUICKSTART).runs[0].id.as_str(), "r-38d7a405f0965185");
    let denoiser = plan(include_str!("../../sweeps/seed-denoiser.toml"));
    assert_eq!(
        denoiser.runs.len(),
        1,
        "standard, dncnn-10 and dncnn-15 share one"
    );
    assert_eq!(denoiser.cells.len(), 21);
    let names: HashSet<&str> = denoiser
        .cells
        .iter()
        .map(|c| c.defense_name.as_str())
        .collect();
    assert_eq!(names, HashSet::from(["standard", "dncnn-10", "dncnn-15"]));
    let noise = plan(include_str!("../../sweeps/seed-noise-injection.toml"));
    assert_eq!((noise.runs.len(), noise.cells.len()), (2, 12));
    // A bare cell keeps its id; a wrapped one differs from it by its wrapper alone.
    let bare: Vec<_> = noise
        .cells
        .iter()
        .filter(|c| c.inference.is_empty())
        .collect();
    let wrapped: Vec<_> = noise
        .cells
        .iter()
        .filter(|c| !c.inference.is_empty())
        .collect();
    assert_eq!((bare.len(), wrapped.len()), (6, 6));
    for w in &wrapped {
        let twin = bare
            .iter()
            .find(|b| {
                b.run_id == w.run_id && b.attack_name == w.attack_name && b.epsilon == w.epsilon
            })
            .expect("the same attack on the same classifier, bare");
        assert_ne!(twin.id, w.id);
    }
}

/// A learnable noise scale that starts at 0 adds no noise yet, but training can move it off 0:
/// the run counts as randomized (EOT for `auto` attacks), as the worker treats it.
#[test]
fn a_learnable_noise_scale_at_zero_is_randomized() {
    let p = plan(
        r#"
version = 1
name = "pni-zero"
[data]
source = "synthetic"
[evaluation]
eot_samples = 5
[grid]
models = ["pni-zero", "fixed-zero"]
defenses = ["standard"]
attacks = ["pgd-linf"]
epsilons = ["8/255"]

[models.pni-zero]
arch = "basic"
noise = { sigma = 0.0, layers = ["input"], learnable = true }

[models.fixed-zero]
arch = "basic"
noise = { sigma = 0.0, layers = ["input"], learnable = false }
"#,
    );
    for run in &p.runs {
        let learnable = run.model_name == "pni-zero";
        assert_eq!(run.randomized(), learnable, "{}", run.model_name);
        for cell in p.cells_of(&run.id) {
            assert_eq!(cell.attack.eot(), if learnable { 5 } else { 1 });
        }
    }
}

#[test]
fn the_epsilon_space_is_part_of_the_identity() {
    let pixel = plan(GRID);
    let normalized = plan(&GRID.replace(
        "name = \"grid\"",
        "name = \"grid\"\nepsilon_space = \"normalized\"",
    ));
    assert!(
        normalized
            .runs
            .iter()
            .all(|r| r.epsilon_space == advsweep_core::EpsilonSpace::Normalized)
    );
    let a: HashSet<_> = pixel.runs.iter().map(|r| &r.id).collect();
    assert!(normalized.runs.iter().all(|r| !a.contains(&r.id)));
}

/// A denoiser's `pairs_per_epoch` budget changes what its run computes, so it changes the run's
/// id; left at 0 (the default) it changes nothing, so the ids of runs made before the option
/// existed, and their finished cells, stay valid.
#[test]
fn the_denoiser_budget_is_part_of_the_identity_only_when_set() {
    let base = r#"
version = 1
name = "dn"
[data]
source = "synthetic"
[grid]
models = ["basic"]
defenses = ["dn"]
attacks = ["none"]
epsilons = [0.1]
[defenses.dn]
kind = "standard"
denoiser = { blocks = 2, epsilon = 0.1, epochs = 1 }
"#;
    // The denoiser wraps the cell: its budget is part of the cell's id, never the run's.
    let id = |text: &str| plan(text).cells[0].id.clone();
    let run_id = |text: &str| plan(text).runs[0].id.clone();
    let default = id(base);
    let explicit_zero = id(&base.replace("epochs = 1 }", "epochs = 1, pairs_per_epoch = 0 }"));
    let with_budget = base.replace("epochs = 1 }", "epochs = 1, pairs_per_epoch = 500 }");
    let budget = id(&with_budget);
    assert_eq!(default, explicit_zero);
    assert_ne!(default, budget);
    assert_eq!(run_id(base), run_id(&with_budget));
    let json = serde_json::to_string(&plan(base).cells[0].inference).expect("json");
    assert!(!json.contains("pairs_per_epoch"), "{json}");
    let cell = &plan(&with_budget).cells[0];
    assert_eq!(
        cell.inference.denoiser.as_ref().map(|d| d.pairs_per_epoch),
        Some(500)
    );
}

/// `[training] precision`: bf16 is a different experiment (another run id), fp32 written out
/// is the default (same ids as before the key existed), and an unknown name is refused by name.
#[test]
fn training_precision_is_validated_and_part_of_the_identity_only_when_bf16() {
    let with = |value: &str| {
        GRID.replace(
            "[data]",
            &format!("[training]\nprecision = \"{value}\"\n[data]"),
        )
    };
    let ids = |p: &Plan| p.runs.iter().map(|r| r.id.clone()).collect::<HashSet<_>>();
    let default = plan(GRID);
    assert_eq!(ids(&default), ids(&plan(&with("fp32"))));
    let bf16 = plan(&with("bf16"));
    assert!(
        bf16.runs
            .iter()
            .all(|r| r.training.precision == advsweep_core::Precision::Bf16)
    );
    assert!(ids(&default).is_disjoint(&ids(&bf16)));
    // Refused while parsing now (a typed enum), no longer at expansion: same assertion.
    let err = parse_sweep(&with("fp16"), "test.toml")
        .and_then(|file| expand(&file, &Overrides::default(), "test.toml"))
        .expect_err("fp16 is not offered")
        .to_string();
    assert!(
        err.contains("training.precision") && err.contains("fp16"),
        "{err}"
    );
}

#[test]
fn every_shipped_sweep_file_expands() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sweeps");
    let mut checked = 0;
    let mut names = std::collections::HashSet::new();
    for dir in [root.clone(), root.join("budget")] {
        for entry in std::fs::read_dir(&dir).expect("sweeps/ and sweeps/budget/ exist") {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let plan = common::shipped_plan(&path);
            assert!(!plan.cells.is_empty(), "{}", path.display());
            // Reports and `advsweep report NAME` find sweeps by name: no two files share one.
            assert!(
                names.insert(plan.name.clone()),
                "{}: sweep name `{}` is used twice",
                path.display(),
                plan.name
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 15,
        "expected the quickstart, CIFAR-10, seed and reduced-budget sweep files"
    );
}
