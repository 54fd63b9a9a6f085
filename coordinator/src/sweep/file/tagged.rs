//! `[data]` (tagged by `source`) and `[attacks.NAME]` (tagged by `kind`) as flat tables.
//!
//! Why not serde's internally tagged enums: serde buffers such a table before it knows the
//! variant, and the buffered values have lost their place in the file, so an error inside
//! (`train_size = 4294967296`) could only name the table (`data`), not the key, nor its line.
//! Reading every key of the table into one flat struct keeps each value's span; the tag then
//! picks the variant, and a key the variant does not take is an error naming it.

use serde::Deserialize;

use advsweep_core::catalogue::defaults;
use advsweep_core::{ApgdLoss, CascadeVersion, Norm};

use super::values::{CascadeSetting, EotSetting};
use super::{AttackPreset, DataSection};

/// `source` of `[data]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Source {
    Synthetic,
    Cifar10,
    Cifar100,
    ImageFolder,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Synthetic => "synthetic",
            Source::Cifar10 => "cifar10",
            Source::Cifar100 => "cifar100",
            Source::ImageFolder => "image_folder",
        }
    }
}

/// Every key `[data]` may hold, under any source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DataTable {
    source: Source,
    seed: Option<u64>,
    train_size: Option<u32>,
    test_size: Option<u32>,
    train_limit: Option<u32>,
    path: Option<String>,
}

/// `key` is set but `what` does not take it.
fn refuse_keys(what: &str, keys: &[(&str, bool)]) -> Result<(), String> {
    match keys.iter().find(|(_, set)| *set) {
        Some((key, _)) => Err(format!("key `{key}` does not apply to {what}")),
        None => Ok(()),
    }
}

impl TryFrom<DataTable> for DataSection {
    type Error = String;

    fn try_from(t: DataTable) -> Result<Self, String> {
        let what = format!("source = \"{}\"", t.source.name());
        let train_limit = t.train_limit.unwrap_or(0);
        match t.source {
            Source::Synthetic => {
                refuse_keys(&what, &[("path", t.path.is_some())])?;
                Ok(DataSection::Synthetic {
                    seed: t.seed.unwrap_or(0),
                    train_size: t.train_size.unwrap_or(defaults::SYNTHETIC_TRAIN_SIZE),
                    test_size: t.test_size.unwrap_or(defaults::SYNTHETIC_TEST_SIZE),
                    train_limit,
                })
            }
            Source::Cifar10 | Source::Cifar100 | Source::ImageFolder => {
                refuse_keys(
                    &what,
                    &[
                        ("seed", t.seed.is_some()),
                        ("train_size", t.train_size.is_some()),
                        ("test_size", t.test_size.is_some()),
                    ],
                )?;
                let path = t
                    .path
                    .ok_or_else(|| format!("missing field `path` (needed by {what})"))?;
                Ok(match t.source {
                    Source::Cifar10 => DataSection::Cifar10 { path, train_limit },
                    Source::Cifar100 => DataSection::Cifar100 { path, train_limit },
                    _ => DataSection::ImageFolder { path, train_limit },
                })
            }
        }
    }
}

/// `kind` of `[attacks.NAME]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    None,
    Fgsm,
    Pgd,
    Apgd,
    Fab,
    Square,
    Autoattack,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::Fgsm => "fgsm",
            Kind::Pgd => "pgd",
            Kind::Apgd => "apgd",
            Kind::Fab => "fab",
            Kind::Square => "square",
            Kind::Autoattack => "autoattack",
        }
    }
}

/// Every key `[attacks.NAME]` may hold, under any kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AttackTable {
    kind: Kind,
    norm: Option<Norm>,
    random_start: Option<bool>,
    step_fraction: Option<f64>,
    eot: Option<EotSetting>,
    steps: Option<u32>,
    step_size: Option<f64>,
    restarts: Option<u32>,
    loss: Option<String>,
    targets: Option<u32>,
    queries: Option<u32>,
    p_init: Option<f64>,
    version: Option<CascadeSetting>,
    stages: Option<Vec<String>>,
}

impl TryFrom<AttackTable> for AttackPreset {
    type Error = String;

    fn try_from(t: AttackTable) -> Result<Self, String> {
        let pgd_only = [
            ("steps", t.steps.is_some()),
            ("step_size", t.step_size.is_some()),
            ("restarts", t.restarts.is_some()),
        ];
        // Keys of the evaluation attacks (apgd, fab, square, autoattack) only.
        let evaluation_only = [
            ("loss", t.loss.is_some()),
            ("targets", t.targets.is_some()),
            ("queries", t.queries.is_some()),
            ("p_init", t.p_init.is_some()),
            ("version", t.version.is_some()),
            ("stages", t.stages.is_some()),
        ];
        let gradient_only = [
            ("random_start", t.random_start.is_some()),
            ("step_fraction", t.step_fraction.is_some()),
            ("step_size", t.step_size.is_some()),
        ];
        let norm = t.norm.unwrap_or(Norm::Linf);
        match t.kind {
            Kind::None | Kind::Fgsm | Kind::Pgd => {
                refuse_keys(&format!("kind = \"{}\"", t.kind.name()), &evaluation_only)?
            }
            Kind::Apgd | Kind::Fab | Kind::Square | Kind::Autoattack => {
                refuse_keys(&format!("kind = \"{}\"", t.kind.name()), &gradient_only)?
            }
        }
        match t.kind {
            Kind::Apgd => {
                refuse_keys(
                    "kind = \"apgd\"",
                    &[
                        ("queries", t.queries.is_some()),
                        ("p_init", t.p_init.is_some()),
                        ("version", t.version.is_some()),
                        ("stages", t.stages.is_some()),
                    ],
                )?;
                let targets = t.targets.unwrap_or(0);
                let loss = match t.loss.as_deref() {
                    None if targets > 0 => ApgdLoss::Dlr,
                    None | Some("ce") => ApgdLoss::Ce,
                    Some("dlr") => ApgdLoss::Dlr,
                    Some(other) => {
                        return Err(format!(
                            "loss = {}: unknown loss (known: ce, dlr)",
                            advsweep_core::validate::shown(other, 64)
                        ));
                    }
                };
                Ok(AttackPreset::Apgd {
                    norm,
                    loss,
                    targets,
                    steps: t.steps.unwrap_or(defaults::APGD_STEPS),
                    restarts: t.restarts.unwrap_or(1),
                    eot: t.eot.unwrap_or_default(),
                })
            }
            Kind::Fab => {
                refuse_keys(
                    "kind = \"fab\"",
                    &[
                        ("loss", t.loss.is_some()),
                        ("queries", t.queries.is_some()),
                        ("p_init", t.p_init.is_some()),
                        ("version", t.version.is_some()),
                        ("stages", t.stages.is_some()),
                    ],
                )?;
                Ok(AttackPreset::Fab {
                    norm,
                    targets: t.targets.unwrap_or(defaults::ATTACK_TARGETS),
                    steps: t.steps.unwrap_or(defaults::FAB_STEPS),
                    restarts: t.restarts.unwrap_or(1),
                    eot: t.eot.unwrap_or_default(),
                })
            }
            Kind::Square => {
                refuse_keys(
                    "kind = \"square\"",
                    &[
                        ("loss", t.loss.is_some()),
                        ("targets", t.targets.is_some()),
                        ("steps", t.steps.is_some()),
                        ("version", t.version.is_some()),
                        ("stages", t.stages.is_some()),
                        ("eot", t.eot.is_some()),
                    ],
                )?;
                Ok(AttackPreset::Square {
                    norm,
                    queries: t.queries.unwrap_or(defaults::SQUARE_QUERIES),
                    p_init: t.p_init.unwrap_or(defaults::SQUARE_P_INIT),
                    restarts: t.restarts.unwrap_or(1),
                })
            }
            Kind::Autoattack => {
                refuse_keys(
                    "kind = \"autoattack\"",
                    &[
                        ("loss", t.loss.is_some()),
                        ("targets", t.targets.is_some()),
                        ("steps", t.steps.is_some()),
                        ("restarts", t.restarts.is_some()),
                        ("queries", t.queries.is_some()),
                        ("p_init", t.p_init.is_some()),
                    ],
                )?;
                let version = match (t.version, t.stages) {
                    (Some(_), Some(_)) => {
                        return Err(
                            "set either version or stages, not both (stages is a custom version)"
                                .to_owned(),
                        );
                    }
                    (Some(version), None) => version,
                    (None, Some(stages)) => CascadeSetting::Stages(stages),
                    (None, None) => CascadeSetting::Version(CascadeVersion::Standard),
                };
                if let CascadeSetting::Stages(stages) = &version
                    && stages.is_empty()
                {
                    return Err("stages = []: a cascade needs at least one stage".to_owned());
                }
                Ok(AttackPreset::AutoAttack {
                    norm,
                    version,
                    eot: t.eot.unwrap_or_default(),
                })
            }

            Kind::None => {
                refuse_keys(
                    "kind = \"none\"",
                    &[
                        ("norm", t.norm.is_some()),
                        ("random_start", t.random_start.is_some()),
                        ("step_fraction", t.step_fraction.is_some()),
                        ("eot", t.eot.is_some()),
                    ],
                )?;
                refuse_keys("kind = \"none\"", &pgd_only)?;
                Ok(AttackPreset::None)
            }
            Kind::Fgsm => {
                refuse_keys("kind = \"fgsm\"", &pgd_only)?;
                Ok(AttackPreset::Fgsm {
                    norm: t.norm.unwrap_or(Norm::Linf),
                    random_start: t.random_start.unwrap_or(false),
                    step_fraction: t.step_fraction,
                    eot: t.eot.unwrap_or_default(),
                })
            }
            Kind::Pgd => Ok(AttackPreset::Pgd {
                norm: t.norm.unwrap_or(Norm::Linf),
                steps: t.steps.unwrap_or(defaults::PGD_STEPS),
                step_size: t.step_size,
                step_fraction: t.step_fraction,
                random_start: t.random_start.unwrap_or(true),
                restarts: t.restarts.unwrap_or(defaults::PGD_RESTARTS),
                eot: t.eot.unwrap_or_default(),
            }),
        }
    }
}
