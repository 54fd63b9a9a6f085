//! Validation and expansion of a sweep file into runs (training jobs) and cells (evaluations).
//!
//! Grid semantics (see PRODUCT.md): a run is (model, defense, seed, training, data); a cell is
//! (run, attack, ε). Cells of a run share its weights. A defense whose ε is `"tied"` gets one
//! run per grid ε, evaluated at that ε only. The clean attack `none` gets one cell per run.
//!
//! Sweep files arrive from anyone who can reach the coordinator, so expansion is defensive:
//! names are restricted to a file- and table-safe charset, every value is checked by the
//! vocabulary's own `validate()` (the rules `advsweep_core::wire` decoding applies on the worker
//! side), and the number of cells is counted with saturating arithmetic and checked against
//! [`Limits`] before any cell is built.
//!
//! Phases, one module each: `check` (the file's own syntax rules, and how vocabulary errors are
//! shown in the file's spelling), `attacks`, `models` and `defenses` (presets resolved),
//! `training` (the `[training]`, `[evaluation]` and `[data]` tables), `grid` (counting and
//! building runs and cells).

use std::collections::HashSet;
use std::path::Path;

use advsweep_core::limits::MAX_SWEEP_FILE_BYTES;
use advsweep_core::validate::{epsilon, shown};
use advsweep_core::{CellSpec, RunId, RunSpec, SweepId};
use advsweep_settings::files::{ReadError, read_bounded_text};

use super::file::{self, ParseError, SweepFile};
use super::ids;
use super::model_files::{LocalModelFile, ModelFiles, hash_local, refs};

mod attacks;
mod check;
mod defenses;
mod grid;
mod models;
mod training;

pub use check::{MAX_NAME_LEN, valid_name};
use check::{Validator, check_names, check_sweep_name};
use grid::Grid;

/// Everything that can be wrong with a sweep file. Messages name the file, key or value; a
/// parse error also its `line:column` (`sweep.toml:3:10: training.epochs: …`).
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("cannot read sweep file {path}: {source}")]
    Read { path: String, source: ReadError },
    #[error("{}", located(origin, error))]
    Parse { origin: String, error: ParseError },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// `origin:line:column: …` when the error has a place, `origin: …` when it is about the file.
fn located(origin: &str, error: &ParseError) -> String {
    if error.at.is_some() {
        format!("{origin}:{error}")
    } else {
        format!("{origin}: {error}")
    }
}

/// A sweep file expanded into the work it asks for.
#[derive(Debug, Clone)]
pub struct Plan {
    pub sweep_id: SweepId,
    pub name: String,
    pub description: String,
    pub runs: Vec<RunSpec>,
    pub cells: Vec<CellSpec>,
    /// Failed attempts (errors, lost workers) before a run is failed for good.
    pub max_attempts: u32,
    /// The model files the sweep file names, found and hashed on this machine ([`load_plan`]
    /// only: a client uploads them; the coordinator knows them by hash).
    pub local_files: Vec<LocalModelFile>,
}

impl Plan {
    pub fn cells_of<'a>(&'a self, run_id: &'a RunId) -> impl Iterator<Item = &'a CellSpec> + 'a {
        self.cells.iter().filter(move |c| &c.run_id == run_id)
    }
}

/// Limits a coordinator puts on what one sweep may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most cells one sweep may expand to (checked before the grid is built).
    pub max_cells: u64,
    /// Largest model file a client may upload (`max_model_file_bytes`).
    pub max_model_file_bytes: u64,
}

impl Limits {
    /// The default [`Limits::max_cells`]: the largest sweep the coordinator is benchmarked at
    /// (the default of the `max_cells_per_sweep` setting).
    pub const DEFAULT_MAX_CELLS: u64 = advsweep_settings::coordinator::DEFAULT_MAX_CELLS_PER_SWEEP;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_cells: Limits::DEFAULT_MAX_CELLS,
            max_model_file_bytes: advsweep_settings::coordinator::DEFAULT_MAX_MODEL_FILE_BYTES,
        }
    }
}

/// Settings applied on top of the file (command-line flags, environment).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replaces `data.path` of a CIFAR-10 sweep.
    pub data_path: Option<String>,
    /// The model files the sweep file names, by the path as written: what expansion puts in
    /// the models (and so in the run ids). A named file missing here is an error.
    pub model_files: ModelFiles,
}

/// Parses the TOML text of a sweep file, strictly (`file::parse`: no type is coerced, errors
/// name the key and its line). `origin` names it in error messages. Text over
/// [`MAX_SWEEP_FILE_BYTES`] is refused before it is parsed, as `submit` refuses it.
pub fn parse_sweep(text: &str, origin: &str) -> Result<SweepFile, SweepError> {
    if text.len() > MAX_SWEEP_FILE_BYTES {
        return Err(SweepError::Parse {
            origin: origin.to_owned(),
            error: ParseError {
                at: None,
                key: None,
                message: format!(
                    "the file is {} bytes, more than the limit of {MAX_SWEEP_FILE_BYTES} bytes",
                    text.len()
                ),
            },
        });
    }
    file::parse(text).map_err(|error| SweepError::Parse {
        origin: origin.to_owned(),
        error,
    })
}

/// Reads (a regular file, at most [`MAX_SWEEP_FILE_BYTES`]), parses, validates and expands a
/// sweep file (within the default [`Limits`]), with the model files it names found beside it
/// and hashed ([`Plan::local_files`]).
pub fn load_plan(path: &Path, overrides: &Overrides) -> Result<Plan, SweepError> {
    let origin = path.display().to_string();
    let text = read_sweep_file(path)?;
    let file = parse_sweep(&text, &origin)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let local_files = hash_local(&file, base, &origin)?;
    let mut overrides = overrides.clone();
    overrides.model_files.extend(refs(&local_files));
    let mut plan = expand(&file, &overrides, &origin)?;
    plan.local_files = local_files;
    Ok(plan)
}

/// The text of the sweep file at `path`: a regular file of at most [`MAX_SWEEP_FILE_BYTES`]
/// (never `/dev/zero` read until memory runs out). `submit` reads its file with this too.
pub fn read_sweep_file(path: &Path) -> Result<String, SweepError> {
    read_bounded_text(path, MAX_SWEEP_FILE_BYTES as u64).map_err(|source| SweepError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// [`expand_within`] the default [`Limits`].
pub fn expand(file: &SweepFile, overrides: &Overrides, origin: &str) -> Result<Plan, SweepError> {
    expand_within(file, overrides, origin, &Limits::default())
}

/// Validates a parsed sweep file and expands it. Runs and cells come out in file order, with
/// content duplicates (two preset names for the same experiment) merged. A grid of more than
/// `limits.max_cells` cells is refused before it is built.
pub fn expand_within(
    file: &SweepFile,
    overrides: &Overrides,
    origin: &str,
    limits: &Limits,
) -> Result<Plan, SweepError> {
    let v = Validator { origin };
    check_header(&v, file)?;
    let grid = resolve_grid(&v, file, overrides)?;
    check_presets(&v, file, overrides)?;
    let cells = grid.count_cells();
    v.check(cells <= limits.max_cells, || {
        format!(
            "sweep expands to {cells} cells, more than the coordinator's max_cells_per_sweep = {}",
            limits.max_cells
        )
    })?;
    let (runs, cells) = grid.build(&v)?;
    Ok(Plan {
        sweep_id: ids::sweep_id(&file.name, cells.iter().map(|c| &c.id)),
        name: file.name.clone(),
        description: file.description.clone().unwrap_or_default(),
        runs,
        cells,
        max_attempts: file.retry.max_attempts,
        local_files: Vec::new(),
    })
}

/// `[retry]`, the sweep's name, and the grid's axes: non-empty, valid names, no repeats.
fn check_header(v: &Validator, file: &SweepFile) -> Result<(), SweepError> {
    v.check((1..=100).contains(&file.retry.max_attempts), || {
        format!(
            "retry.max_attempts = {} must be in 1..=100",
            file.retry.max_attempts
        )
    })?;
    check_sweep_name(v, &file.name)?;
    let grid = &file.grid;
    v.non_empty("models", &grid.models)?;
    v.non_empty("defenses", &grid.defenses)?;
    v.non_empty("attacks", &grid.attacks)?;
    v.non_empty("epsilons", &grid.epsilons)?;
    v.non_empty("seeds", &grid.seeds)?;
    for (axis, names) in [
        ("models", &grid.models),
        ("defenses", &grid.defenses),
        ("attacks", &grid.attacks),
    ] {
        check_names(v, axis, names)?;
    }
    for (axis, names) in [
        ("models", &grid.models),
        ("defenses", &grid.defenses),
        ("attacks", &grid.attacks),
    ] {
        v.unique_names(axis, names)?;
    }
    let mut seen_seeds = HashSet::new();
    for seed in &grid.seeds {
        v.check(seen_seeds.insert(seed), || {
            format!("grid.seeds lists {seed} twice")
        })?;
    }
    Ok(())
}

/// Every preset table the file defines, whether the grid uses it or not: a valid name, and a
/// preset that resolves and validates. An unused table is still stored with the sweep and shown
/// by `status`, so `[attacks."../../evil"]` is refused like a used one.
fn check_presets(v: &Validator, file: &SweepFile, overrides: &Overrides) -> Result<(), SweepError> {
    for (table, names) in [
        ("models", file.models.keys().collect::<Vec<_>>()),
        ("attacks", file.attacks.keys().collect()),
        ("defenses", file.defenses.keys().collect()),
    ] {
        for name in names {
            v.check(valid_name(name), || {
                format!(
                    "[{table}.{}]: names use 1-{MAX_NAME_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit",
                    shown(name, 64)
                )
            })?;
        }
    }
    for name in file.models.keys() {
        models::resolve_model(v, file, &overrides.model_files, name)?;
    }
    for name in file.attacks.keys() {
        attacks::resolve_attack(v, file, name, &format!("attacks.{name}"))?;
    }
    for name in file.defenses.keys() {
        defenses::resolve_defense(v, file, name)?;
    }
    Ok(())
}

/// The grid's ε: valid budgets, -0.0 as 0.0 (one cell id for both), no repeats.
fn grid_epsilons(v: &Validator, file: &SweepFile) -> Result<Vec<f64>, SweepError> {
    let mut epsilons = Vec::with_capacity(file.grid.epsilons.len());
    let mut seen = HashSet::new();
    for (i, e) in file.grid.epsilons.iter().enumerate() {
        v.check(epsilon("grid.epsilons", e.0).is_ok(), || {
            format!(
                "grid.epsilons[{i}] = {}: ε must be a non-negative finite number",
                e.0
            )
        })?;
        let e = if e.0 == 0.0 { 0.0 } else { e.0 };
        v.check(seen.insert(e.to_bits()), || {
            format!("grid.epsilons lists {e} twice")
        })?;
        epsilons.push(e);
    }
    Ok(epsilons)
}

/// Every axis resolved (presets looked up and validated) and what the runs share.
fn resolve_grid(
    v: &Validator,
    file: &SweepFile,
    overrides: &Overrides,
) -> Result<Grid, SweepError> {
    let grid = &file.grid;
    let epsilons = grid_epsilons(v, file)?;
    let models = grid
        .models
        .iter()
        .map(|name| models::resolve_model(v, file, &overrides.model_files, name))
        .collect::<Result<Vec<_>, _>>()?;
    let attacks = grid
        .attacks
        .iter()
        .map(|name| {
            let template = attacks::resolve_attack(v, file, name, "grid.attacks")?;
            Ok((name.clone(), template))
        })
        .collect::<Result<Vec<_>, SweepError>>()?;
    let defenses = grid
        .defenses
        .iter()
        .map(|name| defenses::resolve_defense(v, file, name))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Grid {
        models,
        defenses,
        attacks,
        epsilons,
        seeds: grid.seeds.clone(),
        training: training::training(v, file)?,
        data: training::data(v, file, overrides)?,
        epsilon_space: file.epsilon_space,
        auto_eot: file.evaluation.eot_samples,
        shards: training::shards(v, file)?,
    })
}
