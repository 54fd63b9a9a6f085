//! advsweep reports: turning stored results into what researchers read: pivot tables (Markdown,
//! CSV), long-format exports (CSV, JSON), the seed's figures (SVG, PDF, PNG) and each run's sanity
//! warnings. Works on partial sweeps: what exists is reported, what is missing is marked.
//!
//! A crate of its own because it is pure presentation over `advsweep-core` types
//! ([`SweepReport`], [`RunRecord`], [`CellRecord`], `RunSpec` for [`sanity`]): it depends on no
//! server code (not `advsweep-coordinator`, no SQLite, no gRPC of its own), so the `advsweep`
//! CLI, the server (sanity warnings on completion) and a future web dashboard render the same
//! tables and figures from the same code.

pub mod epsilon;
pub mod export;
pub mod pivot;
pub mod plots;
pub mod records;
pub mod sanity;
pub mod shards;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use advsweep_core::{ShownState, StateCounts};

pub use pivot::{Dim, Layout, Metric, Pivot};
pub use records::{CellRecord, RunRecord, SweepReport};

/// What [`write()`] produced.
#[derive(Debug, Default)]
pub struct Written {
    pub files: Vec<PathBuf>,
    /// Why plots were skipped, if they were.
    pub plots_skipped: Option<String>,
}

fn put(dir: &Path, name: &str, text: &str, written: &mut Written) -> std::io::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    written.files.push(path);
    Ok(())
}

/// A cascade's stages as reviewers read them: "APGD-CE 45.1 → APGD-T 44.3 → FAB-T 44.3 →
/// Square 44.3" (accuracy in %).
pub fn stage_line(stages: &[advsweep_core::StageAccuracy]) -> String {
    stages
        .iter()
        .map(|s| format!("{} {:.1}", s.title(), 100.0 * s.accuracy))
        .collect::<Vec<_>>()
        .join(" → ")
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `report.md`: the pivot, what is missing, and the warnings next to the numbers.
pub fn summary_markdown(r: &SweepReport, layout: &Layout, plots: &[PathBuf]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {} ({})\n", r.name, r.sweep_id);
    let done = StateCounts::of(r.cells.iter().map(|c| c.state)).done;
    let _ = writeln!(
        out,
        "State: **{}**, {done}/{} cells done, {} runs.\n",
        r.state,
        r.cells.len(),
        r.runs.len()
    );
    let pivot = Pivot::new(&r.cells, layout.clone());
    let _ = writeln!(out, "## {}{}\n", layout.metric.name(), layout.metric.unit());
    out.push_str(&pivot.markdown());
    let _ = writeln!(out, "\n{}.", capitalized(&pivot.legend()));
    let missing: Vec<_> = r
        .cells
        .iter()
        .filter(|c| c.state != ShownState::Done)
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(out, "\n## Missing cells ({})\n", missing.len());
        for c in missing {
            let _ = writeln!(
                out,
                "- {}/{} seed {}: {} ε={} — {}{}",
                c.model,
                c.defense,
                c.seed,
                c.attack,
                epsilon::label_in(c.epsilon, c.epsilon_space),
                c.state,
                c.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
    }
    let cascades: Vec<_> = r
        .cells
        .iter()
        .filter_map(|c| {
            let res = c.result.as_ref()?;
            (!res.stages.is_empty()).then_some((c, res))
        })
        .collect();
    if !cascades.is_empty() {
        let _ = writeln!(out, "\n## Cascades: accuracy (%) after each stage\n");
        for (c, res) in cascades {
            let _ = writeln!(
                out,
                "- {}/{} seed {}: {} ε={}: {}",
                c.model,
                c.defense,
                c.seed,
                c.attack,
                epsilon::label_in(c.epsilon, c.epsilon_space),
                stage_line(&res.stages)
            );
        }
    }
    let warned: Vec<_> = r.runs.iter().filter(|x| !x.warnings.is_empty()).collect();
    if !warned.is_empty() {
        let _ = writeln!(out, "\n## Sanity warnings\n");
        for run in warned {
            for w in &run.warnings {
                let _ = writeln!(
                    out,
                    "- **{}/{} seed {}** ({}): {w}",
                    run.model, run.defense, run.seed, run.run_id
                );
            }
        }
    }
    if !plots.is_empty() {
        let _ = writeln!(out, "\n## Figures\n");
        for p in plots
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "png"))
        {
            if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                let _ = writeln!(out, "![{name}]({name})");
            }
        }
    }
    out
}

/// Writes every report file for `r` into `dir` (created if needed); figures too when `plots`
/// gives their size.
pub fn write(
    r: &SweepReport,
    dir: &Path,
    layout: &Layout,
    plots: Option<plots::Canvas>,
) -> std::io::Result<Written> {
    std::fs::create_dir_all(dir)?;
    let mut written = Written::default();
    let pivot = Pivot::new(&r.cells, layout.clone());
    put(dir, "table.md", &pivot.markdown(), &mut written)?;
    put(dir, "table.csv", &pivot.csv(), &mut written)?;
    put(dir, "cells.csv", &export::cells_csv(r), &mut written)?;
    put(dir, "epochs.csv", &export::epochs_csv(r), &mut written)?;
    put(dir, "sweep.json", &export::json(r), &mut written)?;
    let mut plot_files = Vec::new();
    if let Some(canvas) = plots {
        for (stem, figure) in figures(r) {
            match plots::render(&figure, dir, &stem, canvas) {
                Ok(files) => plot_files.extend(files),
                Err(why) => {
                    written.plots_skipped = Some(why);
                    break;
                }
            }
        }
    }
    put(
        dir,
        "report.md",
        &summary_markdown(r, layout, &plot_files),
        &mut written,
    )?;
    written.files.extend(plot_files);
    Ok(written)
}

/// Every figure of a sweep with its file stem: accuracy vs ε per model/defense and per attack
/// across defenses, the learning curves, robust vs clean.
pub fn figures(r: &SweepReport) -> Vec<(String, plots::Figure)> {
    let mut out: Vec<(String, plots::Figure)> = plots::accuracy_vs_epsilon(r)
        .into_iter()
        .map(|((m, d), f)| {
            (
                format!(
                    "accuracy_vs_epsilon-{}-{}",
                    plots::slug(&m),
                    plots::slug(&d)
                ),
                f,
            )
        })
        .collect();
    out.extend(
        plots::attack_across_defenses(r)
            .into_iter()
            .map(|(a, f)| (format!("accuracy_vs_epsilon-attack-{}", plots::slug(&a)), f)),
    );
    out.extend(
        plots::learning_curves(r)
            .into_iter()
            .map(|(n, f)| (n.to_owned(), f)),
    );
    out.extend(plots::robust_vs_clean(r).map(|f| ("robust_vs_clean".to_owned(), f)));
    out
}
