//! The values of a sweep file that are more than a number or a string: closed lists of words
//! (`optimizer`, `schedule`, `precision`, a defense's `kind` and `strategy`), `eot = "auto" | N`
//! and ε written as a number, a fraction (`"8/255"`) or `"tied"`.

use advsweep_core::{CascadeVersion, MixStrategy, Precision};
use serde::{Deserialize, Deserializer};

/// A word from a closed list (`optimizer = "sgd"`): its value, or an error that names the key
/// and lists the words it knows (the parser adds the key's full path).
fn word<'de, D: Deserializer<'de>, T: Copy>(
    d: D,
    key: &str,
    words: &[(&str, T)],
) -> Result<T, D::Error> {
    let text = String::deserialize(d)?;
    words
        .iter()
        .find(|(word, _)| *word == text)
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let known: Vec<&str> = words.iter().map(|(word, _)| *word).collect();
            serde::de::Error::custom(format!(
                "{key} = {text:?} is unknown{} (known: {})",
                advsweep_core::suggest::hint(&text, known.iter().copied()),
                known.join(", ")
            ))
        })
}

/// `training.optimizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    Sgd,
    Adam,
}

impl<'de> Deserialize<'de> for OptimizerKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        word(
            d,
            "optimizer",
            &[("sgd", OptimizerKind::Sgd), ("adam", OptimizerKind::Adam)],
        )
    }
}

/// `training.schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleKind {
    Constant,
    Step,
    Cosine,
    OneCycle,
}

impl<'de> Deserialize<'de> for ScheduleKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        word(
            d,
            "schedule",
            &[
                ("constant", ScheduleKind::Constant),
                ("step", ScheduleKind::Step),
                ("cosine", ScheduleKind::Cosine),
                ("one-cycle", ScheduleKind::OneCycle),
            ],
        )
    }
}

/// `[defenses.NAME] kind`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DefenseKind {
    #[default]
    Standard,
    Adversarial,
    Mixed,
}

impl DefenseKind {
    pub fn name(self) -> &'static str {
        match self {
            DefenseKind::Standard => "standard",
            DefenseKind::Adversarial => "adversarial",
            DefenseKind::Mixed => "mixed",
        }
    }
}

impl<'de> Deserialize<'de> for DefenseKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let kinds = [
            DefenseKind::Standard,
            DefenseKind::Adversarial,
            DefenseKind::Mixed,
        ];
        word(d, "kind", &kinds.map(|k| (k.name(), k)))
    }
}

/// `strategy` of a mixed defense: `both` or `worst`.
pub(super) fn strategy<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MixStrategy>, D::Error> {
    word(
        d,
        "strategy",
        &[
            ("both", MixStrategy::BothPerBatch),
            ("worst", MixStrategy::WorstPerExample),
        ],
    )
    .map(Some)
}

/// `training.precision`: `fp32` or `bf16`.
pub(super) fn precision<'de, D: Deserializer<'de>>(d: D) -> Result<Precision, D::Error> {
    word(d, "precision", &Precision::ALL.map(|p| (p.name(), p)))
}

/// `eot = "auto"` (default: EOT only against randomized models) or a number of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EotSetting {
    #[default]
    Auto,
    Samples(u32),
}

impl<'de> Deserialize<'de> for EotSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = EotSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("eot = \"auto\" or a number of gradient samples (1 or more)")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<EotSetting, E> {
                u32::try_from(v)
                    .ok()
                    .filter(|n| *n >= 1)
                    .map(EotSetting::Samples)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<EotSetting, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EotSetting, E> {
                if v.trim() == "auto" {
                    Ok(EotSetting::Auto)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// An ε written as a number or as a fraction string like `"8/255"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Epsilon(pub f64);

/// The ε of an adversarial-training defense.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EpsilonSetting {
    Fixed(f64),
    /// Train at the ε each cell is attacked with: one run per grid ε.
    Tied,
}

fn parse_fraction(text: &str) -> Option<f64> {
    let text = text.trim();
    match text.split_once('/') {
        Some((num, den)) => {
            let num: f64 = num.trim().parse().ok()?;
            let den: f64 = den.trim().parse().ok()?;
            (den != 0.0).then_some(num / den)
        }
        None => text.parse().ok(),
    }
}

struct EpsilonVisitor {
    allow_tied: bool,
}

impl serde::de::Visitor<'_> for EpsilonVisitor {
    type Value = EpsilonSetting;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if self.allow_tied {
            f.write_str("a number, a fraction such as \"8/255\", or \"tied\"")
        } else {
            f.write_str("a number or a fraction such as \"8/255\"")
        }
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(EpsilonSetting::Fixed(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(EpsilonSetting::Fixed(v as f64))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(EpsilonSetting::Fixed(v as f64))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if self.allow_tied && v.trim() == "tied" {
            return Ok(EpsilonSetting::Tied);
        }
        parse_fraction(v)
            .map(EpsilonSetting::Fixed)
            .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
    }
}

impl<'de> Deserialize<'de> for EpsilonSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EpsilonVisitor { allow_tied: true })
    }
}

impl<'de> Deserialize<'de> for Epsilon {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(EpsilonVisitor { allow_tied: false })? {
            EpsilonSetting::Fixed(v) => Ok(Epsilon(v)),
            EpsilonSetting::Tied => unreachable_tied(),
        }
    }
}

/// The visitor above never yields `Tied` when `allow_tied` is false.
fn unreachable_tied<E>() -> Result<Epsilon, E> {
    Ok(Epsilon(f64::NAN))
}

#[cfg(test)]
mod tests {
    use super::parse_fraction;

    #[test]
    fn fractions_parse() {
        assert_eq!(parse_fraction("8/255"), Some(8.0 / 255.0));
        assert_eq!(parse_fraction(" 0.5 "), Some(0.5));
        assert_eq!(parse_fraction("1/0"), None);
        assert_eq!(parse_fraction("eight"), None);
    }
}

/// `version` of `[attacks.NAME] kind = "autoattack"`: a named version or a list of stages
/// (attack preset names).
#[derive(Debug, Clone, PartialEq)]
pub enum CascadeSetting {
    Version(CascadeVersion),
    Stages(Vec<String>),
}

impl<'de> Deserialize<'de> for CascadeSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CascadeSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "version = \"standard\", \"plus\", \"rand\" or a list of attack \
                     presets ([\"apgd-ce\", \"square\"])",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CascadeSetting, E> {
                cascade_version(v)
                    .map(CascadeSetting::Version)
                    .map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<CascadeSetting, A::Error> {
                let mut stages = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    stages.push(name);
                }
                Ok(CascadeSetting::Stages(stages))
            }
        }
        d.deserialize_any(V)
    }
}

/// A named AutoAttack version: `standard`, `plus` or `rand`.
pub fn cascade_version(name: &str) -> Result<CascadeVersion, String> {
    CascadeVersion::named(name).ok_or_else(|| {
        format!(
            "unknown version {} (known: {}, or a list of attack presets)",
            advsweep_core::validate::shown(name, 64),
            CascadeVersion::NAMED.map(CascadeVersion::as_str).join(", ")
        )
    })
}
