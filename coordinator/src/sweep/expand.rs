//! Validation and expansion of a sweep file into runs (training jobs) and cells (evaluations).
//!
//! Grid semantics (see PRODUCT.md): a run is (model, defense, seed, training, data); a cell is
//! (run, attack, ε). Cells of a run share its weights. A defense whose ε is `"tied"` gets one
//! run per grid ε, evaluated at that ε only. The clean attack `none` gets one cell per run.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use advsweep_spec::{
    Attack, CellSpec, DataSource, DataSpec, Defense, Model, Norm, Optimizer, RunSpec, StepSize,
    TrainingSpec,
};

use super::file::{
    AttackPreset, DataSection, DefensePreset, EpsilonSetting, NormName, SWEEP_FILE_VERSION,
    SweepFile,
};
use super::{ids, presets};

/// Everything that can be wrong with a sweep file. Messages name the file, key or value.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("cannot read sweep file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// A sweep file expanded into the work it asks for.
#[derive(Debug, Clone)]
pub struct Plan {
    pub sweep_id: String,
    pub name: String,
    pub description: String,
    pub runs: Vec<RunSpec>,
    pub cells: Vec<CellSpec>,
}

impl Plan {
    pub fn cells_of<'a>(&'a self, run_id: &'a str) -> impl Iterator<Item = &'a CellSpec> + 'a {
        self.cells.iter().filter(move |c| c.run_id == run_id)
    }
}

/// Settings applied on top of the file (command-line flags, environment).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replaces `data.path` of a CIFAR-10 sweep.
    pub data_path: Option<String>,
}

/// Parses the TOML text of a sweep file. `origin` names it in error messages.
pub fn parse_sweep(text: &str, origin: &str) -> Result<SweepFile, SweepError> {
    let parse_error = |message: String| SweepError::Parse {
        origin: origin.to_owned(),
        message,
    };
    let raw = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .map_err(|e| parse_error(e.to_string()))?;
    // Check the version first so an old or future file gets a version error, not a key error.
    match raw.get::<i64>("version") {
        Ok(v) if v == i64::from(SWEEP_FILE_VERSION) => {}
        Ok(v) => {
            return Err(parse_error(format!(
                "unsupported sweep file version {v} (this build reads version {SWEEP_FILE_VERSION})"
            )));
        }
        Err(_) => {
            return Err(parse_error(format!(
                "missing `version = {SWEEP_FILE_VERSION}` at the top of the file"
            )));
        }
    }
    raw.try_deserialize::<SweepFile>()
        .map_err(|e| parse_error(e.to_string()))
}

/// Reads, parses, validates and expands a sweep file.
pub fn load_plan(path: &Path, overrides: &Overrides) -> Result<Plan, SweepError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SweepError::Read {
        path: origin.clone(),
        source,
    })?;
    let file = parse_sweep(&text, &origin)?;
    expand(&file, overrides, &origin)
}

struct Validator<'a> {
    origin: &'a str,
}

impl Validator<'_> {
    fn fail<T>(&self, message: impl Into<String>) -> Result<T, SweepError> {
        Err(SweepError::Invalid {
            origin: self.origin.to_owned(),
            message: message.into(),
        })
    }

    fn check(&self, ok: bool, message: impl FnOnce() -> String) -> Result<(), SweepError> {
        if ok { Ok(()) } else { self.fail(message()) }
    }

    fn non_empty<T>(&self, axis: &str, values: &[T]) -> Result<(), SweepError> {
        self.check(!values.is_empty(), || {
            format!("grid.{axis} is empty: list at least one value")
        })
    }

    fn unique_names(&self, axis: &str, names: &[String]) -> Result<(), SweepError> {
        let mut seen = HashSet::new();
        for name in names {
            if !seen.insert(name) {
                return self.fail(format!("grid.{axis} lists `{name}` twice"));
            }
        }
        Ok(())
    }

    fn epsilon(&self, key: &str, value: f64) -> Result<f64, SweepError> {
        self.check(value.is_finite() && value >= 0.0, || {
            format!("{key} = {value}: ε must be a non-negative finite number")
        })?;
        Ok(value)
    }
}

fn norm(name: NormName) -> Norm {
    match name {
        NormName::Linf => Norm::Linf,
        NormName::L2 => Norm::L2,
    }
}

fn resolve_attack(
    v: &Validator,
    file: &SweepFile,
    name: &str,
    key: &str,
) -> Result<Attack, SweepError> {
    let preset = match file.attacks.get(name) {
        Some(p) => p.clone(),
        None => match presets::builtin_attack(name) {
            Some(p) => p,
            None => {
                let defined: Vec<&str> = file.attacks.keys().map(String::as_str).collect();
                return v.fail(format!(
                    "{key}: unknown attack preset `{name}` (built-in: {}{})",
                    presets::BUILTIN_ATTACKS.join(", "),
                    if defined.is_empty() {
                        String::new()
                    } else {
                        format!("; defined in this file: {}", defined.join(", "))
                    }
                ));
            }
        },
    };
    let at = format!("attack preset `{name}`");
    match preset {
        AttackPreset::None => Ok(Attack::None),
        AttackPreset::Fgsm {
            norm: n,
            random_start,
            step_fraction,
        } => {
            let step_fraction = step_fraction.unwrap_or(1.0);
            v.check(step_fraction.is_finite() && step_fraction > 0.0, || {
                format!("{at}: step_fraction = {step_fraction} must be positive")
            })?;
            Ok(Attack::Fgsm {
                norm: norm(n),
                random_start,
                step_fraction,
            })
        }
        AttackPreset::Pgd {
            norm: n,
            steps,
            step_size,
            step_fraction,
            random_start,
            restarts,
        } => {
            v.check(steps >= 1, || format!("{at}: steps must be at least 1"))?;
            v.check(restarts >= 1, || {
                format!("{at}: restarts must be at least 1")
            })?;
            let step = match (step_size, step_fraction) {
                (Some(_), Some(_)) => {
                    return v.fail(format!(
                        "{at}: set either step_size or step_fraction, not both"
                    ));
                }
                (Some(s), None) => StepSize::Absolute(s),
                (None, Some(f)) => StepSize::FractionOfEpsilon(f),
                (None, None) => StepSize::FractionOfEpsilon(2.5 / f64::from(steps)),
            };
            let (StepSize::Absolute(s) | StepSize::FractionOfEpsilon(s)) = step;
            v.check(s.is_finite() && s > 0.0, || {
                format!("{at}: step size {s} must be positive")
            })?;
            Ok(Attack::Pgd {
                norm: norm(n),
                steps,
                step,
                random_start,
                restarts,
            })
        }
    }
}

/// A defense with its ε still possibly tied.
struct ResolvedDefense {
    name: String,
    build: DefenseTemplate,
}

enum DefenseTemplate {
    Standard,
    Adversarial {
        attack: Attack,
        epsilon: EpsilonSetting,
        fraction: f64,
    },
}

fn resolve_defense(
    v: &Validator,
    file: &SweepFile,
    name: &str,
) -> Result<ResolvedDefense, SweepError> {
    let preset = match file.defenses.get(name) {
        Some(p) => p.clone(),
        None => match presets::builtin_defense(name) {
            Some(p) => p,
            None => {
                let defined: Vec<&str> = file.defenses.keys().map(String::as_str).collect();
                return v.fail(format!(
                    "grid.defenses: unknown defense preset `{name}` (built-in: {}{})",
                    presets::BUILTIN_DEFENSES.join(", "),
                    if defined.is_empty() {
                        String::new()
                    } else {
                        format!("; defined in this file: {}", defined.join(", "))
                    }
                ));
            }
        },
    };
    let build = match preset {
        DefensePreset::Standard => DefenseTemplate::Standard,
        DefensePreset::Adversarial {
            attack,
            epsilon,
            fraction,
        } => {
            let key = format!("defense preset `{name}`");
            let resolved = resolve_attack(v, file, &attack, &format!("{key}: attack"))?;
            v.check(!resolved.is_none(), || {
                format!("{key}: adversarial training needs an attack other than `none`")
            })?;
            v.check(fraction > 0.0 && fraction <= 1.0, || {
                format!("{key}: fraction = {fraction} must be in (0, 1]")
            })?;
            if let EpsilonSetting::Fixed(e) = epsilon {
                v.epsilon(&format!("{key}: epsilon"), e)?;
            }
            DefenseTemplate::Adversarial {
                attack: resolved,
                epsilon,
                fraction,
            }
        }
    };
    Ok(ResolvedDefense {
        name: name.to_owned(),
        build,
    })
}

fn training(v: &Validator, file: &SweepFile) -> Result<TrainingSpec, SweepError> {
    let t = &file.training;
    v.check(t.epochs >= 1, || {
        "training.epochs must be at least 1".into()
    })?;
    v.check(t.batch_size >= 1, || {
        "training.batch_size must be at least 1".into()
    })?;
    v.check(t.learning_rate.is_finite() && t.learning_rate > 0.0, || {
        format!(
            "training.learning_rate = {} must be positive",
            t.learning_rate
        )
    })?;
    v.check((0.0..1.0).contains(&t.momentum), || {
        format!("training.momentum = {} must be in [0, 1)", t.momentum)
    })?;
    v.check(t.weight_decay.is_finite() && t.weight_decay >= 0.0, || {
        format!(
            "training.weight_decay = {} must be non-negative",
            t.weight_decay
        )
    })?;
    let optimizer = match t.optimizer.as_str() {
        "sgd" => Optimizer::Sgd {
            momentum: t.momentum,
            weight_decay: t.weight_decay,
            nesterov: t.nesterov,
        },
        other => {
            return v.fail(format!(
                "training.optimizer: unknown optimizer `{other}` (known: sgd)"
            ));
        }
    };
    v.check(file.evaluation.batch_size >= 1, || {
        "evaluation.batch_size must be at least 1".into()
    })?;
    Ok(TrainingSpec {
        epochs: t.epochs,
        batch_size: t.batch_size,
        learning_rate: t.learning_rate,
        optimizer,
        augment: t.augment,
        eval_batch_size: file.evaluation.batch_size,
    })
}

fn data(v: &Validator, file: &SweepFile, overrides: &Overrides) -> Result<DataSpec, SweepError> {
    let (source, train_limit) = match &file.data {
        DataSection::Synthetic {
            seed,
            train_size,
            test_size,
            train_limit,
        } => {
            v.check(*train_size >= 10 && *test_size >= 10, || {
                "data: synthetic train_size and test_size must be at least 10".into()
            })?;
            (
                DataSource::Synthetic {
                    seed: *seed,
                    train_size: *train_size,
                    test_size: *test_size,
                },
                *train_limit,
            )
        }
        DataSection::Cifar10 { path, train_limit } => {
            let path = overrides.data_path.clone().unwrap_or_else(|| path.clone());
            v.check(!path.trim().is_empty(), || "data.path is empty".into())?;
            (DataSource::Cifar10Binary { path }, *train_limit)
        }
    };
    Ok(DataSpec {
        source,
        eval_limit: file.evaluation.limit,
        train_limit,
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Validates a parsed sweep file and expands it. Runs and cells come out in file order, with
/// content duplicates (two preset names for the same experiment) merged.
pub fn expand(file: &SweepFile, overrides: &Overrides, origin: &str) -> Result<Plan, SweepError> {
    let v = Validator { origin };
    v.check(valid_name(&file.name), || {
        format!(
            "name = {:?}: use 1-64 letters, digits, '-', '_' or '.'",
            file.name
        )
    })?;
    let grid = &file.grid;
    v.non_empty("models", &grid.models)?;
    v.non_empty("defenses", &grid.defenses)?;
    v.non_empty("attacks", &grid.attacks)?;
    v.non_empty("epsilons", &grid.epsilons)?;
    v.non_empty("seeds", &grid.seeds)?;
    v.unique_names("models", &grid.models)?;
    v.unique_names("defenses", &grid.defenses)?;
    v.unique_names("attacks", &grid.attacks)?;
    for model in &grid.models {
        v.check(presets::MODELS.contains(&model.as_str()), || {
            format!(
                "grid.models: unknown model `{model}` (known: {})",
                presets::MODELS.join(", ")
            )
        })?;
    }
    let mut epsilons = Vec::with_capacity(grid.epsilons.len());
    for (i, e) in grid.epsilons.iter().enumerate() {
        let e = v.epsilon(&format!("grid.epsilons[{i}]"), e.0)?;
        v.check(!epsilons.contains(&e), || {
            format!("grid.epsilons lists {e} twice")
        })?;
        epsilons.push(e);
    }
    let mut seen_seeds = HashSet::new();
    for seed in &grid.seeds {
        v.check(seen_seeds.insert(seed), || {
            format!("grid.seeds lists {seed} twice")
        })?;
    }
    let attacks = grid
        .attacks
        .iter()
        .map(|name| {
            Ok((
                name.clone(),
                resolve_attack(&v, file, name, "grid.attacks")?,
            ))
        })
        .collect::<Result<Vec<_>, SweepError>>()?;
    let defenses = grid
        .defenses
        .iter()
        .map(|name| resolve_defense(&v, file, name))
        .collect::<Result<Vec<_>, _>>()?;
    let training = training(&v, file)?;
    let data = data(&v, file, overrides)?;

    let mut runs: BTreeMap<String, ()> = BTreeMap::new();
    let mut cell_seen: HashSet<String> = HashSet::new();
    let mut plan_runs = Vec::new();
    let mut plan_cells = Vec::new();
    for model_name in &grid.models {
        let model = Model {
            name: model_name.clone(),
        };
        for defense in &defenses {
            // (defense, the ε it is tied to, if any)
            let variants: Vec<(Defense, Option<f64>)> = match &defense.build {
                DefenseTemplate::Standard => vec![(Defense::Standard, None)],
                DefenseTemplate::Adversarial {
                    attack,
                    epsilon,
                    fraction,
                } => match epsilon {
                    EpsilonSetting::Fixed(e) => vec![(
                        Defense::Adversarial {
                            attack: attack.clone(),
                            epsilon: *e,
                            fraction: *fraction,
                        },
                        None,
                    )],
                    EpsilonSetting::Tied => epsilons
                        .iter()
                        .map(|e| {
                            (
                                Defense::Adversarial {
                                    attack: attack.clone(),
                                    epsilon: *e,
                                    fraction: *fraction,
                                },
                                Some(*e),
                            )
                        })
                        .collect(),
                },
            };
            for seed in &grid.seeds {
                for (defense_spec, tied) in &variants {
                    let run_id = ids::run_id(&model, defense_spec, &training, &data, *seed);
                    if runs.insert(run_id.clone(), ()).is_some() {
                        continue;
                    }
                    for (attack_name, attack) in &attacks {
                        let cell_epsilons: Vec<f64> = match (attack.is_none(), tied) {
                            (true, Some(e)) => vec![*e],
                            (true, None) => vec![0.0],
                            (false, Some(e)) => vec![*e],
                            (false, None) => epsilons.clone(),
                        };
                        for epsilon in cell_epsilons {
                            let id = ids::cell_id(&run_id, attack, epsilon);
                            if cell_seen.insert(id.clone()) {
                                plan_cells.push(CellSpec {
                                    id,
                                    run_id: run_id.clone(),
                                    attack_name: attack_name.clone(),
                                    attack: attack.clone(),
                                    epsilon,
                                });
                            }
                        }
                    }
                    plan_runs.push(RunSpec {
                        id: run_id,
                        model: model.clone(),
                        defense_name: defense.name.clone(),
                        defense: defense_spec.clone(),
                        training: training.clone(),
                        data: data.clone(),
                        seed: *seed,
                    });
                }
            }
        }
    }
    let cell_ids: Vec<String> = plan_cells.iter().map(|c| c.id.clone()).collect();
    Ok(Plan {
        sweep_id: ids::sweep_id(&file.name, &cell_ids),
        name: file.name.clone(),
        description: file.description.clone().unwrap_or_default(),
        runs: plan_runs,
        cells: plan_cells,
    })
}
