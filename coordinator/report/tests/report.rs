//! `advsweep report` on a stored sweep with known numbers: the tables and exports match golden
//! files (regenerate with `UPDATE_GOLDEN=1 cargo test -p advsweep-report --test report`
//! and review the diff), and every figure is produced with the expected series.

use std::path::Path;

use advsweep_core::{
    Attack, CellResult, EpochMetrics, EpsilonSpace, Norm, ShownState, StepSize, SweepState,
};
use advsweep_report::plots::Canvas;
use advsweep_report::{
    self as report, CellRecord, Dim, Layout, Metric, Pivot, RunRecord, SweepReport,
};

fn result(accuracy: f64) -> Option<CellResult> {
    Some(CellResult {
        accuracy,
        attack_success_rate: 0.5,
        mean_linf: 0.03,
        mean_l2: 1.2,
        images_per_second: 1000.0,
        seconds: 1.5,
        examples: 1000,
        stages: Vec::new(),
        warnings: Vec::new(),
        clean_correct: 900,
        flipped: 450,
    })
}

fn run(id: &str, defense: &str, eps: Option<f64>, seed: u64, warnings: &[&str]) -> RunRecord {
    RunRecord {
        run_id: id.into(),
        model: "basic".into(),
        defense: defense.into(),
        defense_epsilon: eps,
        seed,
        epsilon_space: EpsilonSpace::Pixel,
        state: ShownState::Done,
        attempt: 1,
        error: None,
        warnings: warnings.iter().map(|w| (*w).to_owned()).collect(),
        epochs: (1..=3)
            .map(|e| EpochMetrics {
                epoch: e,
                train_loss: 2.0 / f64::from(e),
                train_accuracy: 0.2 * f64::from(e),
                test_accuracy: 0.25 * f64::from(e),
                seconds: 1.0,
                images_per_second: 5000.0,
            })
            .collect(),
        spec: None,
        shards: 1,
    }
}

/// The resolved attack behind a preset name of this sweep: FGSM and PGD-10 in ℓ∞, PGD in ℓ2.
fn resolved(attack: &str) -> Option<Attack> {
    let norm = if attack.ends_with("l2") {
        Norm::L2
    } else {
        Norm::Linf
    };
    match attack {
        "none" => Some(Attack::None),
        "fgsm" => Some(Attack::Fgsm {
            norm,
            random_start: false,
            step_fraction: 1.0,
            eot: 1,
        }),
        _ => Some(Attack::Pgd {
            norm,
            steps: 10,
            step: StepSize::FractionOfEpsilon(0.25),
            random_start: true,
            restarts: 1,
            eot: 1,
        }),
    }
}

fn cell(
    run: &RunRecord,
    attack: &str,
    eps: f64,
    state: ShownState,
    acc: Option<f64>,
) -> CellRecord {
    CellRecord {
        cell_id: format!("c-{}-{attack}-{eps}", run.run_id),
        run_id: run.run_id.clone(),
        model: run.model.clone(),
        defense: run.defense.clone(),
        defense_epsilon: run.defense_epsilon,
        inference: Default::default(),
        seed: run.seed,
        attack: attack.into(),
        attack_spec: resolved(attack),
        epsilon: eps,
        epsilon_space: run.epsilon_space,
        state,
        result: acc.and_then(result),
        error: (state == ShownState::Failed).then(|| {
            "attempt 3 failed: CUDA out of memory (gave up after 3 failed attempts)".into()
        }),
        shards: 1,
    }
}

/// Standard training over two seeds, and a tied adversarial defense (one run per ε); one cell
/// still pending, one failed.
fn sweep() -> SweepReport {
    let e2 = 2.0 / 255.0;
    let e8 = 8.0 / 255.0;
    let s0 = run("r-std0", "standard", None, 0, &[]);
    let s1 = run(
        "r-std1",
        "standard",
        None,
        1,
        &["pgd-linf: accuracy rises with ε (10.0 % at ε=2/255 but 20.0 % at ε=8/255)"],
    );
    let a2 = run("r-at2", "at-pgd-linf", Some(e2), 0, &[]);
    let a8 = run("r-at8", "at-pgd-linf", Some(e8), 0, &[]);
    let mut cells = Vec::new();
    for (r, clean, f2, f8, p2, p8) in [
        (&s0, 0.8, 0.5, 0.2, 0.4, 0.1),
        (&s1, 0.9, 0.6, 0.3, 0.5, 0.2),
    ] {
        cells.push(cell(r, "none", 0.0, ShownState::Done, Some(clean)));
        cells.push(cell(r, "fgsm", e2, ShownState::Done, Some(f2)));
        cells.push(cell(r, "fgsm", e8, ShownState::Done, Some(f8)));
        cells.push(cell(r, "pgd-linf", e2, ShownState::Done, Some(p2)));
        cells.push(cell(r, "pgd-linf", e8, ShownState::Done, Some(p8)));
    }
    cells.push(cell(&a2, "none", e2, ShownState::Done, Some(0.75)));
    cells.push(cell(&a2, "fgsm", e2, ShownState::Done, Some(0.6)));
    cells.push(cell(&a2, "pgd-linf", e2, ShownState::Pending, None));
    cells.push(cell(&a8, "none", e8, ShownState::Done, Some(0.6)));
    cells.push(cell(&a8, "fgsm", e8, ShownState::Failed, None));
    cells.push(cell(&a8, "pgd-linf", e8, ShownState::Done, Some(0.35)));
    SweepReport {
        sweep_id: "s-golden".into(),
        name: "golden".into(),
        state: SweepState::Running,
        runs: vec![s0, s1, a2, a8],
        cells,
    }
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(actual, expected, "{name} differs from its golden file");
}

#[test]
fn tables_and_exports_match_the_golden_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = sweep();
    let written = report::write(&r, dir.path(), &Layout::default(), None).expect("report");
    assert!(written.files.len() >= 6);
    for name in [
        "table.md",
        "table.csv",
        "cells.csv",
        "epochs.csv",
        "report.md",
    ] {
        let text = std::fs::read_to_string(dir.path().join(name)).expect(name);
        golden(name, &text);
    }
    // The JSON export parses and holds every cell and epoch.
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("sweep.json")).expect("json"),
    )
    .expect("sweep.json parses");
    assert_eq!(json["cells"].as_array().map(Vec::len), Some(16));
    assert_eq!(json["runs"][0]["epochs"].as_array().map(Vec::len), Some(3));
}

#[test]
fn the_default_table_is_the_seeds_figure_4_layout_with_mean_and_std() {
    let md = report::Pivot::new(&sweep().cells, Layout::default()).markdown();
    assert!(
        md.starts_with("| attack   | ε     | basic/standard | basic/at-pgd-linf |"),
        "{md}"
    );
    // Two seeds: mean ± sample std.
    assert!(
        md.contains("| fgsm     | 2/255 |     55.0 ± 7.1 |              60.0 |"),
        "{md}"
    );
    // Missing cells show their state.
    assert!(
        md.contains(ShownState::Pending.as_str()) && md.contains(ShownState::Failed.as_str()),
        "{md}"
    );
}

#[test]
fn other_layouts_and_metrics() {
    let layout = Layout {
        rows: vec![Dim::Defense, Dim::Seed],
        columns: vec![Dim::Attack],
        metric: Metric::AttackSuccessRate,
    };
    let pivot = report::Pivot::new(&sweep().cells, layout);
    let md = pivot.markdown();
    // ε is on neither axis and the cells differ in it (and the adversarial defense in its
    // training ε): both join the rows rather than being averaged into one "± over seeds".
    assert_eq!(pivot.added(), [Dim::Epsilon, Dim::DefenseEpsilon]);
    assert!(
        md.starts_with("| defense     | seed | ε     | defense ε | none |   fgsm | pgd-linf |"),
        "{md}"
    );
    assert!(
        md.contains("| standard    | 1    | 2/255 | —         |      |   50.0 |     50.0 |"),
        "{md}"
    );
    assert!(!md.contains('±'), "one seed per entry: {md}");
    // A clean cell has no attack to succeed: its success rate is not a number.
    assert!(
        md.contains("| standard    | 1    | 0     | —         |    — |        |          |"),
        "{md}"
    );
    let legend = pivot.legend();
    assert!(
        legend.contains("ε, defense ε added to the rows"),
        "{legend}"
    );
    // The default layout averages seeds only, and says so.
    let default = report::Pivot::new(&sweep().cells, Layout::default());
    assert!(default.added().is_empty());
    assert!(
        default
            .legend()
            .contains("mean ± standard deviation over seeds (up to 2 per entry)"),
        "{}",
        default.legend()
    );
}

#[test]
fn figures_are_drawn_with_the_expected_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    let written = report::write(
        &sweep(),
        dir.path(),
        &Layout::default(),
        Some(Canvas::default()),
    )
    .expect("report");
    if let Some(why) = &written.plots_skipped {
        panic!("plots were skipped: {why}");
    }
    for stem in [
        "accuracy_vs_epsilon-basic-standard",
        "accuracy_vs_epsilon-basic-at-pgd-linf",
        "accuracy_vs_epsilon-attack-fgsm",
        "accuracy_vs_epsilon-attack-pgd-linf",
        "learning_curves_test_accuracy",
        "learning_curves_train_loss",
        "robust_vs_clean",
    ] {
        for ext in ["svg", "png"] {
            let path = dir.path().join(format!("{stem}.{ext}"));
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            assert!(len > 1000, "{} is missing or empty", path.display());
        }
    }
    let svg = std::fs::read_to_string(dir.path().join("accuracy_vs_epsilon-basic-standard.svg"))
        .expect("svg");
    for label in ["fgsm", "pgd-linf", "accuracy (%)"] {
        assert!(svg.contains(label), "Figure 1 lacks {label}");
    }
    let curves =
        std::fs::read_to_string(dir.path().join("learning_curves_test_accuracy.svg")).expect("svg");
    // One line per setting, its seeds averaged (the band is their spread).
    for label in ["basic/standard (2 seeds)", "basic/at-pgd-linf ε=2/255"] {
        assert!(curves.contains(label), "learning curves lack {label}");
    }
    assert!(
        !curves.contains(" s0"),
        "seeds are averaged, not drawn apart"
    );
    if let Some(keep) = std::env::var_os("ADVSWEEP_KEEP_FIGURES") {
        for f in &written.files {
            let _ = std::fs::copy(f, Path::new(&keep).join(f.file_name().expect("name")));
        }
    }
    let png = std::fs::read(dir.path().join("robust_vs_clean.png")).expect("png");
    assert_eq!(&png[1..4], b"PNG");
    // The summary links the figures.
    let md = std::fs::read_to_string(dir.path().join("report.md")).expect("report.md");
    assert!(
        md.contains("![robust_vs_clean.png](robust_vs_clean.png)"),
        "{md}"
    );
}

#[test]
fn a_normalized_sweep_labels_its_budgets_as_plain_numbers() {
    let mut r = sweep();
    for run in &mut r.runs {
        run.epsilon_space = EpsilonSpace::Normalized;
    }
    for c in &mut r.cells {
        c.epsilon_space = EpsilonSpace::Normalized;
    }
    let table = Pivot::new(&r.cells, Layout::default()).markdown();
    // 8/255 read as a normalized budget is 0.0314 σ, not "8/255" of anything.
    assert!(table.contains("0.0314"), "{table}");
    assert!(!table.contains("/255"), "{table}");
}

/// The figures as data: means over seeds with their spread, ℓ∞ and ℓ2 on separate panels
/// (ℓ∞ in k/255), colour per defense where defenses are compared, marker per attack.
#[test]
fn figures_hold_means_with_spread_and_one_panel_per_norm() {
    use advsweep_report::plots::{self, Ticks};
    let mut r = sweep();
    for seed in 0..2 {
        let run = r.runs[seed].clone();
        r.cells.push(cell(
            &run,
            "pgd-l2",
            0.5,
            ShownState::Done,
            Some(0.3 + 0.1 * seed as f64),
        ));
    }
    let figures = plots::accuracy_vs_epsilon(&r);
    let (_, standard) = figures
        .iter()
        .find(|((_, d), _)| d == "standard")
        .expect("the standard model's figure");
    assert_eq!(standard.panels.len(), 2, "one panel per norm");
    let (linf, l2) = (&standard.panels[0], &standard.panels[1]);
    assert_eq!(linf.x.ticks, Ticks::Per255);
    assert!(linf.x.label.contains("ℓ∞"), "{}", linf.x.label);
    assert_eq!(l2.x.ticks, Ticks::Plain);
    let fgsm = &linf
        .series
        .iter()
        .find(|s| s.name == "fgsm")
        .expect("fgsm")
        .points;
    // Clean at 0, then 2/255 and 8/255 in units of 1/255; means of the two seeds ± std.
    assert_eq!(
        fgsm.iter().map(|p| p.x.round()).collect::<Vec<_>>(),
        [0.0, 2.0, 8.0]
    );
    assert!((fgsm[1].y - 55.0).abs() < 1e-9 && (fgsm[1].y_err - 7.0711).abs() < 1e-3);
    let pgd_l2 = &l2
        .series
        .iter()
        .find(|s| s.name == "pgd-l2")
        .expect("pgd-l2");
    assert_eq!(pgd_l2.points.last().map(|p| p.x), Some(0.5));
    assert!(linf.series.iter().all(|s| s.name != "pgd-l2"));
    // Across defenses: one colour per model/defense, the attack's marker on every line.
    let across = plots::attack_across_defenses(&r);
    let (_, fgsm_figure) = across
        .iter()
        .find(|(a, _)| a == "fgsm")
        .expect("fgsm figure");
    let series = &fgsm_figure.panels[0].series;
    assert_eq!(series.len(), 2);
    assert_ne!(series[0].look.color, series[1].look.color);
    assert_eq!(series[0].look.marker, series[1].look.marker);
    // Robust vs clean: one point per setting and budget, no text on the data.
    let scatter = plots::robust_vs_clean(&r).expect("scatter");
    let standard_8 = scatter.panels[0]
        .series
        .iter()
        .find(|s| s.name.starts_with("basic/standard, ε=8/255"))
        .expect("standard at 8/255");
    assert_eq!(standard_8.points.len(), 1, "seeds averaged");
    assert!(standard_8.points[0].x_err > 0.0 && standard_8.points[0].y_err > 0.0);
    assert!(scatter.legend.iter().any(|e| e.text == "ε=0.5 (ℓ2)"));
}
