//! The sweep file as written by a user (TOML, `version = 1`), before presets are resolved.
//!
//! Every table denies unknown keys, so a typo (`epoch = 5`) is an error that names the key
//! instead of a silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// The only sweep-file version this build reads.
pub const SWEEP_FILE_VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    pub version: u32,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub data: DataSection,
    #[serde(default)]
    pub training: TrainingSection,
    #[serde(default)]
    pub evaluation: EvaluationSection,
    pub grid: GridSection,
    /// User attack presets; they may shadow built-in names.
    #[serde(default)]
    pub attacks: BTreeMap<String, AttackPreset>,
    /// User defense presets; they may shadow built-in names.
    #[serde(default)]
    pub defenses: BTreeMap<String, DefensePreset>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSection {
    Synthetic {
        #[serde(default)]
        seed: u64,
        #[serde(default = "default_synthetic_train")]
        train_size: u32,
        #[serde(default = "default_synthetic_test")]
        test_size: u32,
        #[serde(default)]
        train_limit: u32,
    },
    Cifar10 {
        /// Directory with the binary batches; `ADVSWEEP_CIFAR10_DIR` or `--data-path` override it.
        path: String,
        #[serde(default)]
        train_limit: u32,
    },
}

fn default_synthetic_train() -> u32 {
    4000
}
fn default_synthetic_test() -> u32 {
    1000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSection {
    #[serde(default = "default_epochs")]
    pub epochs: u32,
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    #[serde(default = "default_optimizer")]
    pub optimizer: String,
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    #[serde(default)]
    pub nesterov: bool,
    #[serde(default)]
    pub augment: bool,
}

impl Default for TrainingSection {
    fn default() -> Self {
        TrainingSection {
            epochs: default_epochs(),
            batch_size: default_batch_size(),
            optimizer: default_optimizer(),
            learning_rate: default_lr(),
            momentum: default_momentum(),
            weight_decay: default_weight_decay(),
            nesterov: false,
            augment: false,
        }
    }
}

fn default_epochs() -> u32 {
    5
}
fn default_batch_size() -> u32 {
    128
}
fn default_optimizer() -> String {
    "sgd".to_owned()
}
fn default_lr() -> f64 {
    0.01
}
fn default_momentum() -> f64 {
    0.9
}
fn default_weight_decay() -> f64 {
    5e-4
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationSection {
    /// Test images evaluated per cell (0 = the whole test set).
    #[serde(default = "default_eval_limit")]
    pub limit: u32,
    #[serde(default = "default_eval_batch_size")]
    pub batch_size: u32,
}

impl Default for EvaluationSection {
    fn default() -> Self {
        EvaluationSection {
            limit: default_eval_limit(),
            batch_size: default_eval_batch_size(),
        }
    }
}

fn default_eval_limit() -> u32 {
    1000
}
fn default_eval_batch_size() -> u32 {
    500
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridSection {
    pub models: Vec<String>,
    pub defenses: Vec<String>,
    pub attacks: Vec<String>,
    pub epsilons: Vec<Epsilon>,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AttackPreset {
    None,
    Fgsm {
        #[serde(default)]
        norm: NormName,
        #[serde(default)]
        random_start: bool,
        /// Multiple of ε per step; default 1.0 (1.25 is the usual value with a random start).
        #[serde(default)]
        step_fraction: Option<f64>,
    },
    Pgd {
        #[serde(default)]
        norm: NormName,
        #[serde(default = "default_pgd_steps")]
        steps: u32,
        /// Absolute step size; exclusive with `step_fraction`.
        #[serde(default)]
        step_size: Option<f64>,
        /// Step as a multiple of ε; default 2.5 / steps (Madry et al.).
        #[serde(default)]
        step_fraction: Option<f64>,
        #[serde(default = "default_true")]
        random_start: bool,
        #[serde(default = "default_restarts")]
        restarts: u32,
    },
}

fn default_pgd_steps() -> u32 {
    10
}
fn default_true() -> bool {
    true
}
fn default_restarts() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormName {
    #[default]
    Linf,
    L2,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DefensePreset {
    Standard,
    Adversarial {
        /// Name of an attack preset (built-in or from `[attacks]`).
        attack: String,
        /// A number, a fraction such as "8/255", or "tied" (one run per grid ε).
        epsilon: EpsilonSetting,
        /// Fraction of each batch replaced by adversarial examples.
        #[serde(default = "default_fraction")]
        fraction: f64,
    },
}

fn default_fraction() -> f64 {
    1.0
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
