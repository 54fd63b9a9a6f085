//! Validation and expansion of a sweep file into runs (training jobs) and cells (evaluations).
//!
//! Grid semantics (see PRODUCT.md): a run is (model, defense, seed, training, data); a cell is
//! (run, attack, ε). Cells of a run share its weights. A defense whose ε is `"tied"` gets one
//! run per grid ε, evaluated at that ε only. The clean attack `none` gets one cell per run.
//!
//! Sweep files arrive from anyone who can reach the coordinator, so expansion is defensive:
//! names are restricted to a file- and table-safe charset, every number is bounded (the same
//! bounds `advsweep_core::wire` enforces on the worker side), and the number of cells is counted
//! with saturating arithmetic and checked against [`Limits`] before any cell is built.

use std::collections::HashSet;
use std::path::Path;

use advsweep_core::wire::{
    self, MAX_BATCH_SIZE, MAX_DENOISER_BLOCKS, MAX_DENOISER_CHANNELS, MAX_EOT_SAMPLES, MAX_EPOCHS,
    MAX_PGD_STEPS, MAX_RESTARTS, MAX_SYNTHETIC_IMAGES,
};
use advsweep_core::{
    Arch, Attack, CellSpec, DataSource, DataSpec, Defense, DenoiserSpec, EpsilonSpace, LrSchedule,
    MixStrategy, Model, NoiseInjection, Norm, Optimizer, Precision, RunSpec, StepSize,
    TrainingMethod, TrainingSpec,
};

use super::file::{
    AttackPreset, DataSection, EotSetting, EpsilonSetting, EpsilonSpaceName, NormName,
    SWEEP_FILE_VERSION, SweepFile,
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
    /// Failed attempts (errors, lost workers) before a run is failed for good.
    pub max_attempts: u32,
}

impl Plan {
    pub fn cells_of<'a>(&'a self, run_id: &'a str) -> impl Iterator<Item = &'a CellSpec> + 'a {
        self.cells.iter().filter(move |c| c.run_id == run_id)
    }
}

/// Limits a coordinator puts on what one sweep may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most cells one sweep may expand to (checked before the grid is built).
    pub max_cells: u64,
}

impl Limits {
    /// The default [`Limits::max_cells`]: the largest sweep the coordinator is benchmarked at.
    pub const DEFAULT_MAX_CELLS: u64 = 100_000;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_cells: Limits::DEFAULT_MAX_CELLS,
        }
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

/// Reads, parses, validates and expands a sweep file (within the default [`Limits`]).
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

    fn non_empty_list<T>(&self, key: &str, values: &[T]) -> Result<(), SweepError> {
        self.check(!values.is_empty(), || format!("{key} is empty"))
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

/// A resolved attack whose EOT may still depend on the run it attacks.
#[derive(Debug, Clone)]
struct AttackTemplate {
    attack: Attack,
    eot: EotSetting,
}

impl AttackTemplate {
    /// The attack against a model that is (or is not) randomized; `auto_samples` is what
    /// `eot = "auto"` means against a randomized model.
    fn resolve(&self, randomized: bool, auto_samples: u32) -> Attack {
        match self.eot {
            EotSetting::Samples(k) => self.attack.with_eot(k),
            EotSetting::Auto if randomized => self.attack.with_eot(auto_samples),
            EotSetting::Auto => self.attack.with_eot(1),
        }
    }

    /// For training-time attacks, `auto` means a single sample (EOT is an evaluation tool).
    fn for_training(&self) -> Attack {
        self.resolve(false, 1)
    }
}

fn unknown_preset(
    what: &str,
    key: &str,
    name: &str,
    builtin: &[&str],
    defined: Vec<&str>,
) -> String {
    format!(
        "{key}: unknown {what} `{name}` (built-in: {}{})",
        builtin.join(", "),
        if defined.is_empty() {
            String::new()
        } else {
            format!("; defined in this file: {}", defined.join(", "))
        }
    )
}

fn resolve_attack(
    v: &Validator,
    file: &SweepFile,
    name: &str,
    key: &str,
) -> Result<AttackTemplate, SweepError> {
    let preset = match file.attacks.get(name) {
        Some(p) => p.clone(),
        None => match presets::builtin_attack(name) {
            Some(p) => p,
            None => {
                return v.fail(unknown_preset(
                    "attack preset",
                    key,
                    name,
                    presets::BUILTIN_ATTACKS,
                    file.attacks.keys().map(String::as_str).collect(),
                ));
            }
        },
    };
    let at = format!("attack preset `{name}`");
    let check_eot = |eot: EotSetting| -> Result<EotSetting, SweepError> {
        if let EotSetting::Samples(k) = eot {
            v.check(k <= MAX_EOT_SAMPLES, || {
                format!("{at}: eot = {k} is more than {MAX_EOT_SAMPLES}")
            })?;
        }
        Ok(eot)
    };
    match preset {
        AttackPreset::None => Ok(AttackTemplate {
            attack: Attack::None,
            eot: EotSetting::Samples(1),
        }),
        AttackPreset::Fgsm {
            norm: n,
            random_start,
            step_fraction,
            eot,
        } => {
            let step_fraction = step_fraction.unwrap_or(1.0);
            v.check(step_fraction.is_finite() && step_fraction > 0.0, || {
                format!("{at}: step_fraction = {step_fraction} must be positive")
            })?;
            Ok(AttackTemplate {
                attack: Attack::Fgsm {
                    norm: norm(n),
                    random_start,
                    step_fraction,
                    eot: 1,
                },
                eot: check_eot(eot)?,
            })
        }
        AttackPreset::Pgd {
            norm: n,
            steps,
            step_size,
            step_fraction,
            random_start,
            restarts,
            eot,
        } => {
            v.check((1..=MAX_PGD_STEPS).contains(&steps), || {
                format!("{at}: steps = {steps} must be in 1..={MAX_PGD_STEPS}")
            })?;
            v.check((1..=MAX_RESTARTS).contains(&restarts), || {
                format!("{at}: restarts = {restarts} must be in 1..={MAX_RESTARTS}")
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
            Ok(AttackTemplate {
                attack: Attack::Pgd {
                    norm: norm(n),
                    steps,
                    step,
                    random_start,
                    restarts,
                    eot: 1,
                },
                eot: check_eot(eot)?,
            })
        }
    }
}

/// A grid model: its display name and resolved spec.
struct ResolvedModel {
    name: String,
    model: Model,
}

fn resolve_model(v: &Validator, file: &SweepFile, name: &str) -> Result<ResolvedModel, SweepError> {
    let preset = match file.models.get(name) {
        Some(p) => p.clone(),
        None => match presets::builtin_model(name) {
            Some(p) => p,
            None => {
                // Name the architecture problem precisely when it looks like one (wrn-27-10).
                let why = match name.strip_prefix("noisy-").unwrap_or(name) {
                    arch if arch.starts_with("wrn-") => Arch::parse(arch).err(),
                    _ => None,
                };
                return v.fail(why.map(|w| format!("grid.models: {w}")).unwrap_or_else(|| {
                    unknown_preset(
                        "model",
                        "grid.models",
                        name,
                        presets::BUILTIN_MODELS,
                        file.models.keys().map(String::as_str).collect(),
                    )
                }));
            }
        },
    };
    let at = format!("model `{name}`");
    let arch = Arch::parse(&preset.arch).or_else(|e| v.fail(format!("{at}: {e}")))?;
    let noise = match preset.noise {
        None => None,
        Some(n) => {
            v.check(n.sigma.is_finite() && n.sigma >= 0.0, || {
                format!(
                    "{at}: noise.sigma = {} must be a non-negative number",
                    n.sigma
                )
            })?;
            v.non_empty_list(&format!("{at}: noise.layers"), &n.layers)?;
            let points = arch.noise_points();
            let mut layers: Vec<String> = Vec::new();
            for layer in &n.layers {
                let expanded: Vec<&str> = match layer.as_str() {
                    "all" => points.to_vec(),
                    "hidden" => points.iter().copied().filter(|p| *p != "input").collect(),
                    point if points.contains(&point) => vec![point],
                    other => {
                        return v.fail(format!(
                            "{at}: noise.layers: `{other}` is not an injection point of {} (points: {}, or \"hidden\" / \"all\")",
                            preset.arch,
                            points.join(", ")
                        ));
                    }
                };
                for p in expanded {
                    if !layers.iter().any(|l| l == p) {
                        layers.push(p.to_owned());
                    }
                }
            }
            // Canonical order (the architecture's), so ids do not depend on how layers are listed.
            layers.sort_by_key(|l| points.iter().position(|p| p == l));
            Some(NoiseInjection {
                sigma: n.sigma,
                layers,
                learnable: n.learnable,
            })
        }
    };
    Ok(ResolvedModel {
        name: name.to_owned(),
        model: Model {
            name: preset.arch.clone(),
            noise,
        },
    })
}

/// A defense whose ε may still be tied to the grid's.
struct ResolvedDefense {
    name: String,
    method: MethodTemplate,
    inference_noise: Option<f64>,
    denoiser: Option<DenoiserTemplate>,
}

enum MethodTemplate {
    Standard,
    Adversarial {
        attack: Attack,
        epsilon: EpsilonSetting,
        fraction: f64,
    },
    Mixed {
        linf: Attack,
        l2: Attack,
        epsilon_linf: EpsilonSetting,
        epsilon_l2: EpsilonSetting,
        strategy: MixStrategy,
        fraction: f64,
    },
}

struct DenoiserTemplate {
    blocks: u32,
    channels: u32,
    attack: Attack,
    epsilon: EpsilonSetting,
    epochs: u32,
    learning_rate: f64,
    pairs_per_epoch: u32,
}

impl ResolvedDefense {
    fn tied(&self) -> bool {
        let method_tied = match &self.method {
            MethodTemplate::Standard => false,
            MethodTemplate::Adversarial { epsilon, .. } => *epsilon == EpsilonSetting::Tied,
            MethodTemplate::Mixed {
                epsilon_linf,
                epsilon_l2,
                ..
            } => *epsilon_linf == EpsilonSetting::Tied || *epsilon_l2 == EpsilonSetting::Tied,
        };
        method_tied
            || self
                .denoiser
                .as_ref()
                .is_some_and(|d| d.epsilon == EpsilonSetting::Tied)
    }

    /// The concrete defense, with tied budgets set to `tied` (a grid ε).
    fn build(&self, tied: f64) -> Defense {
        let at = |e: EpsilonSetting| match e {
            EpsilonSetting::Fixed(v) => v,
            EpsilonSetting::Tied => tied,
        };
        let method = match &self.method {
            MethodTemplate::Standard => TrainingMethod::Standard,
            MethodTemplate::Adversarial {
                attack,
                epsilon,
                fraction,
            } => TrainingMethod::Adversarial {
                attack: attack.clone(),
                epsilon: at(*epsilon),
                fraction: *fraction,
            },
            MethodTemplate::Mixed {
                linf,
                l2,
                epsilon_linf,
                epsilon_l2,
                strategy,
                fraction,
            } => TrainingMethod::Mixed {
                linf: linf.clone(),
                l2: l2.clone(),
                epsilon_linf: at(*epsilon_linf),
                epsilon_l2: at(*epsilon_l2),
                strategy: *strategy,
                fraction: *fraction,
            },
        };
        Defense {
            method,
            inference_noise: self.inference_noise,
            denoiser: self.denoiser.as_ref().map(|d| DenoiserSpec {
                blocks: d.blocks,
                channels: d.channels,
                attack: d.attack.clone(),
                epsilon: at(d.epsilon),
                epochs: d.epochs,
                learning_rate: d.learning_rate,
                pairs_per_epoch: d.pairs_per_epoch,
            }),
        }
    }
}

fn resolve_defense(
    v: &Validator,
    file: &SweepFile,
    name: &str,
) -> Result<ResolvedDefense, SweepError> {
    let p = match file.defenses.get(name) {
        Some(p) => p.clone(),
        None => match presets::builtin_defense(name) {
            Some(p) => p,
            None => {
                return v.fail(unknown_preset(
                    "defense preset",
                    "grid.defenses",
                    name,
                    presets::BUILTIN_DEFENSES,
                    file.defenses.keys().map(String::as_str).collect(),
                ));
            }
        },
    };
    let at = format!("defense preset `{name}`");
    let not_for = |key: &str, present: bool| -> Result<(), SweepError> {
        v.check(!present, || {
            format!("{at}: key `{key}` does not apply to kind = \"{}\"", p.kind)
        })
    };
    let fraction = p.fraction.unwrap_or(1.0);
    v.check(fraction > 0.0 && fraction <= 1.0, || {
        format!("{at}: fraction = {fraction} must be in (0, 1]")
    })?;
    let check_eps = |key: &str, e: EpsilonSetting| -> Result<EpsilonSetting, SweepError> {
        if let EpsilonSetting::Fixed(x) = e {
            v.epsilon(&format!("{at}: {key}"), x)?;
        }
        Ok(e)
    };
    let training_attack =
        |key: &str, preset: &str, want: Option<Norm>| -> Result<Attack, SweepError> {
            let a = resolve_attack(v, file, preset, &format!("{at}: {key}"))?.for_training();
            v.check(!a.is_none(), || {
                format!("{at}: {key}: adversarial training needs an attack other than `none`")
            })?;
            if let Some(want) = want {
                v.check(a.norm() == Some(want), || {
                    format!(
                        "{at}: {key} = `{preset}` is not an {} attack",
                        want.as_str()
                    )
                })?;
            }
            Ok(a)
        };
    let method = match p.kind.as_str() {
        "standard" => {
            for (key, present) in [
                ("attack", p.attack.is_some()),
                ("epsilon", p.epsilon.is_some()),
                ("fraction", p.fraction.is_some()),
                ("linf", p.linf.is_some()),
                ("l2", p.l2.is_some()),
                ("epsilon_linf", p.epsilon_linf.is_some()),
                ("epsilon_l2", p.epsilon_l2.is_some()),
                ("strategy", p.strategy.is_some()),
            ] {
                not_for(key, present)?;
            }
            MethodTemplate::Standard
        }
        "adversarial" => {
            for (key, present) in [
                ("linf", p.linf.is_some()),
                ("l2", p.l2.is_some()),
                ("epsilon_linf", p.epsilon_linf.is_some()),
                ("epsilon_l2", p.epsilon_l2.is_some()),
                ("strategy", p.strategy.is_some()),
            ] {
                not_for(key, present)?;
            }
            let attack_name = p
                .attack
                .as_deref()
                .map(Ok)
                .unwrap_or_else(|| v.fail(format!("{at}: missing key `attack`")))?;
            let epsilon = p.epsilon.map(Ok).unwrap_or_else(|| {
                v.fail(format!(
                    "{at}: missing key `epsilon` (a number, \"8/255\" or \"tied\")"
                ))
            })?;
            MethodTemplate::Adversarial {
                attack: training_attack("attack", attack_name, None)?,
                epsilon: check_eps("epsilon", epsilon)?,
                fraction,
            }
        }
        "mixed" => {
            not_for("attack", p.attack.is_some())?;
            let both = p.epsilon;
            let pick =
                |key: &str, own: Option<EpsilonSetting>| -> Result<EpsilonSetting, SweepError> {
                    match (own, both) {
                        (Some(_), Some(_)) => {
                            v.fail(format!("{at}: set `epsilon` or `{key}`, not both"))
                        }
                        (Some(e), None) | (None, Some(e)) => check_eps(key, e),
                        (None, None) => v.fail(format!(
                            "{at}: missing key `epsilon` (or `epsilon_linf` and `epsilon_l2`)"
                        )),
                    }
                };
            let strategy = match p.strategy.as_deref().unwrap_or("both") {
                "both" => MixStrategy::BothPerBatch,
                "worst" => MixStrategy::WorstPerExample,
                other => {
                    return v.fail(format!(
                        "{at}: strategy = \"{other}\" is unknown (known: both, worst)"
                    ));
                }
            };
            MethodTemplate::Mixed {
                linf: training_attack(
                    "linf",
                    p.linf.as_deref().unwrap_or("pgd-linf"),
                    Some(Norm::Linf),
                )?,
                l2: training_attack("l2", p.l2.as_deref().unwrap_or("pgd-l2"), Some(Norm::L2))?,
                epsilon_linf: pick("epsilon_linf", p.epsilon_linf)?,
                epsilon_l2: pick("epsilon_l2", p.epsilon_l2)?,
                strategy,
                fraction,
            }
        }
        other => {
            return v.fail(format!(
                "{at}: kind = \"{other}\" is unknown (known: standard, adversarial, mixed)"
            ));
        }
    };
    if let Some(sigma) = p.inference_noise {
        v.check(sigma.is_finite() && sigma > 0.0, || {
            format!("{at}: inference_noise = {sigma} must be a positive σ (pixel units)")
        })?;
    }
    let denoiser = match &p.denoiser {
        None => None,
        Some(d) => {
            v.check((1..=MAX_DENOISER_BLOCKS).contains(&d.blocks), || {
                format!(
                    "{at}: denoiser.blocks = {} must be in 1..={MAX_DENOISER_BLOCKS}",
                    d.blocks
                )
            })?;
            v.check((1..=MAX_DENOISER_CHANNELS).contains(&d.channels), || {
                format!(
                    "{at}: denoiser.channels = {} must be in 1..={MAX_DENOISER_CHANNELS}",
                    d.channels
                )
            })?;
            v.check((1..=MAX_EPOCHS).contains(&d.epochs), || {
                format!(
                    "{at}: denoiser.epochs = {} must be in 1..={MAX_EPOCHS}",
                    d.epochs
                )
            })?;
            v.check(d.learning_rate.is_finite() && d.learning_rate > 0.0, || {
                format!(
                    "{at}: denoiser.learning_rate = {} must be positive",
                    d.learning_rate
                )
            })?;
            Some(DenoiserTemplate {
                blocks: d.blocks,
                channels: d.channels,
                attack: training_attack("denoiser.attack", &d.attack, None)?,
                epsilon: check_eps("denoiser.epsilon", d.epsilon)?,
                epochs: d.epochs,
                learning_rate: d.learning_rate,
                pairs_per_epoch: d.pairs_per_epoch,
            })
        }
    };
    Ok(ResolvedDefense {
        name: name.to_owned(),
        method,
        inference_noise: p.inference_noise,
        denoiser,
    })
}

fn training(v: &Validator, file: &SweepFile) -> Result<TrainingSpec, SweepError> {
    let t = &file.training;
    v.check((1..=MAX_EPOCHS).contains(&t.epochs), || {
        format!("training.epochs = {} must be in 1..={MAX_EPOCHS}", t.epochs)
    })?;
    v.check((1..=MAX_BATCH_SIZE).contains(&t.batch_size), || {
        format!(
            "training.batch_size = {} must be in 1..={MAX_BATCH_SIZE}",
            t.batch_size
        )
    })?;
    v.check(t.learning_rate.is_finite() && t.learning_rate > 0.0, || {
        format!(
            "training.learning_rate = {} must be positive",
            t.learning_rate
        )
    })?;
    v.check(t.weight_decay.is_finite() && t.weight_decay >= 0.0, || {
        format!(
            "training.weight_decay = {} must be non-negative",
            t.weight_decay
        )
    })?;
    let optimizer = match t.optimizer.as_str() {
        "sgd" => {
            v.check((0.0..1.0).contains(&t.momentum), || {
                format!("training.momentum = {} must be in [0, 1)", t.momentum)
            })?;
            v.check(!t.nesterov || t.momentum > 0.0, || {
                "training.nesterov needs a momentum greater than 0".into()
            })?;
            Optimizer::Sgd {
                momentum: t.momentum,
                weight_decay: t.weight_decay,
                nesterov: t.nesterov,
            }
        }
        "adam" => {
            for (key, beta) in [("beta1", t.beta1), ("beta2", t.beta2)] {
                v.check((0.0..1.0).contains(&beta), || {
                    format!("training.{key} = {beta} must be in [0, 1)")
                })?;
            }
            Optimizer::Adam {
                beta1: t.beta1,
                beta2: t.beta2,
                weight_decay: t.weight_decay,
            }
        }
        other => {
            return v.fail(format!(
                "training.optimizer: unknown optimizer `{other}` (known: sgd, adam)"
            ));
        }
    };
    let schedule = match t.schedule.as_str() {
        "constant" => LrSchedule::Constant,
        "step" => {
            v.check(t.step_every >= 1, || {
                "training.step_every must be at least 1".into()
            })?;
            v.check(t.step_gamma.is_finite() && t.step_gamma > 0.0, || {
                format!("training.step_gamma = {} must be positive", t.step_gamma)
            })?;
            LrSchedule::Step {
                every_epochs: t.step_every,
                gamma: t.step_gamma,
            }
        }
        "cosine" => LrSchedule::Cosine,
        "one-cycle" => LrSchedule::OneCycle,
        other => {
            return v.fail(format!(
                "training.schedule: unknown schedule `{other}` (known: constant, step, cosine, one-cycle)"
            ));
        }
    };
    v.check(t.checkpoint_every >= 1, || {
        "training.checkpoint_every must be at least 1".into()
    })?;
    let precision = match Precision::from_name(&t.precision) {
        Ok(precision) => precision,
        Err(e) => return v.fail(format!("training.precision: {e}")),
    };
    v.check(
        (1..=MAX_BATCH_SIZE).contains(&file.evaluation.batch_size),
        || {
            format!(
                "evaluation.batch_size = {} must be in 1..={MAX_BATCH_SIZE}",
                file.evaluation.batch_size
            )
        },
    )?;
    v.check(
        (1..=MAX_EOT_SAMPLES).contains(&file.evaluation.eot_samples),
        || format!("evaluation.eot_samples must be in 1..={MAX_EOT_SAMPLES}"),
    )?;
    Ok(TrainingSpec {
        epochs: t.epochs,
        batch_size: t.batch_size,
        learning_rate: t.learning_rate,
        optimizer,
        schedule,
        augment: t.augment,
        eval_batch_size: file.evaluation.batch_size,
        checkpoint_every: t.checkpoint_every,
        precision,
    })
}

fn data(v: &Validator, file: &SweepFile, overrides: &Overrides) -> Result<DataSpec, SweepError> {
    let path_of = |path: &String| -> Result<String, SweepError> {
        let path = overrides.data_path.clone().unwrap_or_else(|| path.clone());
        v.check(!path.trim().is_empty(), || "data.path is empty".into())?;
        wire::check_path(&path, "data.path").or_else(|e| v.fail(e.to_string()))?;
        Ok(path)
    };
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
            v.check(
                *train_size <= MAX_SYNTHETIC_IMAGES && *test_size <= MAX_SYNTHETIC_IMAGES,
                || format!("data: synthetic train_size and test_size must be at most {MAX_SYNTHETIC_IMAGES}"),
            )?;
            (
                DataSource::Synthetic {
                    seed: *seed,
                    train_size: *train_size,
                    test_size: *test_size,
                },
                *train_limit,
            )
        }
        DataSection::Cifar10 { path, train_limit } => (
            DataSource::Cifar10Binary {
                path: path_of(path)?,
            },
            *train_limit,
        ),
        DataSection::ImageFolder { path, train_limit } => (
            DataSource::ImageFolder {
                path: path_of(path)?,
            },
            *train_limit,
        ),
    };
    Ok(DataSpec {
        source,
        eval_limit: file.evaluation.limit,
        train_limit,
    })
}

/// Longest sweep, model, defense or attack name.
pub const MAX_NAME_LEN: usize = 64;

/// A name that is safe as a file name, a directory (`reports/<name>/`), a Markdown table cell
/// and a CSV field: 1-64 ASCII letters, digits, '-', '_' or '.', starting with a letter or digit
/// (so never `.`, `..` or a hidden file).
pub fn valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// How a name is shown in an error: quoted, escaped, at most 64 bytes of it.
fn shown(name: &str) -> String {
    let mut end = name.len().min(64);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    if end == name.len() {
        format!("{name:?}")
    } else {
        format!("{:?}… ({} bytes)", &name[..end], name.len())
    }
}

fn check_names(v: &Validator, axis: &str, names: &[String]) -> Result<(), SweepError> {
    for (i, name) in names.iter().enumerate() {
        v.check(valid_name(name), || {
            format!(
                "grid.{axis}[{i}] = {}: names use 1-{MAX_NAME_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit",
                shown(name)
            )
        })?;
    }
    Ok(())
}

/// Runs and cells the grid asks for, before duplicates are merged (so never fewer than the
/// plan will hold), in saturating arithmetic: a file listing 10⁴ models × 10⁴ ε is counted,
/// not built.
fn count_cells(
    models: usize,
    seeds: usize,
    epsilons: usize,
    defenses: &[ResolvedDefense],
    attacks: &[(String, AttackTemplate)],
) -> u64 {
    let n = |x: usize| u64::try_from(x).unwrap_or(u64::MAX);
    let clean = n(attacks.iter().filter(|(_, a)| a.attack.is_none()).count());
    let attacked = n(attacks.len()).saturating_sub(clean);
    defenses.iter().fold(0u64, |total, d| {
        let (runs_per_seed, cells_per_run) = if d.tied() {
            // One run per ε, each evaluated at its ε only.
            (n(epsilons), clean.saturating_add(attacked))
        } else {
            (
                1,
                clean.saturating_add(attacked.saturating_mul(n(epsilons))),
            )
        };
        total.saturating_add(
            n(models)
                .saturating_mul(n(seeds))
                .saturating_mul(runs_per_seed)
                .saturating_mul(cells_per_run),
        )
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
    v.check((1..=100).contains(&file.retry.max_attempts), || {
        format!(
            "retry.max_attempts = {} must be in 1..=100",
            file.retry.max_attempts
        )
    })?;
    v.check(valid_name(&file.name), || {
        format!(
            "name = {}: use 1-{MAX_NAME_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit",
            shown(&file.name)
        )
    })?;
    let grid = &file.grid;
    v.non_empty("models", &grid.models)?;
    v.non_empty("defenses", &grid.defenses)?;
    v.non_empty("attacks", &grid.attacks)?;
    v.non_empty("epsilons", &grid.epsilons)?;
    v.non_empty("seeds", &grid.seeds)?;
    check_names(&v, "models", &grid.models)?;
    check_names(&v, "defenses", &grid.defenses)?;
    check_names(&v, "attacks", &grid.attacks)?;
    v.unique_names("models", &grid.models)?;
    v.unique_names("defenses", &grid.defenses)?;
    v.unique_names("attacks", &grid.attacks)?;
    let mut epsilons = Vec::with_capacity(grid.epsilons.len());
    let mut seen_epsilons = HashSet::new();
    for (i, e) in grid.epsilons.iter().enumerate() {
        let e = v.epsilon(&format!("grid.epsilons[{i}]"), e.0)?;
        // -0.0 is 0.0 (one cell id for both).
        let e = if e == 0.0 { 0.0 } else { e };
        v.check(seen_epsilons.insert(e.to_bits()), || {
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
    let models = grid
        .models
        .iter()
        .map(|name| resolve_model(&v, file, name))
        .collect::<Result<Vec<_>, _>>()?;
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
    let cells = count_cells(
        models.len(),
        grid.seeds.len(),
        epsilons.len(),
        &defenses,
        &attacks,
    );
    v.check(cells <= limits.max_cells, || {
        format!(
            "sweep expands to {cells} cells, more than the coordinator's max_cells_per_sweep = {}",
            limits.max_cells
        )
    })?;
    let training = training(&v, file)?;
    let data = data(&v, file, overrides)?;
    let epsilon_space = match file.epsilon_space {
        EpsilonSpaceName::Pixel => EpsilonSpace::Pixel,
        EpsilonSpaceName::Normalized => EpsilonSpace::Normalized,
    };
    let auto_eot = file.evaluation.eot_samples;

    let mut run_seen: HashSet<String> = HashSet::new();
    let mut cell_seen: HashSet<String> = HashSet::new();
    let mut plan_runs = Vec::new();
    let mut plan_cells = Vec::new();
    for model in &models {
        for defense in &defenses {
            // (defense, the ε it is tied to, if any)
            let variants: Vec<(Defense, Option<f64>)> = if defense.tied() {
                epsilons
                    .iter()
                    .map(|e| (defense.build(*e), Some(*e)))
                    .collect()
            } else {
                vec![(defense.build(0.0), None)]
            };
            for seed in &grid.seeds {
                for (defense_spec, tied) in &variants {
                    let run = RunSpec {
                        id: String::new(),
                        model_name: model.name.clone(),
                        model: model.model.clone(),
                        defense_name: defense.name.clone(),
                        defense: defense_spec.clone(),
                        training: training.clone(),
                        data: data.clone(),
                        seed: *seed,
                        epsilon_space,
                    };
                    let run_id = ids::run_id(&run);
                    if !run_seen.insert(run_id.clone()) {
                        continue;
                    }
                    let randomized = run.randomized();
                    for (attack_name, template) in &attacks {
                        let attack = template.resolve(randomized, auto_eot);
                        let cell_epsilons: Vec<f64> = match (attack.is_none(), tied) {
                            (true, Some(e)) => vec![*e],
                            (true, None) => vec![0.0],
                            (false, Some(e)) => vec![*e],
                            (false, None) => epsilons.clone(),
                        };
                        for epsilon in cell_epsilons {
                            let id = ids::cell_id(&run_id, &attack, epsilon);
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
                    plan_runs.push(RunSpec { id: run_id, ..run });
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
        max_attempts: file.retry.max_attempts,
    })
}
