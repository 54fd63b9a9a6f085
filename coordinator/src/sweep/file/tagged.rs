//! `[data]` (tagged by `source`) and `[attacks.NAME]` (tagged by `kind`) as flat tables.
//!
//! Why not serde's internally tagged enums: serde buffers such a table before it knows the
//! variant, and the buffered values have lost their place in the file, so an error inside
//! (`train_size = 4294967296`) could only name the table (`data`), not the key, nor its line.
//! Reading every key of the table into one flat struct keeps each value's span; the tag then
//! picks the variant, and a key the variant does not take is an error naming it.

use serde::Deserialize;

use advsweep_core::Norm;
use advsweep_core::catalogue::defaults;

use super::values::EotSetting;
use super::{AttackPreset, DataSection};

/// `source` of `[data]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Source {
    Synthetic,
    Cifar10,
    ImageFolder,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Synthetic => "synthetic",
            Source::Cifar10 => "cifar10",
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
            Source::Cifar10 | Source::ImageFolder => {
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
}

impl TryFrom<AttackTable> for AttackPreset {
    type Error = String;

    fn try_from(t: AttackTable) -> Result<Self, String> {
        let pgd_only = [
            ("steps", t.steps.is_some()),
            ("step_size", t.step_size.is_some()),
            ("restarts", t.restarts.is_some()),
        ];
        match t.kind {
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
